"""vecstore.store.prepared: a prepared plan's fused single-query path gives the separate kernels'
results bit for bit, plans it cannot fuse take the separate kernels, and small exact float32 scans
answered in numpy (dispatch.by_numpy) rank as the kernels do."""

from __future__ import annotations

import numpy as np
import pytest

import vecstore
from vecstore.kernels import dispatch
from vecstore.plan import Plan
from vecstore.query import prepare_queries
from common import assert_knn
from vecstore.store.masks import RowMask
from vecstore.store.prepared import FUSED_MAX_QUERIES, PreparedPlan

needs_simd = pytest.mark.skipif(not dispatch.FAST_SCAN, reason="this CPU has no 4-bit fast scan (AVX2 or VBMI)")
N, DIM = 3000, 32


@pytest.fixture(scope="module", params=["ip", "cosine", "l2"])
def store(request, tmp_path_factory):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    path = str(tmp_path_factory.mktemp("prepared") / f"{request.param}.vs")
    vecstore.build(path, x, metric=request.param, ids=np.arange(N) * 3 + 7, progress=False).close()
    for codec in ("pq16x4", "float16", "int8", "pca16,pq8x4", "ivf16,pq16x4"):
        vecstore.compress(path, codec, calibrate=False, progress=False).close()
    with vecstore.open(path) as s:
        yield s


@needs_simd
@pytest.mark.parametrize("plan", [Plan("pq16x4"), Plan("pq16x4", "raw", 4.0), Plan("pq16x4", "float16", 8.0),
                                  Plan("pq16x4", "int8", 2.5)])
@pytest.mark.parametrize("nq, k", [(1, 10), (3, 1), (FUSED_MAX_QUERIES, 25), (1, N + 5)])
def test_fused_equals_the_separate_kernels(store, plan, nq, k):
    base = store._now().base
    prepared = PreparedPlan(base, plan)
    assert prepared.fused
    xq = prepare_queries(np.random.default_rng(nq + k).standard_normal((nq, DIM)), DIM, store.metric)
    fused = prepared.search(xq, k)
    separate = base.search_plan(xq, k, plan)
    np.testing.assert_array_equal(fused.ids, separate.ids)
    np.testing.assert_array_equal(fused.distances, separate.distances)
    if k > N:
        assert (fused.ids[:, N:] == -1).all()


@needs_simd
@pytest.mark.parametrize("plan", [Plan("ivf16,pq16x4"), Plan("ivf16,pq16x4", "raw", 4.0),
                                  Plan("ivf16,pq16x4", "float16", 8.0)])
@pytest.mark.parametrize("nq, k, nprobe", [(1, 10, 3), (3, 1, 1), (FUSED_MAX_QUERIES, 25, 16), (1, N + 5, 5),
                                           (2, 40, None)])
@pytest.mark.parametrize("large", [False, True])
def test_fused_lists_equal_the_separate_kernels(store, plan, nq, k, nprobe, large, monkeypatch):
    """An inverted-file 4-bit tier's fused path (kernels/fused.py:search_ivf_pq4), on one thread or
    with several queries in groups on the threads (large: every scan counts as large), answers as
    StoreFile.search_plan, bit for bit, padding included."""
    if large:
        monkeypatch.setattr(dispatch, "SERIAL_WORK", 0)
    base = store._now().base
    prepared = PreparedPlan(base, plan)
    assert prepared.fused_lists and not prepared.fused
    xq = prepare_queries(np.random.default_rng(nq + k).standard_normal((nq, DIM)), DIM, store.metric)
    fused = prepared.search(xq, k, nprobe)
    separate = base.search_plan(xq, k, plan, nprobe)
    np.testing.assert_array_equal(fused.ids, separate.ids)
    np.testing.assert_array_equal(fused.distances, separate.distances)
    assert (fused.ids[:, min(k, N):] == -1).all()


@pytest.mark.parametrize("tier", ["raw", "int8"])
@pytest.mark.parametrize("nq, k", [(1, 10), (FUSED_MAX_QUERIES, 7), (2, N + 5)])
def test_small_exact_scans_equal_the_separate_kernels(store, tier, nq, k, monkeypatch):
    monkeypatch.setattr(dispatch, "NUMPY_MAX_WORK", 0)  # the compiled one-thread path, not numpy's
    base = store._now().base
    prepared = PreparedPlan(base, Plan(tier))
    assert prepared.dense is not None
    xq = prepare_queries(np.random.default_rng(nq * k).standard_normal((nq, DIM)), DIM, store.metric)
    assert nq * N * DIM < dispatch.SERIAL_WORK  # the one-thread path is taken
    fused = prepared.search(xq, k)
    separate = base.search_plan(xq, k, Plan(tier))
    np.testing.assert_array_equal(fused.ids, separate.ids)
    np.testing.assert_array_equal(fused.distances, separate.distances)


