"""What runs where a shard lives (a Dask worker, or this process): build one shard, calibrate it,
open it and check it against the manifest, search it. Shared by the local and the Dask backends
and by shard_build, so each exists once.
"""

from __future__ import annotations

import os

import numpy as np

from ..errors import (
    InvalidDtypeError,
    InvalidInputError,
    ShardUnavailableError,
    StoreNotFoundError,
    UnknownTierError,
    VecstoreError,
)
from ..ingest import VectorSource, open_vectors
from ..plan import RAW_TIER, rescore_refusal
from ..query import FilteredSearchResult, SearchResult
from ..store import build, compress
from ..store import open as open_store
from ..store.build import CALIBRATE_MAX_BYTES
from ..store.quality import calibrate
from .manifest import ShardSpec, check_shard

# Errors a shard raises because of what the caller asked (the same on every shard): raised as they are.
CALLER_ERRORS = (InvalidInputError, InvalidDtypeError, UnknownTierError)


# -- open and search -------------------------------------------------------------------------------------


def _in_shard(exc: VecstoreError, spec: ShardSpec) -> VecstoreError:
    """``exc`` with the shard named in front of its message."""
    try:
        return type(exc)(f"{spec.where}: {exc}")
    except Exception:
        return exc


def open_shard(spec: ShardSpec, resident: tuple[str, ...] = ()):
    """Open one shard as an ordinary store and check it against its manifest entry."""
    if not os.path.exists(spec.path):
        raise StoreNotFoundError(f"{spec.where}: the file is missing; restore it, or rebuild the collection "
                                 "with `vecstore shard-build`")
    try:
        store = open_store(spec.path, resident=resident)
    except VecstoreError as exc:
        raise _in_shard(exc, spec) from exc
    try:
        check_shard(store, spec)
    except BaseException:
        store.close()
        raise
    return store


def search_store(store, xq: np.ndarray, k: int, plan: tuple, where: str | None = None,
                 allow: np.ndarray | None = None) -> SearchResult:
    """One shard's top-k of validated queries under the collection's resolved plan (tier, rescore,
    oversample, nprobe), among the
    documents that satisfy ``where`` (the filter's text: each shard evaluates it on its own columns)
    and are in ``allow`` (ids): a FilteredSearchResult (its strategies and admitted count) then."""
    tier, rescore, oversample, nprobe = plan
    result = store.search(xq, k, tier=tier, rescore=rescore, oversample=oversample, where=where, allow=allow,
                          nprobe=nprobe)
    if where is None and allow is None:
        return SearchResult(result.distances, result.ids)
    return FilteredSearchResult(result.distances, result.ids, result.strategies, result.allowed)


def shard_failure(failed: dict[int, BaseException], specs: list[ShardSpec], what: str) -> ShardUnavailableError:
    """One error naming every shard that failed and why."""
    lines = []
    for i, exc in sorted(failed.items()):
        lines.append(f"{specs[i].where}: {type(exc).__name__}: {' '.join(str(exc).split())}")
    names = tuple(specs[i].name for i in sorted(failed))
    head = (f"{len(failed)} of {len(specs)} shards could not be {what}" if len(failed) > 1
            else f"a shard could not be {what}")
    err = ShardUnavailableError(f"{head}: " + "; ".join(lines) + ". Restore the shard file (or the worker) "
                                "and retry, or pass allow_partial=True to accept results without it", names)
    return err


# -- build ---------------------------------------------------------------------------------------------


def slice_source(source: VectorSource, start: int, stop: int) -> VectorSource:
    """Rows ``start:stop`` of ``source`` as a source of their own (row numbers in its messages
    count from ``start``, as the description ``input[start:stop]`` says)."""
    parent = source.reader

    def reader(a: int, b: int):
        return parent(start + a, start + b)

    return VectorSource(f"{source.description}[{start}:{stop}]", (stop - start, source.shape[1]),
                        source.dtype, reader, source.metric_hint)


def build_one(vectors, start: int, stop: int, path: str, metric: str, keys: list[str] | None,
              tiers: list[tuple[str, str, dict]], progress: bool = False, metadata: list | None = None,
              fields: dict | None = None) -> dict:
    """Build one shard: rows ``start:stop`` of ``vectors`` (a path, re-opened here, or a source)
    with ids ``start .. stop - 1``, then one tier per (name, codec string, learned arrays), encoded
    with those arrays (no training, no calibration). Runs in a Dask worker or in this process.
    ``metadata`` (the shard's dicts) and ``fields`` ({name: type}) make the shard filterable."""
    source = slice_source(open_vectors(vectors), start, stop)
    build(path, source, metric=metric, ids=np.arange(start, stop, dtype=np.int64), keys=keys,
          metadata=metadata, fields=fields, overwrite=True, progress=progress).close()
    for name, codec, params in tiers:
        compress(path, codec, name=name, params=params, calibrate=False, progress=progress).close()
    return {"file": os.path.basename(path), "count": stop - start, "bytes": os.path.getsize(path)}


def calibrate_shard(path: str, names: list[str], seed: int, target: float) -> dict:
    """The calibration record of each tier ``name`` measured on the shard at ``path`` (None for a
    tier too large to calibrate, or one that the raw tier cannot rescore)."""
    out: dict = {}
    with open_store(path) as store:
        raw = store.tier(RAW_TIER)
        for name in names:
            tier = store.tier(name)
            if rescore_refusal(raw, tier) or store.count < 2 or tier.codes.nbytes > CALIBRATE_MAX_BYTES:
                out[name] = None
                continue
            out[name] = calibrate(tier, raw, raw, seed=seed, target=target)
    return out
