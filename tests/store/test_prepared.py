"""vecstore.store.prepared: a prepared plan's fused single-query path gives the separate kernels'
results bit for bit, and plans it cannot fuse take the separate kernels."""

from __future__ import annotations

import numpy as np
import pytest

import vecstore
from vecstore.kernels import dispatch
from vecstore.plan import Plan
from vecstore.query import prepare_queries
from vecstore.store.prepared import FUSED_MAX_QUERIES, PreparedPlan

needs_simd = pytest.mark.skipif(not dispatch.FAST_SCAN, reason="this CPU has no 4-bit fast scan (AVX2 or VBMI)")
N, DIM = 3000, 32


@pytest.fixture(scope="module", params=["ip", "cosine", "l2"])
def store(request, tmp_path_factory):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((N, DIM)).astype(np.float32)
    path = str(tmp_path_factory.mktemp("prepared") / f"{request.param}.vs")
    vecstore.build(path, x, metric=request.param, ids=np.arange(N) * 3 + 7, progress=False).close()
    for codec in ("pq16x4", "float16", "int8", "pca16,pq8x4"):
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


@pytest.mark.parametrize("tier", ["raw", "int8"])
@pytest.mark.parametrize("nq, k", [(1, 10), (FUSED_MAX_QUERIES, 7), (2, N + 5)])
def test_small_exact_scans_equal_the_separate_kernels(store, tier, nq, k):
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