def test_plans_it_cannot_fuse_take_the_separate_kernels(store, monkeypatch):
    base = store._now().base
    assert not PreparedPlan(base, Plan("pca16,pq8x4", "raw", 4.0)).fused      # a pre-transform
    assert not PreparedPlan(base, Plan("float16")).fused                      # not 4-bit PQ
    monkeypatch.setattr(dispatch, "FAST_SCAN", False)
    assert not PreparedPlan(base, Plan("pq16x4", "raw", 4.0)).fused           # no fast scan here


@needs_simd
def test_a_damaged_codebook_is_never_fused(store):
    base = store._now().base
    tier = base.tier("pq16x4")
    books = tier.codec.terminal.codebooks_
    saved = books[0, 0, 0]
    try:
        books[0, 0, 0] = np.nan
        assert not PreparedPlan(base, Plan("pq16x4")).fused
        books[0, 0, 0] = 3e18
        assert not PreparedPlan(base, Plan("pq16x4")).fused
    finally:
        books[0, 0, 0] = saved


def test_store_search_goes_through_one_prepared_plan_per_view(store):
    view = store._now()
    q = np.ones(DIM, dtype=np.float32)
    store.search(q, 5, tier="pq16x4", rescore="raw", oversample=3)
    store.search(q, 5, tier="pq16x4", rescore="raw", oversample=3)
    plan = view.resolve("pq16x4", "raw", 3)
    assert plan == ("pq16x4", "raw", 3.0) and view.prepared(plan) is view.prepared(plan)


def test_a_view_remembers_a_bounded_number_of_plans(store, monkeypatch):
    """A server passing a new oversample or budget on every call: the view's plan caches keep the
    newest MAX_REMEMBERED of each kind, and a remembered plan is still reused."""
    from vecstore.store import view as view_module

    monkeypatch.setattr(view_module, "MAX_REMEMBERED", 8)
    view = store._now()
    q = np.ones(DIM, dtype=np.float32)
    for i in range(30):
        store.search(q, 5, tier="pq16x4", rescore="raw", oversample=2 + i / 10, budget=64 + i)
    assert len(view._plans) <= 8 and len(view._prepared) <= 8 and len(view._defaults) <= 8
    plan = view.resolve("pq16x4", "raw", 4.9, 93)
    assert plan.oversample == 4.9 and view.prepared(plan) is view.prepared(plan)
    assert (("pq16x4", "raw", 2.0, 64)) not in view._plans  # the oldest went first


@pytest.mark.parametrize("nq, k", [(1, 10), (3, 1), (FUSED_MAX_QUERIES, 25), (2, N), (1, N + 5)])
def test_small_float32_scans_in_numpy_rank_as_the_kernels(store, nq, k, monkeypatch):
    base = store._now().base
    xq = prepare_queries(np.random.default_rng(nq * k + 1).standard_normal((nq, DIM)), DIM, store.metric)
    monkeypatch.setattr(dispatch, "numba_imported", lambda: False)  # as in a fresh process
    assert dispatch.by_numpy("f32", nq, N, DIM)
    numpy_result = PreparedPlan(base, Plan("raw")).search(xq, k)
    monkeypatch.setattr(dispatch, "NUMPY_MAX_WORK", 0)
    kernels = PreparedPlan(base, Plan("raw")).search(xq, k)   # the fused one-thread kernel
    separate = base.search_plan(xq, k, Plan("raw"))           # the parallel scan and finish
    for other in (kernels, separate):
        np.testing.assert_allclose(numpy_result.distances, other.distances, rtol=1e-5, atol=1e-5)
        same = numpy_result.ids == other.ids
        tied = np.isclose(numpy_result.distances, other.distances, rtol=1e-5, atol=1e-5)
        assert (same | tied).all()
    kk = min(k, N)
    assert (numpy_result.ids[:, kk:] == -1).all()
    assert np.isinf(numpy_result.distances[:, kk:]).all()
    # against float64 on the stored rows (rows = (id - 7) / 3, see the fixture)
    rows = (numpy_result.ids[:, :kk] - 7) // 3
    stored = np.asarray(base.tier("raw").codes)
    scores = xq.astype(np.float64) @ stored.T.astype(np.float64)
    if store.metric == "l2":
        scores = 2 * scores - (stored.astype(np.float64) ** 2).sum(axis=1) - (xq.astype(np.float64) ** 2).sum(axis=1)[:, None]
    assert_knn(numpy_result.distances[:, :kk], rows, scores, store.metric)


