"""Sharded collections on a real Dask cluster: LocalCluster(n_workers=2, processes=True) started here.

Equality with one store for every metric and for coarse and two-stage plans, shards opened once per
worker, a worker killed in the middle of a batch, lost shards, an unreachable scheduler, the CLI.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from click.testing import CliRunner

import vecstore
from test_shards_helpers import (
    K,
    N,
    assert_same_results,
    build_collection,
    make_data,
    recall,
    shard_files,
    single_like,
)
from vecstore.errors import FormatError, InvalidInputError, StoreNotFoundError
from vecstore.shards import (
    ClusterUnavailableError,
    ShardUnavailableError,
    open_sharded,
    shard_build,
)
from vecstore.shards import dask_backend

import distributed  # noqa: E402  (a dependency of vecstore; never skipped)

METRICS = ["ip", "cosine", "l2"]


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes of one thread each; no dashboard (its port may be taken on a shared host)."""
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=":0") as lc, distributed.Client(lc, set_as_default=False) as client:
        yield lc, client


@pytest.fixture(scope="module")
def client(cluster):
    return cluster[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    x, q = make_data(seed=11)
    path = tmp_path_factory.mktemp("input") / "x.npy"
    np.save(path, x)
    return x, q, str(path)


@pytest.fixture(scope="module")
def built(tmp_path_factory, data, client):
    """Per metric: (manifest built by the cluster from the .npy, one store of the same documents)."""
    x, _, path = data
    out = {}
    for metric in METRICS:
        root = tmp_path_factory.mktemp(f"dask-{metric}")
        manifest = build_collection(path, str(root / "col"), metric=metric, client=client)
        out[metric] = (manifest, single_like(manifest, x, str(root / "single.vs")))
    yield out
    for _, single in out.values():
        single.close()


def test_cluster_build_equals_a_local_build(built, data, tmp_path):
    x, _, path = data
    manifest, _ = built["ip"]
    local = build_collection(x, str(tmp_path / "local"), metric="ip")
    assert manifest.params_digest == local.params_digest
    assert [(s.count, s.id_start) for s in manifest.shards] == [(s.count, s.id_start) for s in local.shards]
    # the default plan weighs measured latencies, which two builds on a busy machine may time the
    # other way round: the recall each plan was measured to reach is what must agree
    assert (manifest.default_search is None) == (local.default_search is None)
    for a, b in zip(shard_files(manifest), shard_files(local)):
        with vecstore.open(a) as sa, vecstore.open(b) as sb:
            for name in sa.tiers:
                np.testing.assert_array_equal(sa.tier(name).codes, sb.tier(name).codes)
    tiers, local_tiers = ({t.name: t for t in m.tiers} for m in (manifest, local))
    for name, tier in tiers.items():
        assert _recalls(tier.calibration) == _recalls(local_tiers[name].calibration)
    for plan in (manifest.default_search, local.default_search):
        if plan is not None:
            assert tiers[plan["tier"]].calibration["meets_target"]


def _recalls(calibration: dict | None) -> dict | None:
    """A calibration record without its timings (and the choices they drive)."""
    if calibration is None:
        return None
    # several rescoring tiers measured: the record is the fastest's, so compare each one's recall
    plans = calibration.get("alternatives", [calibration])
    return {p["rescore"]: (p["oversample"], p["recall_at_10"]) for p in plans}


@pytest.mark.parametrize("metric", METRICS)
def test_search_on_the_cluster_equals_one_store(built, data, client, metric):
    _, q, _ = data
    manifest, single = built[metric]
    truth = single.search(q, K, tier="raw").ids
    with open_sharded(manifest.path, client=client) as store:
        assert store.backend == "dask"
        for tier in ("raw", "pq8", "int8"):
            got = store.search(q, K, tier=tier)
            assert got.missing_shards == ()
            assert_same_results(got, single.search(q, K, tier=tier))
        two_stage = store.search(q, K, tier="pq8", rescore="raw", oversample=2)
        assert recall(two_stage.ids, truth) >= recall(single.search(q, K, tier="pq8", rescore="raw",
                                                                   oversample=2).ids, truth)
        assert_same_results(store.search(q, K, tier="pq8", rescore="raw", oversample=N / K),
                            single.search(q, K, tier="raw"))
        assert_same_results(store.search(q, K), open_sharded(manifest.path).search(q, K))  # default plan


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_filtered_search_on_the_cluster_equals_the_local_backend(data, client, tmp_path, metric):
    """where= and allow= on the cluster: built there with fields, each worker evaluates the filter
    on its shards' columns; the same results, bit for bit, strategies and admitted counts as the
    thread backend, and the exact top-k of the admitted documents on raw."""
    x, q, path = data
    meta = [{"lang": ("en", "de", "fr")[i % 3], "year": 1990 + i % 40} if i % 7 else {"lang": "en"}
            for i in range(N)]
    manifest = build_collection(path, str(tmp_path / "col"), metric=metric, client=client, metadata=meta,
                                fields=["lang", "year"])
    where = "lang = 'de' and year >= 2000"
    admitted = np.array([d.get("lang") == "de" and d.get("year", 0) >= 2000 for d in meta])
    some = np.flatnonzero(np.arange(N) % 5 == 0)
    with open_sharded(manifest.path, client=client) as remote, open_sharded(manifest.path) as local:
        assert remote.backend == "dask" and local.backend != "dask"
        cases = [dict(where=where, tier="raw"), dict(where=where, tier="pq8", rescore="raw", oversample=4),
                 dict(allow=some, tier="int8", rescore="raw", oversample=2),
                 dict(where="year < 1995", allow=np.isin(np.arange(N), some)),
                 dict(allow=[3, 10, 17], tier="pq8", rescore="raw", oversample=4),      # shard 0 only, exact
                 dict(where="lang = 'zz'", tier="raw")]                                   # nothing admitted
        for case in cases:
            got, want = remote.search(q, K, **case), local.search(q, K, **case)
            np.testing.assert_array_equal(got.ids, want.ids)
            np.testing.assert_array_equal(got.distances, want.distances)
            assert got.strategies == want.strategies and got.allowed == want.allowed, case
            assert len(got.strategies) == len(manifest.shards)
        raw = remote.search(q, K, where=where, tier="raw")
        assert raw.allowed == admitted.sum() and raw.strategy == "filtered-scan"
        scores = -((q[:, None, :] - x[None]) ** 2).sum(-1) if metric == "l2" else q @ x.T
        scores[:, ~admitted] = -np.inf
        truth = np.argsort(-scores, axis=1, kind="stable")[:, :K]
        assert recall(raw.ids, truth) >= 0.99           # exact, up to float ties
        assert np.isin(raw.ids, np.flatnonzero(admitted)).all()
        nothing = remote.search(q, K, where="lang = 'zz'", tier="raw")
        assert (nothing.ids == -1).all() and nothing.strategy == "none" and nothing.allowed == 0


def test_workers_open_each_shard_once_and_keep_it(built, data, client):
    _, q, _ = data
    manifest, single = built["cosine"]
    paths = set(shard_files(manifest))

    def opens():
        return {w: {p: n for p, n in counts.items() if p in paths}
                for w, counts in client.run(dask_backend.cache_info).items()}

    before = opens()
    with open_sharded(manifest.path, client=client, resident=["pq8"]) as store:
        for _ in range(3):
            store.search(q, K, tier="pq8", rescore="raw")
        after = opens()
        new = {w: {p: n - before.get(w, {}).get(p, 0) for p, n in counts.items()
                   if n - before.get(w, {}).get(p, 0)} for w, counts in after.items()}
        assert sorted(p for counts in new.values() for p in counts) == sorted(paths)  # each on one worker
        assert all(n == 1 for counts in new.values() for n in counts.values())  # once, for 1 + 3 batches
        assert all(len(counts) == 2 for counts in new.values())  # two shards a worker
        keys_of = store.keys(np.array([[0, 1999]]))
        assert keys_of == [[None, None]]
    closed = client.run(dask_backend.release, sorted(paths))  # close() released them already
    assert all(n == 0 for n in closed.values())


def test_large_batches_are_scattered_once(built, data, client, monkeypatch):
    _, q, _ = data
    manifest, single = built["l2"]
    monkeypatch.setattr(dask_backend, "INLINE_QUERY_BYTES", 0)
    with open_sharded(manifest.path, client=client) as store:
        assert_same_results(store.search(q, K, tier="raw"), single.search(q, K, tier="raw"))


def test_bad_queries_never_reach_a_worker(built, client):
    manifest, _ = built["ip"]
    with open_sharded(manifest.path, client=client) as store:
        bad = np.full((1, 32), np.inf, dtype=np.float32)
        with pytest.raises(InvalidInputError, match="NaN or Inf"):
            store.search(bad, K)


def test_missing_or_damaged_shard_is_refused_at_open(built, tmp_path, client, data):
    x, _, path = data
    manifest = build_collection(path, str(tmp_path / "col"), shards=3, codecs=[], client=client)
    files = shard_files(manifest)
    with open(files[2], "r+b") as fh:
        fh.write(b"garbage!")
    with pytest.raises(FormatError, match=f"shard 2 \\({manifest.shards[2].file}\\)"):
        open_sharded(manifest.path, client=client)
    os.unlink(files[1])
    with pytest.raises(StoreNotFoundError, match=f"shard 1 \\({manifest.shards[1].file}\\).*missing"):
        open_sharded(manifest.path, client=client)


def test_build_with_a_client_needs_a_path(client, data, tmp_path):
    x, _, _ = data
    with pytest.raises(InvalidInputError, match="give the input as a path"):
        shard_build(x, str(tmp_path / "col"), shards=2, client=client)


def test_a_scheduler_that_does_not_answer_fails_within_the_timeout(built):
    manifest, _ = built["ip"]
    with socket.socket() as silent:  # accepts connections, never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        for address in ("tcp://127.0.0.1:1", f"tcp://127.0.0.1:{silent.getsockname()[1]}"):
            t0 = time.monotonic()
            with pytest.raises(ClusterUnavailableError, match="did not answer within 2 s"):
                open_sharded(manifest.path, client=address, timeout=2)
            assert time.monotonic() - t0 < 8


# -- the CLI --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cli():
    """The vecstore command group (the shard commands included)."""
    from vecstore.cli import cli as main_group

    return main_group


def test_cli_builds_and_searches_on_the_cluster(cli, cluster, data, tmp_path):
    x, q, path = data
    address = cluster[0].scheduler_address
    keys = tmp_path / "keys.txt"
    keys.write_text("".join(f"doc {i}\n" for i in range(N)))
    runner = CliRunner()
    out = runner.invoke(cli, ["shard-build", path, str(tmp_path / "col"), "--shards", "4", "--codec", "pq8",
                              "--metric", "ip", "--keys", str(keys), "--scheduler", address, "--quiet"])
    assert out.exit_code == 0, out.output
    assert f"built 4 shards of {N} vectors x 32 dims, metric ip, on {address}" in out.output
    assert "default search: scan pq8, rescore" in out.output
    np.save(tmp_path / "q.npy", q[:2])
    res = runner.invoke(cli, ["shard-search", str(tmp_path / "col"), str(tmp_path / "q.npy"), "-k", "3",
                              "--tier", "raw", "--scheduler", address, "--json"])
    assert res.exit_code == 0, res.output
    import json

    doc = json.loads(res.output)
    with vecstore.build(str(tmp_path / "one.vs"), x, metric="ip", progress=False) as one:
        want = one.search(q[:2], 3, tier="raw")
    assert [r["ids"] for r in doc["results"]] == want.ids.tolist()
    assert doc["results"][0]["keys"] == [f"doc {i}" for i in want.ids[0]]
    assert doc["missing_shards"] == [] and doc["shards"] == 4
    text = runner.invoke(cli, ["shard-search", str(tmp_path / "col"), "--vector", ",".join(map(str, q[0])),
                               "-k", "2"])
    assert text.exit_code == 0 and "# tier pq8, rescored from raw" in text.output and "in this process" in text.output
    bad = runner.invoke(cli, ["shard-search", str(tmp_path / "col"), "--vector", ",".join(map(str, q[0])),
                              "--scheduler", "tcp://127.0.0.1:1", "--timeout", "1"])
    assert bad.exit_code == 1 and "did not answer within 1 s" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


# -- a worker killed in the middle of a batch (last: the cluster restarts a worker) -------------------


def _delay_hooks(marker_dir: str, delay: float):
    """Functions for client.run: make every shard search on a worker wait ``delay`` seconds after
    leaving a marker file (so that the test knows the batch is running there), and undo it."""

    def install():
        from vecstore.shards import dask_backend as b

        original = b.__dict__.setdefault("_test_original_cached_store", b._cached_store)

        def slow(spec, resident):
            open(os.path.join(marker_dir, f"started-{os.getpid()}"), "w").close()
            time.sleep(delay)
            return original(spec, resident)

        b._cached_store = slow

    def remove():
        from vecstore.shards import dask_backend as b

        if "_test_original_cached_store" in b.__dict__:
            b._cached_store = b.__dict__.pop("_test_original_cached_store")

    return install, remove


def _kill_during_search(client, store, marker_dir, search, before_kill=lambda victim: None):
    """Run ``search`` in a thread; when the worker holding shard 0 has started it, SIGKILL that
    worker. Returns (the search's outcome future, the victim's address)."""
    install, remove = _delay_hooks(str(marker_dir), delay=1.5)
    pids = client.run(os.getpid)
    victim = store._backend.placement[0]
    client.run(install)
    try:
        with ThreadPoolExecutor(1) as pool:
            outcome = pool.submit(search)
            marker = os.path.join(marker_dir, f"started-{pids[victim]}")
            deadline = time.monotonic() + 30
            while not os.path.exists(marker):
                assert time.monotonic() < deadline, "the batch never started on the worker"
                time.sleep(0.02)
            before_kill(victim)
            os.kill(pids[victim], signal.SIGKILL)
            try:
                outcome.result(timeout=90)
            except Exception:
                pass
    finally:
        client.run(remove)
    return outcome, victim


def test_worker_killed_during_a_batch_is_retried_elsewhere(built, data, client, tmp_path, monkeypatch):
    _, q, _ = data
    monkeypatch.setattr(dask_backend, "PLACEMENT_REFRESH_S", 0.0)  # look at the workers before every batch
    manifest, single = built["ip"]
    with open_sharded(manifest.path, client=client) as store:
        outcome, victim = _kill_during_search(client, store, tmp_path,
                                              lambda: store.search(q, K, tier="pq8", rescore="raw", oversample=N / K))
        got = outcome.result()
        assert got.missing_shards == ()
        assert_same_results(got, single.search(q, K, tier="raw"))
        client.wait_for_workers(2, timeout=60)  # the nanny restarts the victim
        again = store.search(q, K, tier="raw")  # shards of the dead worker found new homes
        assert victim not in store._backend.placement.values()
        assert_same_results(again, single.search(q, K, tier="raw"))


def test_shards_lost_with_their_worker_are_named_or_reported_missing(data, client, tmp_path):
    x, q, path = data
    manifest = build_collection(path, str(tmp_path / "col"), codecs=[], client=client)
    with open_sharded(manifest.path, client=client) as store:
        lost = {}

        def lose_files(victim):  # the shared storage loses the victim's shards before it dies
            for i, w in store._backend.placement.items():
                if w == victim:
                    lost[i] = manifest.shards[i].file
                    os.unlink(shard_files(manifest)[i])

        outcome, _ = _kill_during_search(client, store, tmp_path, lambda: store.search(q, K, tier="raw"), lose_files)
        with pytest.raises(ShardUnavailableError) as info:
            outcome.result()
        assert len(lost) == 2
        assert set(info.value.shards) == set(lost.values())
        assert all(name in str(info.value) for name in lost.values())
        client.wait_for_workers(2, timeout=60)
        partial = store.search(q, K, tier="raw", allow_partial=True)
    assert set(partial.missing_shards) == set(lost.values())
    keep = np.concatenate([np.arange(s.id_start, s.id_stop) for i, s in enumerate(manifest.shards) if i not in lost])
    with vecstore.build(str(tmp_path / "rest.vs"), x[keep], metric="ip", ids=keep, progress=False) as rest:
        assert_same_results(partial, rest.search(q, K, tier="raw"))
