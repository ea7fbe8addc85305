"""Building a sharded collection: train the codecs once, encode N shards with the same parameters.

This is FAISS's advice for corpora that outgrow one machine (train once, encode shards
independently, query every shard, merge the top-k) on vecstore files: every shard is an ordinary
store that ``vecstore.open`` opens alone, built with ``vecstore.build`` and ``vecstore.compress``
from its own rows of the input, read in chunks. With a Dask client the shards are built as tasks
(each worker re-opens the input path and reads only its rows); without one, one after another.

Calibration (how much a coarse tier must oversample for the two-stage search to reach its recall
target) is measured once, on shard 0, and recorded in the manifest, not in the shards: a shard's
two-stage search takes ``k * oversample`` candidates from its own documents, so a shard-sized store
is what the measurement must be made on, and one measurement keeps every shard's plan the same.
"""

from __future__ import annotations

import contextlib
import json
import glob
import os
import secrets
import shutil
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from ..codecs import codec_string, get_codec
from ..errors import InvalidInputError, VecstoreError
from ..format import schema as fmt
from ..filters import check_names, encode_fields
from ..ingest import VectorSource, open_vectors, prepare_rows, read_keys, read_metadata
from ..plan import default_plan
from ..progress import progress_enabled
from ..store.build import DEFAULT_TRAIN_SIZE
from ..store.quality import TARGET_RECALL
from .dask_backend import build_on_cluster
from .worker import build_one, calibrate_shard
from .manifest import (
    MANIFEST_NAME,
    MAX_SHARDS,
    ShardEntry,
    ShardManifest,
    read_manifest,
    tier_entry,
    write_manifest,
)

# As vecstore.compress: only tiers of at most this many code bytes (in shard 0) are calibrated.
SAMPLE_GAP_ROWS = 64


def training_sample(source: VectorSource, size: int, seed: int, metric: str) -> np.ndarray:
    """``size`` rows drawn uniformly with ``seed`` (all rows when ``size >= n``), as the shards will
    store them: finite, and unit-normalised for cosine. Nearby rows are read in one request; no
    request spans more than one chunk of the source."""
    n, dim = source.shape
    if size >= n:
        rows = np.arange(n)
    else:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    out = np.empty((rows.shape[0], dim), dtype=np.float32)
    span = source.chunk_rows()
    i = 0
    while i < rows.shape[0]:
        j = i + 1
        while (j < rows.shape[0] and rows[j] - rows[j - 1] <= SAMPLE_GAP_ROWS
               and rows[j] - rows[i] < span):
            j += 1
        lo, hi = int(rows[i]), int(rows[j - 1]) + 1
        block = prepare_rows(np.asarray(source.reader(lo, hi)), metric, lo, source.description)
        out[i:j] = block[rows[i:j] - lo]
        i = j
    return out


def _default_search(manifest: ShardManifest) -> dict | None:
    """The manifest's recorded default plan (vecstore.plan.default_plan over its tiers), None: exact."""
    plan = default_plan({t.name: t for t in manifest.tiers})
    return None if plan.rescore is None else plan._asdict()


def _codec_list(codecs, dim: int) -> list[tuple[str, object]]:
    if isinstance(codecs, str):
        codecs = [c for c in codecs.split(";") if c.strip()]
    out = []
    for c in codecs:
        pipeline = get_codec(c.strip() if isinstance(c, str) else c, dim)
        name = codec_string(pipeline)
        if name == fmt.RAW_TIER or name in {n for n, _ in out}:
            raise InvalidInputError(f"codec {name!r} is given twice (or names the raw tier): give each once")
        out.append((name, pipeline))
    return out


