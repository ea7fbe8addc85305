"""Building a store from vectors, and adding compressed tiers to one.

Both end in :func:`vecstore.format.writer.write_store`: a full new file renamed over the target, so a
failure (bad row, crash, Ctrl-C) leaves the target as it was, or absent.

The writer (and through it the compiled kernels and tqdm) is imported by the functions that write, not
with this module: vecstore.store imports this module, and opening a store to search it should not
import numba (a fresh process's `vecstore search`, issue 17).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np

from ..codecs import Pipeline, codec_string, get_codec
from ..codecs.ivf import IVF_TRAIN_PER_LIST
from ..errors import InvalidInputError, StoreNotFoundError
from ..format import schema as fmt
from ..format import segments as seg
from ..ingest import as_ids, open_vectors, prepared_chunks, read_keys, read_metadata
from ..progress import progress_enabled
from .file import StoreFile
from ..filters import check_names, encode_fields
from .filtering import build_fields, field_contents, metadata_dicts
from .lifecycle import compact_locked, replacing_main
from .provenance import model_record
from .quality import TARGET_RECALL
from .quality import calibrate_fastest
from .store import Store
from .tier import InvertedLists, Tier

if TYPE_CHECKING:
    from ..format.writer import StoreContents, TierPlan

DEFAULT_TRAIN_SIZE = 50_000
# Tiers up to this size are encoded in RAM and calibrated (the coarse tiers a default plan scans):
# a 10M-document tier of 64 B a document, the issue-19 budget, is 640 MB.
CALIBRATE_MAX_BYTES = 1 << 30


def _check_metric(metric: str) -> str:
    if metric not in fmt.METRICS:
        raise InvalidInputError(f"metric {metric!r} is not one of {', '.join(fmt.METRICS)}")
    return metric


def build(path: str | os.PathLike, vectors, *, metric: str | None = None, ids=None, keys=None,
          metadata=None, model: str | dict | None = None, model_params=None, encoders: dict | None = None,
          overwrite: bool = False, progress: bool | None = None, fields=None) -> Store:
    """Write a new store holding ``vectors`` as its raw float32 tier, and open it.

    Parameters
    ----------
    path : target file; written atomically (a failure leaves no file, or the old one).
    vectors : (n, dim) array, or a path (.npy, .fvecs, ``file.h5:/dataset``, ann-benchmarks .hdf5).
        Streamed in chunks; a .npy is never loaded whole.
    metric : "ip", "cosine" or "l2". Default: the ann-benchmarks file's distance, else "ip".
        Cosine stores unit-normalised vectors.
    ids : n unique integers (default 0..n-1).
    keys : n strings, a text file (one per line), or ``file.h5:/dataset`` of strings.
    metadata : n dicts (or None), or a JSON-lines file.
    model : ``"name@version"`` of the model that produced the vectors (recorded; queries and appends
        that declare another version are refused).
    model_params : the model's parameters (a mapping of arrays, or arrays) to fingerprint it by;
        without them, a single stored encoder is the fingerprint.
    encoders : name -> text encoder (vecstore.encoders) stored with the vectors, for search_text.
    overwrite : replace an existing file at ``path``.
    fields : names of metadata keys to make filterable (``search(..., where=...)``), or "a,b,c";
        stored as typed columns (int, float, bool, string, tags: a list of strings), the type
        inferred from the values (or given: ``{"year": "int", ...}``). Needs ``metadata``.
    """
    from ..format.writer import StoreContents, TierPlan, write_store  # (imported here: see the module docstring)
    path = os.fspath(path)
    source = open_vectors(vectors)
    metric = _check_metric(metric or source.metric_hint or "ip")
    n, dim = source.shape
    if n == 0 or dim == 0:
        raise InvalidInputError(f"{source.description}: empty input (shape {source.shape}); nothing to store")
    if os.path.exists(path) and not overwrite:
        raise InvalidInputError(f"{path!r} already exists: pass overwrite=True (CLI: --force) to replace it")
    for name, encoder in (encoders or {}).items():
        if not fmt.TIER_NAME.match(name):
            raise InvalidInputError(f"encoder name {name!r}: use letters, digits and _ . , : + - = only")
        if encoder.dim != dim:
            raise InvalidInputError(f"encoder {name!r} produces {encoder.dim}-dim vectors, the input has {dim}")
    only_encoder = next(iter(encoders.items())) if encoders and len(encoders) == 1 else (None, None)
    record = model_record(model, params=model_params, encoder_name=only_encoder[0], encoder=only_encoder[1])
    contents = StoreContents(dim=dim, count=n, metric=metric, ids=as_ids(ids, n),
                             keys=read_keys(keys, n) if keys is not None else None,
                             metadata=read_metadata(metadata, n), model=record, encoders=encoders)
    contents.fields = build_fields(fields, contents.metadata, contents.ids)
    raw = TierPlan(fmt.RAW_TIER, get_codec("float32", dim))
    # over an existing store, build is one of its writers (and removes what killed writes left)
    with seg.writer_lock(path) if os.path.isfile(path) else contextlib.nullcontext():
        write_store(path, contents, [raw], prepared_chunks(source, metric),
                    progress=progress_enabled(progress), description=f"build {os.path.basename(path)}",
                    before_rename=replacing_main(path, contents))
    return _warmed(Store(path))


def build_text(path: str | os.PathLike, texts, encoder, *, metric: str = "cosine", name: str = "text",
               model: str | None = None, overwrite: bool = False,
               progress: bool | None = None) -> tuple[Store, list[int]]:
    """Encode ``texts`` (titles, one document each) with ``encoder`` and build a store of them.

    The texts become the keys, their positions the ids, and the encoder is stored with the vectors
    so that :meth:`Store.search_text` works at once. Texts without any known word cannot be
    encoded: they are left out, and their positions are returned.
    """
    from tqdm import tqdm
    texts = list(texts)
    if not texts:
        raise InvalidInputError("no texts given: nothing to store")
    show = progress_enabled(progress)
    vectors = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    step = 4096
    with tqdm(total=len(texts), unit="text", desc="encode texts", disable=not show) as bar:
        for start in range(0, len(texts), step):
            vectors[start:start + step] = encoder.encode(texts[start:start + step], on_empty="zero").vectors
            bar.update(min(step, len(texts) - start))
    keep = np.flatnonzero(vectors.any(axis=1))
    if keep.shape[0] == 0:
        raise InvalidInputError("none of the texts contains a word the encoder knows")
    skipped = sorted(set(range(len(texts))) - set(keep.tolist()))
    store = build(path, vectors[keep], metric=metric, ids=keep, keys=[texts[i] for i in keep],
                  model=model, encoders={name: encoder}, overwrite=overwrite, progress=progress)
    return store, skipped


SAMPLE_BATCH = 4096


def sample_rows(store: StoreFile, size: int, seed: int) -> np.ndarray:
    """A uniform random sample of the raw tier (rows read in sorted order, as float32)."""
    raw = store.tier(fmt.RAW_TIER).codes
    if size >= store.count:
        sample = np.array(raw, dtype=np.float32)
        store.release(raw)
        return sample
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(store.count, size=size, replace=False))
    sample = np.empty((size, raw.shape[1]), dtype=np.float32)
    for i in range(0, size, SAMPLE_BATCH):  # the pages a batch mapped are released before the next
        batch = rows[i:i + SAMPLE_BATCH]
        sample[i:i + batch.shape[0]] = raw[batch]
        store.release(raw[batch[0]:batch[-1] + 1])
    return sample


def compress(path: str | os.PathLike, codec: str | dict | Pipeline, *, name: str | None = None,
             train_size: int = DEFAULT_TRAIN_SIZE, seed: int = 0, params: dict | None = None,
             replace: bool = False, calibrate: bool = True, target_recall: float = TARGET_RECALL,
             progress: bool | None = None) -> Store:
    """Add a tier encoded with ``codec`` to the store at ``path`` (rewritten atomically), and open it.

    The codec is trained on ``train_size`` vectors sampled from the raw tier with ``seed`` (with the
    default size, an ``ivf<nlist>`` codec takes at least IVF_TRAIN_PER_LIST x nlist), unless
    ``params`` (learned arrays, as exported) are given: then it encodes with those, untrained.
    A tier of at most 256 MiB of codes is also calibrated (see vecstore.store.quality): the oversampling
    that rescoring from the raw tier needs for recall@10 >= ``target_recall`` is recorded with it,
    and becomes the store's default search when it is the smallest such tier.
    """
    from tqdm import tqdm

    from ..format.writer import TierPlan, write_store  # (imported here: see the module docstring)
    if not (isinstance(target_recall, (int, float)) and 0 < target_recall <= 1):
        raise InvalidInputError(f"target_recall must be in (0, 1], got {target_recall!r}")
    path = os.fspath(path)
    show = progress_enabled(progress)
    with _rewriting(path, show) as store:
        pipeline = codec if isinstance(codec, Pipeline) else get_codec(codec, store.dim)
        if pipeline.dim != store.dim:
            raise InvalidInputError(f"codec input dimension {pipeline.dim} != store dimension {store.dim}")
        name = name or codec_string(pipeline)
        if not fmt.TIER_NAME.match(name):
            raise InvalidInputError(f"tier name {name!r}: use letters, digits and _ . , : + - = only")
        if name == fmt.RAW_TIER or (name in store.tiers and not replace):
            raise InvalidInputError(
                f"store already has a tier {name!r}: choose another --name"
                + ("" if name == fmt.RAW_TIER else " or pass replace=True (CLI: --replace)")
            )
        if params is not None:
            pipeline.set_params(params, where="given parameters")
        else:
            if isinstance(train_size, bool) or not isinstance(train_size, int) or train_size < 1:
                raise InvalidInputError(f"train_size must be a positive integer, got {train_size!r}")
            if pipeline.ivf is not None and train_size == DEFAULT_TRAIN_SIZE:
                train_size = max(train_size, IVF_TRAIN_PER_LIST * pipeline.ivf.nlist)
            with tqdm(total=1, desc=f"train {codec_string(pipeline)}", unit="step", disable=not show) as bar:
                pipeline.fit(sample_rows(store, train_size, seed), seed=seed, metric=store.metric,
                             progress=_advance(bar))
        plans = [kept(t) for t in store.tiers.values() if t.name != name]
        raw = store.tier(fmt.RAW_TIER).codes

        def source():  # a chunk's mapped pages leave the resident set once it is encoded
            step = max(1, (32 << 20) // (4 * store.dim))
            for start in range(0, store.count, step):
                yield start, np.asarray(raw[start:start + step], dtype=np.float32)
                store.release(raw[start:start + step])

        new = TierPlan(name, pipeline)
        if calibrate and store.count > 1 and pipeline.code_size * store.count <= CALIBRATE_MAX_BYTES:
            # a small tier (a coarse one): encode it in RAM, measure its default oversampling on the
            # store itself, then write it with that record
            tier = _encode_in_memory(store, name, pipeline, source, show)
            with tqdm(total=1, desc=f"calibrate {name}", unit="step", disable=not show) as bar:
                new.calibration = calibrate_fastest(tier, list(store.tiers.values()), store.tier(fmt.RAW_TIER),
                                                    seed=seed, target=target_recall, progress=_advance(bar),
                                                    release=store.release)
            new.copy_from = (tier.codes, tier.sqnorms)
            new.lists = None if tier.lists is None else (tier.lists.offsets, tier.lists.rows)
        plans.append(new)
        contents = _contents_of(store)
        write_store(path, contents, plans, source, progress=show, description=f"write {name}",
                    before_rename=replacing_main(path, contents), release=store.release)
    return _warmed(Store(path))


# A store larger than this is warmed with an exact scan of its first rows only: a scan of every row
# would read the whole raw tier (15 GB at 10M x 384) into the page cache and the resident set.
WARM_EXACT_ROWS = 100_000


def _warmed(store: Store) -> Store:
    """``store`` after one search with its default plan and with exact search: the kernels those
    compile are cached on disk, so the first search after an install (in a new process, the CLI's
    `vecstore search`) finds them compiled instead of spending seconds compiling (issue 17). Costs a
    query once compiled; the compilation, once per install and kernel."""
    try:
        raw = store.tier(fmt.RAW_TIER)
        query = np.asarray(raw.codes[:1], dtype=np.float32)
        if query.shape[0] and np.isfinite(query).all() and query.any():
            if store.count <= WARM_EXACT_ROWS:
                store.search(query, 10)
                store.search(query, 10, tier=fmt.RAW_TIER)
            else:  # the same kernels over a slice (Tier.scan: what search_plan calls for a large tier)
                if store.default_plan().rescore is not None:  # (an exact default would read every row)
                    store.search(query, 10)
                raw.row_slice(0, WARM_EXACT_ROWS).scan(query, 10)
    except BaseException:
        store.close()
        raise
    return store


def _advance(bar):
    """A ``progress(done, total)`` callback that moves a tqdm bar (codecs and calibration report
    steps through it and never see the bar)."""
    def advance(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
    return advance


@contextlib.contextmanager
def _rewriting(path: str, show: bool) -> Iterator[StoreFile]:
    """Hold the store's writer lock and yield its main file, after merging in its segments and
    deletions (if any) so that a rewrite of the main file cannot lose them."""
    if not os.path.isfile(path):
        raise StoreNotFoundError(f"{path!r} does not exist: check the path, or build a store there")
    with seg.writer_lock(path):
        compact_locked(os.path.abspath(path), progress=show)
        with StoreFile(path) as store:
            yield store


def _contents_of(store: StoreFile, **changes) -> StoreContents:
    """Everything of an open store except its tiers, to rewrite it with ``changes``."""
    from ..format.writer import StoreContents  # (imported here: see the module docstring)
    contents = StoreContents(store.dim, store.count, store.metric, np.asarray(store.ids),
                             keys=_all_strings(store.keys_column, store.count),
                             metadata=_all_strings(store.metadata_column, store.count), model=store.model,
                             encoders={name: store.encoder(name) for name in store.encoder_names},
                             fields=field_contents(store.field_columns()) or None)
    for key, value in changes.items():
        setattr(contents, key, value)
    return contents


def add_encoder(path: str | os.PathLike, encoder, *, name: str = "text", replace: bool = False) -> Store:
    """Store a text encoder (word vectors or an Elman RNN) in the store at ``path``, rewritten
    atomically; then :meth:`Store.search_text` can use it. Its output width must equal the store's dim."""
    from ..format.writer import write_store  # (imported here: see the module docstring)
    path = os.fspath(path)
    if not fmt.TIER_NAME.match(name):
        raise InvalidInputError(f"encoder name {name!r}: use letters, digits and _ . , : + - = only")
    with _rewriting(path, False) as store:
        if encoder.dim != store.dim:
            raise InvalidInputError(
                f"the encoder produces {encoder.dim}-dim vectors but the store holds {store.dim}-dim ones"
            )
        if name in store.encoder_names and not replace:
            raise InvalidInputError(f"store already has an encoder {name!r}: pass replace=True (CLI: --replace)")
        contents = _contents_of(store)
        contents.encoders = {**contents.encoders, name: encoder}
        plans = [kept(t) for t in store.tiers.values()]
        write_store(path, contents, plans, None, description=f"add encoder {name}",
                    before_rename=replacing_main(path, contents))
    return Store(path)