def test_which_scans_numpy_answers(monkeypatch):
    assert not dispatch.by_numpy("f32", 1, 10_000, 384)  # numba is in this process: its kernels, which scale with threads
    monkeypatch.setattr(dispatch, "numba_imported", lambda: False)
    assert dispatch.by_numpy("f32", 1, 10_000, 384)                      # the fresh-process case of issue 17
    assert not dispatch.by_numpy("f32", 1, 100_000, 384)                 # the parallel kernels win
    assert not dispatch.by_numpy("f32", dispatch.GEMM_MIN_QUERIES, 10, 4)  # batches: BLAS + kernels' heaps
    assert not dispatch.by_numpy("i8", 1, 1000, 32) and not dispatch.by_numpy("f16", 1, 1000, 32)


def test_a_small_search_in_a_fresh_process_needs_no_compiled_call(tmp_path):
    import os
    import subprocess
    import sys

    path = str(tmp_path / "s.vs")
    vecstore.build(path, np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32), metric="cosine",
                   progress=False).close()
    # (no compiled call is possible without numba, which the numpy path is taken only without)
    code = (f"import sys, vecstore, numpy as np\n"
            f"with vecstore.open({path!r}) as s:\n    D, I = s.search(np.ones(16, np.float32), 5)\n"
            f"assert I.shape == (1, 5) and 'numba' not in sys.modules\nprint('ok')")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
@needs_simd
@pytest.mark.parametrize("plan", [Plan("pq16x4"), Plan("pq16x4", "raw", 4.0), Plan("pq16x4", "float16", 8.0),
                                  Plan("pq16x4", "int8", 2.5)])
@pytest.mark.parametrize("admitted", [0, 5, 30, 300, 1500, N])
@pytest.mark.parametrize("nq, k", [(1, 10), (3, 1), (FUSED_MAX_QUERIES, 25)])
def test_filtered_fused_equals_the_separate_kernels(store, monkeypatch, plan, admitted, nq, k):
    base = store._now().base
    prepared = PreparedPlan(base, plan)
    rng = np.random.default_rng(admitted + nq)
    mask = np.zeros(N, dtype=bool)
    mask[rng.choice(N, admitted, replace=False)] = True
    allow = RowMask(mask)
    xq = prepare_queries(rng.standard_normal((nq, DIM)), DIM, store.metric)
    separate = base.search_allowed(xq, k, plan, allow)
    (strategy,) = separate.strategies
    # the fused path must not fall back to the separate kernels (but "none" has nothing to scan)
    with monkeypatch.context() as m:
        m.setattr(type(base), "search_allowed", lambda *a, **kw: pytest.fail("took the separate path"))
        if admitted == 0:
            m.undo()
        fused = prepared.search_allowed(xq, k, allow)
    assert fused.strategies == (strategy,)
    assert fused.allowed == separate.allowed == admitted
    assert strategy == ("none" if admitted == 0 else "exact" if admitted <= 37 and plan.rescore
                        else "filtered-scan" if plan.rescore is None else "filtered-two-stage")
    np.testing.assert_array_equal(fused.ids, separate.ids)
    np.testing.assert_array_equal(fused.distances, separate.distances)
    assert np.isin(fused.ids[fused.ids >= 0], base.ids[mask]).all()
    assert ((fused.ids >= 0).sum(axis=1) == min(k, admitted)).all()


