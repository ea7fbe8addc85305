"""Shards on a Dask cluster: each worker opens its shards once and keeps them open between queries.

Shard i is placed on one worker (round-robin, rebalanced when workers come and go), and every task
that touches it is submitted to that worker with a *loose* restriction: if the worker dies, the
scheduler runs the task on another one (Dask retries a task whose worker died up to
``distributed.scheduler.allowed-failures`` times, then raises KilledWorker), which opens the shard
from the shared storage and keeps it in its own cache. A task that fails with an error (a file it
cannot open, a damaged shard) is retried once on another worker. What still fails is reported by
name (ShardUnavailableError), or listed in ``missing_shards`` when the caller allowed partial results.

The open shards live in a per-process cache keyed by the shard's spec (path, count, id range,
parameter digests), so a rebuilt collection never reuses a stale file. One query batch goes to the
workers once: inline in the task when small, scattered once when large; results are (nq, k).

This module imports ``distributed`` only when a client is used.
"""

from __future__ import annotations

import collections
import os
import threading
import uuid

import numpy as np

from ..errors import ClusterUnavailableError, ShardUnavailableError, VecstoreError
from .manifest import ShardSpec
from .worker import CALLER_ERRORS, build_one, calibrate_shard, open_shard, search_store, shard_failure

# Seconds between two looks at the cluster's workers (see DaskBackend._place).
PLACEMENT_REFRESH_S = 2.0
# Query batches up to this size travel inside the tasks; larger ones are scattered once.
INLINE_QUERY_BYTES = 1 << 20

# -- worker side: the per-process cache of open shards ------------------------------------------

_CACHE: dict[tuple, object] = {}
_CACHE_LOCK = threading.Lock()
_OPENS: collections.Counter = collections.Counter()


def _cached_store(spec: ShardSpec, resident: tuple[str, ...]):
    """The open, checked store of ``spec`` in this process (opened on first use, then kept)."""
    key = (spec, resident)
    with _CACHE_LOCK:
        store = _CACHE.get(key)
        if store is None:
            store = open_shard(spec, resident)
            _CACHE[key] = store
            _OPENS[spec.path] += 1
        return store


def open_task(spec: ShardSpec, resident: tuple[str, ...]) -> int:
    """Open (and check) a shard on this worker; returns its document count."""
    return _cached_store(spec, resident).count


def search_task(spec: ShardSpec, resident: tuple[str, ...], xq: np.ndarray, k: int, plan: tuple,
                where: str | None = None, allow: np.ndarray | None = None):
    return search_store(_cached_store(spec, resident), xq, k, plan, where, allow)


def keys_task(spec: ShardSpec, resident: tuple[str, ...], ids: np.ndarray) -> list:
    return _cached_store(spec, resident).keys(ids)


def release(paths: list[str]) -> int:
    """Close this process's open shards at ``paths``; returns how many were closed."""
    wanted = set(paths)
    with _CACHE_LOCK:
        gone = [key for key in _CACHE if key[0].path in wanted]
        for key in gone:
            _CACHE.pop(key).close()
    return len(gone)


def cache_info() -> dict[str, int]:
    """Path -> how many times this process opened that shard (tests and diagnostics)."""
    with _CACHE_LOCK:
        return dict(_OPENS)


# -- client side ------------------------------------------------------------------------------------


def _probe(address: str, timeout: float) -> None:
    """Open one connection to the scheduler and complete Dask's handshake within ``timeout``.

    ``distributed.Client(address, timeout=...)`` bounds the TCP connect only: a peer that accepts
    the connection but never speaks (a wrong port, a hung scheduler) makes it wait for ever for the
    handshake. This probe bounds the whole exchange, on its own event loop in its own thread (the
    caller may be inside a running loop, e.g. in Jupyter).
    """
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from distributed.comm import connect

    async def probe():
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout)
        await comm.close()

    with ThreadPoolExecutor(1, thread_name_prefix="vecstore-probe") as pool:
        pool.submit(asyncio.run, probe()).result()


def require_distributed() -> None:
    """Dask is an extra (``pip install 'vecstore[dask]'``): say so, instead of an ImportError."""
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise ClusterUnavailableError(
            f"a Dask cluster was requested but Dask is not installed ({exc}): pip install 'vecstore[dask]' "
            "(or search the shards in this process: no client/--scheduler)"
        ) from None