def kept(tier: Tier) -> TierPlan:
    """The plan that copies ``tier`` unchanged into a rewritten file."""
    from ..format.writer import TierPlan  # (imported here: see the module docstring)

    lists = None if tier.lists is None else (tier.lists.offsets, tier.lists.rows)
    return TierPlan(tier.name, tier.codec, (tier.codes, tier.sqnorms), tier.calibration, lists)


def _encode_in_memory(store: StoreFile, name: str, pipeline: Pipeline, source, show: bool) -> Tier:
    from tqdm import tqdm

    from ..format.writer import EncodedRows  # (imported here: see the module docstring)

    encoded = EncodedRows(pipeline, store.count, store.metric)
    with tqdm(total=store.count, unit="vec", desc=f"encode {name}", disable=not show) as bar:
        for start, rows in source():
            encoded.add(start, rows)
            bar.update(rows.shape[0])
    (codes, sqnorms), lists = encoded.arrays()
    inverted = None if lists is None else InvertedLists(*lists, f"/{fmt.TIERS}/{name}/{fmt.LISTS}")
    tier = Tier(name, pipeline, codes, sqnorms, store.metric, inverted)
    tier.resident = True
    return tier


def _all_strings(column, count: int) -> list[str] | None:
    return None if column is None else [column.get(i) for i in range(count)]


def add_fields(path, fields, *, replace: bool = False):
    """Make ``fields`` of every document's metadata filterable in the store at ``path`` (rewritten
    atomically, segments merged first), and open it. A field the store already has is an error
    unless ``replace``."""
    from ..format.writer import write_store  # (imported here: see the module docstring)
    path = os.fspath(path)
    names = check_names(fields)
    with _rewriting(path, False) as store:
        existing = store.field_types
        twice = [n for n in names if n in existing]
        if twice and not replace:
            raise InvalidInputError(f"the store already has field(s) {', '.join(twice)}: pass replace=True "
                                    "(CLI: --replace) to recompute them")
        if store.metadata_column is None:
            raise InvalidInputError("the store has no metadata to take field values from: build it with "
                                    "metadata= (CLI: --metadata FILE.jsonl) and fields=")
        dicts = metadata_dicts([store.metadata_column.get(i) for i in range(store.count)], store.count)
        contents = _contents_of(store)
        contents.fields = {**(contents.fields or {}),
                           **field_contents(encode_fields(names, dicts, np.asarray(store.ids)))}
        plans = [kept(t) for t in store.tiers.values()]
        write_store(path, contents, plans, None, description="add fields", before_rename=replacing_main(path, contents))
    return Store(path)