def remove_shard(path: str) -> None:
    """Delete a shard file and what vecstore's writers keep beside a store (the hidden ``.NAME.lock``
    that compress locks, a ``NAME.segments`` directory and its ``.NAME.segmented`` marker if anything
    was appended to it)."""
    directory, name = os.path.split(path)
    for victim in (path, os.path.join(directory, f".{name}.lock"), os.path.join(directory, f".{name}.segmented")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(victim)
    shutil.rmtree(path + ".segments", ignore_errors=True)


def _remove_build(outdir: str, token: str) -> None:
    for path in glob.glob(os.path.join(outdir, f"shard-*-{token}.vs")):
        remove_shard(path)


def _metadata_and_fields(metadata, fields, n: int):
    """Every document's metadata dict (or None), and the fields' {name: type} over all of them."""
    if metadata is None:
        if fields is not None:
            raise InvalidInputError("fields= takes each document's values from its metadata: give metadata= too")
        return None, None
    texts = read_metadata(metadata, n)
    dicts = [json.loads(t) if t else None for t in texts]
    if fields is None:
        return dicts, None
    names = check_names(list(fields) if isinstance(fields, dict) else fields)
    columns = encode_fields(names, dicts, np.arange(n, dtype=np.int64),
                            dict(fields) if isinstance(fields, dict) else None)
    return dicts, {name: col.kind for name, col in columns.items()}


def shard_build(vectors, outdir: str | os.PathLike, *, shards: int, codecs: Sequence[str] | str = (),
                metric: str | None = None, keys=None, train_size: int = DEFAULT_TRAIN_SIZE, seed: int = 0,
                calibrate: bool = True, target_recall: float = TARGET_RECALL, client=None,
                overwrite: bool = False, progress: bool | None = None, timeout: float = 10.0, metadata=None,
                fields=None) -> ShardManifest:
    """Build a sharded collection in ``outdir``: ``shards`` vecstore files and ``manifest.json``.

    Parameters
    ----------
    vectors : (n, dim) array, or a path (.npy, .fvecs, ``file.h5:/dataset``, ann-benchmarks .hdf5).
        With a Dask ``client`` it must be a path on storage the workers share: each worker re-opens
        it and reads only its shard's rows, in chunks.
    outdir : directory for the shards and the manifest (created if missing).
    shards : number of shards, 1 <= shards <= n. Shard i holds rows (= ids) ``bounds[i]:bounds[i+1]``
        with ``bounds = linspace(0, n, shards + 1)`` rounded down: sizes differ by at most one.
    codecs : codec strings (e.g. ``["pq64"]`` or ``"pca256,int8;pq64"``), each trained once on
        ``train_size`` rows sampled from the whole input with ``seed``, and added as a tier to
        every shard with the same learned arrays.
    metric : "ip", "cosine" or "l2" (default: the ann-benchmarks file's distance, else "ip").
    keys : n strings, a text file (one per line) or ``file.h5:/dataset``; each shard keeps its own.
    metadata, fields : as for :func:`vecstore.build`: each shard keeps its documents' metadata and
        filterable columns; the fields' types are inferred once over all documents.
    calibrate : measure each coarse tier's oversampling on shard 0 and record the smallest one
        that meets ``target_recall`` as the collection's default search (see docs/shards.md).
    client : a ``distributed.Client`` or a scheduler address: build the shards as Dask tasks.
    overwrite : replace a collection already in ``outdir`` (its old shard files are removed once
        the new manifest is published).
    timeout : seconds to wait for a scheduler given by address.

    Returns
    -------
    ShardManifest
        The written manifest; open the collection with ``vecstore.open_sharded(manifest.path)``.
    """
    source = open_vectors(vectors)
    n, dim = source.shape
    metric = metric or source.metric_hint or "ip"
    if metric not in fmt.METRICS:
        raise InvalidInputError(f"metric {metric!r} is not one of {', '.join(fmt.METRICS)}")
    if n == 0 or dim == 0:
        raise InvalidInputError(f"{source.description}: empty input (shape {source.shape}); nothing to store")
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or not 1 <= shards <= min(n, MAX_SHARDS):
        raise InvalidInputError(f"shards must be an integer from 1 to {min(n, MAX_SHARDS)} (the number of "
                                f"vectors, at most {MAX_SHARDS}), got {shards!r}")
    if isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1:
        raise InvalidInputError(f"train_size must be a positive integer, got {train_size!r}")
    if not (isinstance(target_recall, (int, float)) and 0 < target_recall <= 1):
        raise InvalidInputError(f"target_recall must be in (0, 1], got {target_recall!r}")
    if client is not None and not isinstance(vectors, (str, os.PathLike)):
        raise InvalidInputError("with a Dask client, give the input as a path (.npy, .fvecs, FILE.h5:/DATASET) "
                                "on storage the workers share, so that each worker reads only its rows; "
                                "in-memory arrays are built without a client, one shard after another")
    pipelines = _codec_list(codecs, dim)
    outdir = os.path.abspath(os.fspath(outdir))
    manifest_path = os.path.join(outdir, MANIFEST_NAME)
    old = None
    if os.path.exists(manifest_path):
        if not overwrite:
            raise InvalidInputError(f"{outdir!r} already holds a sharded collection: pass overwrite=True "
                                    "(CLI: --force) to replace it")
        with contextlib.suppress(VecstoreError):
            old = read_manifest(manifest_path)
    os.makedirs(outdir, exist_ok=True)
    all_keys = read_keys(keys, n) if keys is not None else None
    all_meta, field_types = _metadata_and_fields(metadata, fields, n)
    show = progress_enabled(progress)

    # train every codec once, on one sample of the whole input
    tiers = []
    if pipelines:
        with tqdm(total=len(pipelines), desc="train codecs", disable=not show) as bar:
            sample = training_sample(source, min(train_size, n), seed, metric)
            for name, pipeline in pipelines:
                pipeline.fit(sample, seed=seed, metric=metric)
                tiers.append((name, codec_string(pipeline), pipeline.params()))
                bar.update(1)
            del sample

    bounds = [int(b) for b in np.linspace(0, n, shards + 1).astype(np.int64)]
    token = secrets.token_hex(4)
    files = [f"shard-{i:05d}-{token}.vs" for i in range(shards)]
    jobs = [(bounds[i], bounds[i + 1], os.path.join(outdir, files[i]),
             all_keys[bounds[i]:bounds[i + 1]] if all_keys is not None else None,
             (all_meta[bounds[i]:bounds[i + 1]] if all_meta is not None else None, field_types))
            for i in range(shards)]
    names = [name for name, _ in pipelines]
    calibrations: dict = {}
    try:
        if client is None:
            for start, stop, path, shard_keys, (shard_meta, types) in tqdm(jobs, desc="build shards", unit="shard",
                                                                            disable=not show):
                build_one(source, start, stop, path, metric, shard_keys, tiers, metadata=shard_meta, fields=types)
            if calibrate and names:
                calibrations = calibrate_shard(jobs[0][2], names, seed, target_recall)
        else:

            calibrations = build_on_cluster(client, os.fspath(vectors), jobs, metric, tiers,
                                            names if calibrate else [], seed, target_recall, show, timeout)
        entries = [tier_entry(fmt.RAW_TIER, get_codec("float32", dim))]
        entries += [tier_entry(name, pipeline, calibrations.get(name)) for name, pipeline in pipelines]
        manifest = ShardManifest(manifest_path, dim, metric, entries,
                                 [ShardEntry(files[i], stop - start, start) for i, (start, stop, *_) in enumerate(jobs)],
                                 training={"input": source.description, "sample_rows": min(train_size, n),
                                           "seed": seed, "calibrated_on": files[0] if calibrations else None})
        manifest.default_search = _default_search(manifest)
        write_manifest(manifest)
    except BaseException:
        _remove_build(outdir, token)
        raise
    if old is not None:
        keep = set(files)
        for entry in old.shards:
            if entry.file not in keep:
                remove_shard(os.path.join(outdir, entry.file))
    return manifest