def get_client(client, timeout: float):
    """(client, owned): a given Client as is, or a new one connected to an address within ``timeout``."""
    require_distributed()
    if not isinstance(client, (str, os.PathLike)):
        return client, False
    from distributed import Client

    address = os.fspath(client)
    try:
        _probe(address, timeout)
        return Client(address, timeout=timeout, set_as_default=False), True
    except (OSError, TimeoutError) as exc:
        raise ClusterUnavailableError(
            f"the Dask scheduler at {address!r} did not answer within {timeout:g} s "
            f"({type(exc).__name__}: {' '.join(str(exc).split()) or 'no handshake'}); check the address "
            "(tcp://HOST:PORT) and that the scheduler is running"
        ) from None
    except ValueError as exc:  # an address distributed cannot parse
        raise ClusterUnavailableError(f"{address!r} is not a Dask scheduler address ({exc}); give "
                                      "tcp://HOST:PORT") from None


def _killed(exc: BaseException) -> bool:
    return type(exc).__name__ == "KilledWorker"


def _describe(exc: BaseException) -> BaseException:
    if _killed(exc):
        return ShardUnavailableError(f"every worker that ran it died ({exc})")
    return exc


class DaskBackend:
    """Shards opened on the workers of a ``distributed`` cluster."""

    def __init__(self, client, specs: list[ShardSpec], resident: tuple[str, ...], *, timeout: float,
                 query_timeout: float | None):
        self.specs = specs
        self.resident = resident
        self.query_timeout = query_timeout
        self.client, self._owned = get_client(client, timeout)
        self.placement: dict[int, str] = {}
        self._placed_at = -float("inf")
        try:
            self._map(list(range(len(specs))), open_task, lambda spec: (spec, resident), allow_partial=False,
                      what="opened", raise_first=True)
        except BaseException:
            self.close()
            raise

    def _workers(self) -> list[str]:
        workers = sorted(self.client.nthreads())
        if not workers:
            raise ClusterUnavailableError(f"the Dask cluster at {self.client.scheduler.address} has no workers: "
                                          "start some (dask worker ADDRESS) and retry")
        return workers

    def _place(self) -> dict[int, str]:
        """Keep each shard on its worker while it lives; give orphans (and shards of an overloaded
        worker, when one has two more than another) to the least loaded live workers.

        Asking the scheduler for its workers is a round trip, so it is done at most every
        PLACEMENT_REFRESH_S seconds, and after a failure; in between, a shard whose worker died is
        still run (the restriction is loose) and moved at the next refresh."""
        import time

        if self.placement and time.monotonic() - self._placed_at < PLACEMENT_REFRESH_S:
            return dict(self.placement)
        live = self._workers()
        self._placed_at = time.monotonic()
        load = {w: 0 for w in live}
        orphans = []
        for i in range(len(self.specs)):
            w = self.placement.get(i)
            if w in load:
                load[w] += 1
            else:
                orphans.append(i)
        for i in orphans:
            w = min(live, key=lambda a: (load[a], live.index(a)))
            self.placement[i] = w
            load[w] += 1
        while max(load.values()) - min(load.values()) > 1:
            busy = max(live, key=lambda a: (load[a], -live.index(a)))
            idle = min(live, key=lambda a: (load[a], live.index(a)))
            i = max(i for i, w in self.placement.items() if w == busy)
            self.placement[i] = idle
            load[busy] -= 1
            load[idle] += 1
        return dict(self.placement)

    def _submit(self, func, args, index: int, worker: str):
        return self.client.submit(func, *args, key=f"vecstore-{func.__name__}-{index}-{uuid.uuid4().hex}",
                                  workers=[worker], allow_other_workers=True, pure=False)

    def _gather(self, futures: dict):
        """{index: result}, {index: exception} of the futures, waiting up to query_timeout in all.
        One wait and one gather for the whole batch: a round trip, not one per shard."""
        from distributed import wait

        with self.client.as_current():
            try:
                wait(list(futures.values()), timeout=self.query_timeout)
            except TimeoutError:
                pass
        results, failed = {}, {}
        done = [i for i, f in futures.items() if f.status == "finished"]
        try:
            results = dict(zip(done, self.client.gather([futures[i] for i in done])))
        except Exception:  # a result lost after it finished: look at each one
            for i in done:
                try:
                    results[i] = futures[i].result(timeout=self.query_timeout)
                except Exception as exc:
                    failed[i] = exc
        for i, f in futures.items():
            if i in results or i in failed:
                continue
            if f.status == "error":
                failed[i] = f.exception()
            else:
                failed[i] = ShardUnavailableError(
                    f"no answer within {self.query_timeout} s (task {f.status})" if self.query_timeout
                    else f"task {f.status}")
        pending = [f for f in futures.values() if f.status not in ("finished", "error")]
        if pending:
            self.client.cancel(pending)
        return results, failed

    def _map(self, indices: list[int], func, args_of, *, allow_partial: bool, what: str,
             raise_first: bool = False):
        placement = self._place()
        futures = {i: self._submit(func, args_of(self.specs[i]), i, placement[i]) for i in indices}
        results, failed = self._gather(futures)
        for exc in failed.values():
            if isinstance(exc, CALLER_ERRORS) or (raise_first and isinstance(exc, VecstoreError)
                                                  and not isinstance(exc, ShardUnavailableError)):
                raise exc
        if failed:
            self._placed_at = -float("inf")  # look at the workers again before the next batch
        retry = [i for i, exc in failed.items() if not _killed(exc)]
        if retry:  # once more, on another worker than the one the shard is placed on
            live = self._workers()
            others = {i: [w for w in live if w != placement[i]] for i in retry}
            again = {i: self._submit(func, args_of(self.specs[i]), i, others[i][0]) for i in retry if others[i]}
            more, still = self._gather(again)
            for i, result in more.items():
                results[i] = result
                failed.pop(i)
                self.placement[i] = others[i][0]
            failed.update(still)
        if raise_first:
            for exc in failed.values():
                if isinstance(exc, VecstoreError) and not isinstance(exc, ShardUnavailableError):
                    raise exc
        failed = {i: _describe(exc) for i, exc in failed.items()}
        if failed and (not allow_partial or len(failed) == len(indices)):
            raise shard_failure(failed, self.specs, what) from next(iter(failed.values()))
        return results, failed

    def search(self, xq: np.ndarray, k: int, plan: tuple, allow_partial: bool, where: str | None = None,
               allows: list | None = None):
        queries = xq
        scattered = None
        if xq.nbytes > INLINE_QUERY_BYTES:
            [scattered] = self.client.scatter([xq], broadcast=True, hash=False)
            queries = scattered
        try:
            results, failed = self._map(list(range(len(self.specs))), search_task,
                                        lambda spec: (spec, self.resident, queries, k, plan, where,
                                                      None if allows is None else allows[self.specs.index(spec)]),
                                        allow_partial=allow_partial, what="searched")
        finally:
            if scattered is not None:
                scattered.release()
        return [results[i] for i in sorted(results)], sorted(failed)

    def keys(self, index: int, ids: np.ndarray) -> list:
        results, _ = self._map([index], keys_task, lambda spec: (spec, self.resident, ids),
                               allow_partial=False, what="read")
        return results[index]

    def close(self) -> None:
        client, self.client = getattr(self, "client", None), None
        if client is None:
            return
        try:
            if client.status == "running":
                client.run(release, [spec.path for spec in self.specs])
        except Exception:  # a cluster that is gone has nothing left to close
            pass
        if self._owned:
            client.close()


