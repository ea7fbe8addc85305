"""Searching a sharded collection: every shard answers the batch, the caller merges the top-k.

:func:`open_sharded` validates the manifest, then opens every shard once and checks it against the
manifest: in this process (searched from a thread pool; the numba kernels release the GIL) or, with
a Dask client, on the workers, which keep their shards open between queries (see dask_backend).
Each shard runs the ordinary :meth:`vecstore.Store.search` with the same plan, two-stage included,
and :func:`vecstore.query.merge_results` merges the per-shard (nq, k) results.

Exact and single-tier plans return what one store of the same documents returns (same ids, scores
to float32 rounding). A two-stage plan takes ``k * oversample`` candidates from *each* shard, a
superset of the single store's candidates, so its recall is at least the single store's.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ClosedStoreError, InvalidInputError, UnknownTierError, VecstoreError
from ..filters import parse
from ..ingest import int64_ids
from ..plan import EXACT, Plan, check_nprobe, resolve_plan
from ..query import ShardedSearchResult, check_k, merge_results, prepare_queries
from ..store.closing import ClosesOnExit
from .dask_backend import DaskBackend
from .manifest import ShardManifest, ShardSpec, read_manifest, shard_specs
from .worker import CALLER_ERRORS, open_shard, search_store, shard_failure
# -- in this process ---------------------------------------------------------------------------------


class LocalBackend:
    """Every shard opened in this process, searched from a thread pool."""

    def __init__(self, specs: list[ShardSpec], resident: tuple[str, ...], threads: int | None):
        import numba

        from .. import _runtime  # noqa: F401  (numba's threading layer, set before numba starts threads)

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

    def search(self, xq, k, plan, allow_partial, where=None, allows=None):
        stores = {id(s): i for i, s in enumerate(self.stores)}

        def one(store):
            allow = None if allows is None else allows[stores[id(store)]]
            return search_store(store, xq, k, plan, where, allow)

        results, failed = self._map(list(range(len(self.specs))), one, allow_partial, "searched")
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

    def default_plan(self) -> Plan:
        """(tier, rescore, oversample) used when search() is given no tier options: the manifest's
        calibrated default (vecstore.plan.default_plan at build time), else exact search on raw."""
        plan = self.manifest.default_search
        return EXACT if plan is None else Plan(plan["tier"], plan["rescore"], plan["oversample"])

    def resolve_plan(self, tier: str | None = None, rescore: str | None = None,
                     oversample: float | None = None) -> Plan:
        """The explicit (tier, rescore, oversample) every shard is searched with: the rules of
        vecstore.plan, with the tiers and calibrations of the manifest."""
        return resolve_plan(self._tier, self.default_plan(), tier, rescore, oversample)

    # -- search -----------------------------------------------------------------------------------

    def _check_open(self):
        if self._backend is None:
            raise ClosedStoreError(f"sharded collection {self.path!r} is closed: open it again with "
                                   "vecstore.open_sharded()")
        return self._backend

    def search(self, queries, k: int = 10, *, tier: str | None = None, rescore: str | None = None,
               oversample: float | None = None, allow_partial: bool = False, where: str | None = None,
               allow=None, nprobe: int | None = None) -> ShardedSearchResult:
        """The k nearest documents of the whole collection to each query.

        Parameters are those of :meth:`vecstore.Store.search`; the queries are validated here, once,
        before any shard sees them, and the plan is resolved once for all shards.

        allow_partial : bool
            When a shard cannot answer (its worker died more often than the cluster retries, its
            file vanished or was damaged), return the best k of the shards that answered and name
            the others in ``result.missing_shards``, instead of raising ShardUnavailableError.
            If no shard answers, ShardUnavailableError is raised anyway.
        where, allow : as for :meth:`vecstore.Store.search`. The filter's text goes to every shard
            (each evaluates it on its own columns, on its worker); ``allow`` ids go to the shard
            whose id range holds them (a boolean mask is over the collection's ids in order).
        nprobe : lists every shard's inverted-file tier probes (the centroids are shared); default:
            each shard's calibrated figure.

        Returns
        -------
        ShardedSearchResult
            ``(distances, ids)``, each (nq, k), best first, plus ``missing_shards``; with a filter
            also ``strategies`` (one per shard), ``strategy`` and ``allowed``.
        """
        backend = self._check_open()
        plan = self.resolve_plan(tier, rescore, oversample)
        plan = (*plan, self._checked_nprobe(nprobe, plan.tier))
        prepared = prepare_queries(queries, self.dim, self.metric)
        check_k(k, self.count)
        if self.metric == "cosine":
            # ship the queries as a single store would receive them: each shard normalises them
            # itself, bit for bit as a store of the same documents would
            send = np.ascontiguousarray(np.asarray(queries, dtype=np.float32).reshape(prepared.shape))
        else:
            send = prepared
        if where is not None:
            parse(where)  # a syntax error once, here; unknown fields and types are checked by the shards
        allows = None if allow is None else self._allow_per_shard(allow)
        if where is None and allows is None:
            parts, failed = backend.search(send, int(k), plan, bool(allow_partial))
        else:
            parts, failed = backend.search(send, int(k), plan, bool(allow_partial), where, allows)
        merged = merge_results(parts, int(k), self.metric)
        missing = tuple(self._specs[i].name for i in failed)
        if where is None and allows is None:
            return ShardedSearchResult(merged.distances, merged.ids, missing)
        # parts are the answering shards in order: each one's strategy in its shard's place
        answered = iter(parts)
        strategies = [None if i in failed else next(answered).strategy for i in range(len(self._specs))]
        allowed = sum(p.allowed for p in parts)
        return ShardedSearchResult(merged.distances, merged.ids, missing, strategies, allowed)

    def _checked_nprobe(self, nprobe, name: str) -> int | None:
        """``nprobe`` checked against the scanned tier's codec here, once, not by every shard."""
        entry = self.manifest.tier(name)
        first = entry.config["stages"][0]  # validated when the manifest was read
        return check_nprobe(nprobe, first["nlist"] if first["id"] == "ivf" else 0, name, entry.codec)

    def _allow_per_shard(self, allow) -> list[np.ndarray]:
        """allow= ids (or a boolean mask over the collection's ids) split by the shards' id ranges."""
        arr = np.asarray(allow)
        shards = self.manifest.shards
        if arr.dtype == bool:
            if arr.shape != (self.count,):
                raise InvalidInputError(f"allow= as a boolean mask needs one entry per document ({self.count}), "
                                        f"got shape {arr.shape}; or pass the allowed ids")
            ids = np.concatenate([np.arange(s.id_start, s.id_stop, dtype=np.int64) for s in shards])[arr]
        else:
            ids = np.unique(int64_ids(arr.reshape(-1), "allow= ids"))
        return [ids[(ids >= s.id_start) & (ids < s.id_stop)] for s in shards]

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
