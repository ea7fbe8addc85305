"""Searching a sharded collection: every shard answers the batch, the caller merges the top-k.

:func:`open_sharded` validates the manifest, then opens every shard once and checks it against the
manifest: in this process (searched from a thread pool; the numba kernels release the GIL) or, with
a Dask client, on the workers, which keep their shards open between queries (see dask_backend).
Each shard runs the ordinary :meth:`vecstore.Store.search` with the same plan, two-stage included,
and :func:`vecstore.merge.merge_results` merges the per-shard (nq, k) results.

Exact and single-tier plans return what one store of the same documents returns (same ids, scores
to float32 rounding). A two-stage plan takes ``k * oversample`` candidates from *each* shard, a
superset of the single store's candidates, so its recall is at least the single store's.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import _format as fmt
from .._closing import ClosesOnExit
from ..errors import (
    ClosedStoreError,
    InvalidDtypeError,
    InvalidInputError,
    StoreNotFoundError,
    UnknownTierError,
    VecstoreError,
)
from ..merge import merge_results
from ..search import SearchResult, check_k, prepare_queries
from ..errors import ShardUnavailableError
from .manifest import ShardManifest, ShardSpec, check_rescores, check_shard, read_manifest, shard_specs

DEFAULT_OVERSAMPLE = 4.0
# Errors a shard raises because of what the caller asked (the same on every shard): raised as they are.
CALLER_ERRORS = (InvalidInputError, InvalidDtypeError, UnknownTierError)


class ShardedSearchResult(SearchResult):
    """A :class:`vecstore.SearchResult` (``D, I = result``) of a sharded collection.

    ``missing_shards`` names the shard files that did not answer; it is empty unless the search was
    made with ``allow_partial=True`` and some shards failed. Then the result holds the best k of the
    shards that answered, and may lack documents the missing shards would have given.
    """

    def __new__(cls, distances, ids, missing_shards=()):
        self = super().__new__(cls, distances, ids)
        self.missing_shards = tuple(missing_shards)
        return self

    @property
    def complete(self) -> bool:
        return not self.missing_shards


# -- one shard -------------------------------------------------------------------------------------


def _in_shard(exc: VecstoreError, spec: ShardSpec) -> VecstoreError:
    """``exc`` with the shard named in front of its message."""
    try:
        return type(exc)(f"{spec.where}: {exc}")
    except Exception:
        return exc


def open_shard(spec: ShardSpec, resident: tuple[str, ...] = ()):
    """Open one shard with ``vecstore.open`` and check it against its manifest entry."""
    import vecstore

    if not os.path.exists(spec.path):
        raise StoreNotFoundError(f"{spec.where}: the file is missing; restore it, or rebuild the collection "
                                 "with `vecstore shard-build`")
    try:
        store = vecstore.open(spec.path, resident=resident)
    except VecstoreError as exc:
        raise _in_shard(exc, spec) from exc
    try:
        check_shard(store, spec)
    except BaseException:
        store.close()
        raise
    return store


def search_store(store, xq: np.ndarray, k: int, plan: tuple) -> SearchResult:
    tier, rescore, oversample = plan
    result = store.search(xq, k, tier=tier, rescore=rescore, oversample=oversample)
    return SearchResult(result.distances, result.ids)


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


# -- in this process ---------------------------------------------------------------------------------


class LocalBackend:
    """Every shard opened in this process, searched from a thread pool."""

    def __init__(self, specs: list[ShardSpec], resident: tuple[str, ...], threads: int | None):
        import numba

        self.specs = specs
        self.stores: list = []
        try:
            for spec in specs:
                self.stores.append(open_shard(spec, resident))
        except BaseException:
            self.close()
            raise
        total = numba.get_num_threads() if threads is None else max(1, int(threads))
        workers = max(1, min(len(specs), total))
        self._pool = None
        if workers > 1:
            # numba's thread count is per calling thread: split the threads between the shards
            self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vecstore-shard",
                                            initializer=numba.set_num_threads,
                                            initargs=(max(1, total // workers),))

    def _map(self, indices: list[int], func, allow_partial: bool, what: str):
        if self._pool is None:
            outcomes = []
            for i in indices:
                try:
                    outcomes.append((i, func(self.stores[i]), None))
                except CALLER_ERRORS:
                    raise
                except (VecstoreError, OSError) as exc:
                    outcomes.append((i, None, exc))
        else:
            futures = [(i, self._pool.submit(func, self.stores[i])) for i in indices]
            outcomes = []
            for i, f in futures:
                exc = f.exception()
                if exc is not None and (isinstance(exc, CALLER_ERRORS) or not isinstance(exc, (VecstoreError, OSError))):
                    for _, other in futures:
                        other.cancel()
                    raise exc
                outcomes.append((i, None if exc else f.result(), exc))
        failed = {i: exc for i, _, exc in outcomes if exc is not None}
        if failed and (not allow_partial or len(failed) == len(indices)):
            raise shard_failure(failed, self.specs, what) from next(iter(failed.values()))
        return {i: r for i, r, exc in outcomes if exc is None}, failed

    def search(self, xq, k, plan, allow_partial):
        results, failed = self._map(list(range(len(self.specs))), lambda s: search_store(s, xq, k, plan),
                                    allow_partial, "searched")
        return [results[i] for i in sorted(results)], sorted(failed)

    def keys(self, index: int, ids: np.ndarray) -> list:
        return self.stores[index].keys(ids)

    def close(self) -> None:
        pool, self._pool = getattr(self, "_pool", None), None
        if pool is not None:
            pool.shutdown(wait=True)
        for store in self.stores:
            store.close()
        self.stores = []


# -- the public object -------------------------------------------------------------------------------


class ShardedStore(ClosesOnExit):
    """A sharded collection opened for search. Create one with :func:`vecstore.open_sharded`.

    Attributes
    ----------
    path : str              the manifest
    manifest : ShardManifest
    dim, count : int        count is the documents of all shards together
    metric : {"ip", "cosine", "l2"}
    tiers : dict[str, TierEntry]   the tiers every shard holds (codec string, digest, calibration)
    shards : list[ShardEntry]      file, count and id range of each shard
    backend : "local" or "dask"
    """

    def __init__(self, manifest: str | os.PathLike, *, client=None, resident=(), threads: int | None = None,
                 timeout: float = 10.0, query_timeout: float | None = None):
        self.manifest: ShardManifest = read_manifest(manifest)
        self.path = self.manifest.path
        self._specs = shard_specs(self.manifest)
        resident = (resident,) if isinstance(resident, str) else tuple(resident)
        for name in resident:
            if self.manifest.tier(name) is None:
                raise UnknownTierError(self._unknown_tier(name))
        self._backend = None
        if client is None:
            self.backend = "local"
            self._backend = LocalBackend(self._specs, resident, threads)
        else:
            from .dask_backend import DaskBackend

            self.backend = "dask"
            self._backend = DaskBackend(client, self._specs, resident, timeout=timeout, query_timeout=query_timeout)

    # -- description ------------------------------------------------------------------------------

    dim = property(lambda self: self.manifest.dim)
    metric = property(lambda self: self.manifest.metric)
    count = property(lambda self: self.manifest.count)
    shards = property(lambda self: list(self.manifest.shards))

    @property
    def tiers(self) -> dict:
        return {t.name: t for t in self.manifest.tiers}

    @property
    def params_digest(self) -> str:
        return self.manifest.params_digest

    def __repr__(self) -> str:
        state = "closed " if self._backend is None else ""
        return (f"<{state}vecstore.ShardedStore {self.path!r} shards={len(self._specs)} count={self.count} "
                f"dim={self.dim} metric={self.metric!r} tiers={list(self.tiers)} backend={self.backend!r}>")

    def info(self) -> dict:
        """A JSON-safe summary: counts, tiers, the default search, each shard's file and id range."""
        m = self.manifest
        return {
            "manifest": self.path, "count": m.count, "dim": m.dim, "metric": m.metric,
            "params_digest": m.params_digest, "backend": self.backend,
            "tiers": [{"name": t.name, "codec": t.codec, "digest": t.digest, "calibration": t.calibration}
                      for t in m.tiers],
            "default_search": list(self.default_plan()),
            "shards": [{"file": s.file, "count": s.count, "id_start": s.id_start, "id_stop": s.id_stop}
                       for s in m.shards],
        }

    # -- plans ------------------------------------------------------------------------------------

    def _unknown_tier(self, name) -> str:
        return (f"the sharded collection has no tier {name!r}; tiers: {', '.join(self.tiers)} "
                "(rebuild it with `vecstore shard-build --codec ...` to add one)")

    def _tier(self, name):
        entry = self.manifest.tier(name) if isinstance(name, str) else None
        if entry is None:
            raise UnknownTierError(self._unknown_tier(name))
        return entry

    def default_plan(self) -> tuple[str, str | None, float | None]:
        """(tier, rescore, oversample) used when search() is given no tier options: the manifest's
        calibrated default, else exact search on raw."""
        plan = self.manifest.default_search
        if plan is None:
            return fmt.RAW_TIER, None, None
        return plan["tier"], plan["rescore"], plan["oversample"]

    def resolve_plan(self, tier: str | None = None, rescore: str | None = None,
                     oversample: float | None = None) -> tuple[str, str | None, float | None]:
        """The explicit (tier, rescore, oversample) every shard is searched with; the same rules as
        :meth:`vecstore.Store.resolve_plan`, with the calibration taken from the manifest."""
        if oversample is not None and (isinstance(oversample, bool) or not isinstance(oversample, (int, float))
                                       or not np.isfinite(oversample) or oversample < 1):
            raise InvalidInputError(f"oversample must be a number >= 1, got {oversample!r}")
        if tier is None and rescore is None and oversample is None:
            return self.default_plan()
        coarse = self._tier(fmt.RAW_TIER if tier is None else tier)
        if rescore is None and oversample is not None:
            rescore = fmt.RAW_TIER
        if rescore is None:
            return coarse.name, None, None
        fine = self._tier(rescore)
        why = check_rescores(fine, coarse)
        if why:
            raise InvalidInputError(why)
        if oversample is None:
            cal = coarse.calibration
            oversample = float(cal["oversample"]) if cal and cal["rescore"] == fine.name else DEFAULT_OVERSAMPLE
        return coarse.name, fine.name, float(oversample)

    # -- search -----------------------------------------------------------------------------------

    def _check_open(self):
        if self._backend is None:
            raise ClosedStoreError(f"sharded collection {self.path!r} is closed: open it again with "
                                   "vecstore.open_sharded()")
        return self._backend

    def search(self, queries, k: int = 10, *, tier: str | None = None, rescore: str | None = None,
               oversample: float | None = None, allow_partial: bool = False) -> ShardedSearchResult:
        """The k nearest documents of the whole collection to each query.

        Parameters are those of :meth:`vecstore.Store.search`; the queries are validated here, once,
        before any shard sees them, and the plan is resolved once for all shards.

        allow_partial : bool
            When a shard cannot answer (its worker died more often than the cluster retries, its
            file vanished or was damaged), return the best k of the shards that answered and name
            the others in ``result.missing_shards``, instead of raising ShardUnavailableError.
            If no shard answers, ShardUnavailableError is raised anyway.

        Returns
        -------
        ShardedSearchResult
            ``(distances, ids)``, each (nq, k), best first, plus ``missing_shards``.
        """
        backend = self._check_open()
        plan = self.resolve_plan(tier, rescore, oversample)
        prepared = prepare_queries(queries, self.dim, self.metric)
        check_k(k, self.count)
        if self.metric == "cosine":
            # ship the queries as a single store would receive them: each shard normalises them
            # itself, bit for bit as a store of the same documents would
            send = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(prepared.shape))
        else:
            send = prepared
        parts, failed = backend.search(send, int(k), plan, bool(allow_partial))
        merged = merge_results(parts, int(k), self.metric)
        return ShardedSearchResult(merged.distances, merged.ids, tuple(self._specs[i].name for i in failed))

    def keys(self, ids) -> list:
        """The key of each id (None for id -1 or a document without a key); keeps the shape of
        ``ids``, e.g. a search result's (nq, k) ids. Each shard is asked once, for its own ids."""
        backend = self._check_open()
        arr = np.asarray(ids, dtype=np.int64)
        flat = arr.ravel()
        starts = np.array([s.id_start for s in self.manifest.shards], dtype=np.int64)
        stop = self.manifest.shards[-1].id_stop
        bad = (flat != -1) & ((flat < starts[0]) | (flat >= stop))
        if bad.any():
            raise InvalidInputError(f"id {int(flat[np.argmax(bad)])} is not in this collection "
                                    f"(ids {int(starts[0])} .. {stop - 1})")
        owner = np.searchsorted(starts, flat, side="right") - 1
        out: list = [None] * flat.shape[0]
        for index in np.unique(owner[flat >= 0]).tolist():
            where = np.flatnonzero((owner == index) & (flat >= 0))
            for i, key in zip(where.tolist(), backend.keys(index, flat[where])):
                out[i] = key
        return np.array(out, dtype=object).reshape(arr.shape).tolist() if arr.ndim > 1 else out

    # -- lifecycle --------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the shards (here, or on the workers) and a client this object created. Safe twice."""
        backend, self._backend = getattr(self, "_backend", None), None
        if backend is not None:
            backend.close()


def open_sharded(manifest: str | os.PathLike, client=None, *, resident=(), threads: int | None = None,
                 timeout: float = 10.0, query_timeout: float | None = None) -> ShardedStore:
    """Open a sharded collection for search.

    Parameters
    ----------
    manifest : the manifest.json that ``vecstore shard-build`` wrote, or its directory.
    client : None, a ``distributed.Client``, or a scheduler address ("tcp://host:8786").
        None: every shard is opened in this process and searched from a thread pool. Otherwise each
        shard is opened on one worker, which keeps it open between queries; shard files must be at
        the same path on every worker (shared storage).
    resident : tiers to hold in RAM in every shard (e.g. the coarse tier of a two-stage search).
    threads : without a client, the threads shared by the shard searches (default: numba's count).
    timeout : seconds to wait for a scheduler given by address (ClusterUnavailableError after).
    query_timeout : seconds a Dask search may take before its unfinished shards count as failed.

    The manifest is validated before any shard is opened, and every shard is checked against it
    (missing file, other dim/metric/count/id range, tiers with other parameters): FormatError or
    StoreNotFoundError naming the shard.
    """
    return ShardedStore(manifest, client=client, resident=resident, threads=threads, timeout=timeout,
                        query_timeout=query_timeout)