# -- building ---------------------------------------------------------------------------------------


def build_on_cluster(client, input_path: str, jobs: list, metric: str, tiers: list, names: list[str],
                     seed: int, target: float, show: bool, timeout: float) -> dict:
    """Build each job (start, stop, path, keys) as a Dask task, then calibrate shard 0 as one more.
    The learned parameters are scattered to the workers once."""
    from tqdm import tqdm

    client, owned = get_client(client, timeout)
    from distributed import as_completed
    futures = []
    try:
        [shared] = client.scatter([tiers], broadcast=True, hash=False)
        futures = [client.submit(build_one, input_path, start, stop, path, metric, keys, shared, False, meta, types,
                                 key=f"vecstore-build-{os.path.basename(path)}", pure=False)
                   for start, stop, path, keys, (meta, types) in jobs]
        with tqdm(total=len(futures), desc="build shards", unit="shard", disable=not show) as bar:
            for future in as_completed(futures, loop=client.loop):
                try:
                    future.result()
                except Exception as exc:
                    if _killed(exc):
                        raise ShardUnavailableError(f"building a shard: every worker that ran it died ({exc})") from exc
                    raise
                bar.update(1)
        if not names:
            return {}
        return client.submit(calibrate_shard, jobs[0][2], names, seed, target, pure=False,
                             key=f"vecstore-calibrate-{uuid.uuid4().hex}").result()
    finally:
        pending = [f for f in futures if f.status not in ("finished", "error")]
        if pending:
            client.cancel(pending)
        if owned:
            client.close()