def test_a_where_text_is_compiled_and_evaluated_once_per_view(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    path = str(tmp_path / "fields.vs")
    meta = [{"r": int(i % 100)} for i in range(500)]
    vecstore.build(path, rng.standard_normal((500, 8)).astype(np.float32), metadata=meta, fields=["r"],
                   progress=False).close()
    with vecstore.open(path) as s:
        q = np.ones(8, dtype=np.float32)
        first = s.search(q, 5, where="r < 10")
        view = s._now()
        masks = view.filter_cache.get_masks("r < 10")
        assert masks is not None and masks[0].allowed == 50 and not masks[0].mask.flags.writeable
        from vecstore.filters import evaluate
        monkeypatch.setattr(evaluate.Predicate, "mask", lambda *a: pytest.fail("evaluated again"))
        again = s.search(q, 5, where="r < 10")
        np.testing.assert_array_equal(first.ids, again.ids)
        # allow= is applied per call, on top of the kept mask (which it must not change)
        both = s.search(q, 5, where="r < 10", allow=np.arange(0, 500, 2))
        assert both.allowed == 25 and masks[0].allowed == 50 and np.count_nonzero(masks[0].mask) == 50


def test_the_mask_cache_is_bounded_by_bytes(monkeypatch):
    from vecstore.store import masks as masks_module
    one = RowMask(np.zeros(1000, dtype=bool))
    assert one.nbytes == {32: 1000 + 32 * 8, 128: 1000 + 8 * 16}[masks_module.K.fastscan.BLOCK]  # mask + block bits
    monkeypatch.setattr(masks_module, "MASK_CACHE_BYTES", int(2.5 * one.nbytes))
    cache = masks_module.FilterCache()
    for i in range(10):
        cache.put_masks(f"r < {i}", [RowMask(np.zeros(1000, dtype=bool))])
    assert [cache.get_masks(f"r < {i}") is not None for i in range(10)] == [False] * 8 + [True] * 2
    cache.put_masks("big", [RowMask(np.ones(3000, dtype=bool))])  # larger than the whole cache: not kept
    assert cache.get_masks("big") is None and cache.get_masks("r < 9") is not None


def test_the_mask_cache_evicts_the_least_recently_used(monkeypatch):
    """A repeated hit is served without the lock (FilterCache._recent) and still counts as the
    latest use: the entry evicted is the one used longest ago."""
    from vecstore.store import masks as masks_module
    one = RowMask(np.zeros(1000, dtype=bool))
    monkeypatch.setattr(masks_module, "MASK_CACHE_BYTES", int(2.5 * one.nbytes))
    for uses in (["a", "a", "a"], ["a", "b", "a"], ["b", "a", "a", "b", "a"]):
        cache = masks_module.FilterCache()
        kept = {name: [RowMask(np.zeros(1000, dtype=bool))] for name in "ab"}
        for name in "ab":
            cache.put_masks(name, kept[name])
        for name in uses:
            assert cache.get_masks(name) is kept[name]
        cache.put_masks("c", [RowMask(np.zeros(1000, dtype=bool))])  # over budget: one of a, b goes
        oldest = "b" if uses[-1] == "a" else "a"
        assert cache.get_masks(oldest) is None, uses
        assert cache.get_masks("a" if oldest == "b" else "b") is not None and cache.get_masks("c") is not None
    newer = [RowMask(np.zeros(1000, dtype=bool))]
    cache.put_masks("c", newer)  # replaced: the last one found is not served again
    assert cache.get_masks("c") is newer


@pytest.mark.parametrize("plan", [Plan("raw"), Plan("float16"), Plan("int8"), Plan("pca16,pq8x4", "raw", 4.0)])
@pytest.mark.parametrize("admitted", [3, 30, 2000])
@pytest.mark.parametrize("nq, k", [(1, 10), (FUSED_MAX_QUERIES, 25)])
def test_filtered_dense_scans_equal_the_separate_kernels(store, plan, admitted, nq, k):
    base = store._now().base
    prepared = PreparedPlan(base, plan)
    rng = np.random.default_rng(admitted * nq)
    mask = np.zeros(N, dtype=bool)
    mask[rng.choice(N, admitted, replace=False)] = True
    allow = RowMask(mask)
    xq = prepare_queries(rng.standard_normal((nq, DIM)), DIM, store.metric)
    separate = base.search_allowed(xq, k, plan, allow)
    (strategy,) = separate.strategies
    fused = prepared.search_allowed(xq, k, allow)
    assert fused.strategies == (strategy,) and fused.allowed == admitted
    np.testing.assert_array_equal(fused.ids, separate.ids)
    np.testing.assert_array_equal(fused.distances, separate.distances)


def test_a_row_mask_takes_any_nonzero_byte():
    mask = np.array([0, 1, 7, 0, 255], dtype=np.uint8)
    rows = RowMask(mask)
    assert rows.allowed == 3 and rows.rows().tolist() == [1, 2, 4] and rows.mask.tolist() == [0, 1, 1, 0, 1]
