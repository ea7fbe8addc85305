"""vecstore.store.tier: each tier's scan and rescore equal numpy over its decoded vectors; its sizes,
description and residency."""

from __future__ import annotations

import numpy as np
import pytest
from common import assert_knn
from conftest import make_store

import vecstore
from vecstore.kernels import dispatch

N, DIM, NQ, K = 600, 16, 7, 10
# codec string -> (layout, code_size)
CODECS = {"float32": ("f32", 64), "float16": ("f16", 32), "int8": ("i8", 16), "pca8,int8": ("i8", 8),
          "pq4": ("pq8", 4), "pq8x4": ("pq4", 4)}
DENSE = [c for c, (layout, _) in CODECS.items() if not layout.startswith("pq")]


@pytest.fixture(scope="module", params=["ip", "l2"])
def store(request, tmp_path_factory):
    """A store of every codec: the raw tier is "float32", the others are named by their codec."""
    metric = request.param
    x = np.random.default_rng(7).standard_normal((N, DIM)).astype(np.float32)
    path = make_store(tmp_path_factory.mktemp("tier"), x, metric).path
    for codec in CODECS:
        if codec != "float32":
            vecstore.compress(path, codec, calibrate=False, progress=False).close()
    with vecstore.open(path) as opened:
        yield opened


def _tier(store, codec):
    return store.tier("raw" if codec == "float32" else codec)


def _queries(seed, nq=NQ):
    return np.random.default_rng(seed).standard_normal((nq, DIM)).astype(np.float32)


def reference_tier_scores(tier, xq):
    """Scores over the tier's decoded vectors, in float64: q . x, or 2 q . x - |x|^2 with the stored
    squared norms (l2)."""
    decoded = tier.codec.decode(np.asarray(tier.codes)).astype(np.float64)
    assert decoded.shape == (tier.count, DIM)
    scores = xq.astype(np.float64) @ decoded.T
    if tier.metric == "l2":
        np.testing.assert_allclose(tier.sqnorms, (decoded ** 2).sum(axis=1), rtol=1e-5)
        scores = 2 * scores - np.asarray(tier.sqnorms, dtype=np.float64)[None, :]
    return scores


@pytest.mark.parametrize("nq", [1, NQ])
@pytest.mark.parametrize("codec", list(CODECS))
def test_scan_equals_numpy_over_the_decoded_vectors(store, codec, nq):
    tier = _tier(store, codec)
    xq = _queries(1, nq)
    scores, rows = tier.scan(xq, K)
    assert scores.shape == rows.shape == (nq, K)
    assert_knn(scores, rows, reference_tier_scores(tier, xq), "ip")  # scan scores: higher is better


def _candidates(seed, width=40, holes=8):
    """Distinct candidate rows per query, some slots -1 (none)."""
    rng = np.random.default_rng(seed)
    cand = np.array([rng.choice(N, size=width, replace=False) for _ in range(NQ)], dtype=np.int64)
    for q in range(NQ):
        cand[q, rng.choice(width, size=holes, replace=False)] = -1
    return cand


@pytest.mark.parametrize("codec", DENSE)
def test_rescore_equals_numpy_on_the_candidate_rows(store, codec):
    tier = _tier(store, codec)
    xq, cand = _queries(3), _candidates(4)
    full = reference_tier_scores(tier, xq)
    only = np.full_like(full, -np.inf)  # rows that are not a query's candidates score nothing
    for q in range(NQ):
        rows = cand[q][cand[q] >= 0]
        only[q, rows] = full[q, rows]
    scores, rows = tier.rescore(xq, cand, K)
    assert_knn(scores, rows, only, "ip")
    assert all(set(r) <= set(c) for r, c in zip(rows.tolist(), cand.tolist()))


def test_rescore_pads_when_fewer_candidates_than_k(store):
    tier = _tier(store, "float32")
    xq = _queries(5, 2)
    cand = np.array([[3, -1, 9, -1], [-1, -1, -1, -1]], dtype=np.int64)
    scores, rows = tier.rescore(xq, cand, 3)
    full = reference_tier_scores(tier, xq)
    first = sorted([3, 9], key=lambda r: -full[0, r])
    assert rows.tolist() == [first + [-1], [-1, -1, -1]]
    np.testing.assert_allclose(scores[0, :2], full[0, first], rtol=1e-5)
    assert scores[0, 2] == -np.inf and (scores[1] == -np.inf).all()


@pytest.mark.parametrize("codec", list(CODECS))
def test_layout_sizes_and_description(store, codec):
    tier = _tier(store, codec)
    layout, code_size = CODECS[codec]
    norms = 4 if store.metric == "l2" else 0
    assert (tier.layout, tier.code_size, tier.bytes_per_vector) == (layout, code_size, code_size + norms)
    assert tier.count == N and tier.codes.nbytes == N * code_size
    assert (tier.sqnorms is not None) == (store.metric == "l2")
    params = sum(a.nbytes for a in tier.codec.params().values())
    assert (params > 0) == (codec not in ("float32", "float16"))
    assert tier.describe() == {
        "name": tier.name, "codec": codec, "bytes_per_vector": code_size + norms, "code_bytes": N * code_size,
        "param_bytes": params, "size_bytes": N * (code_size + norms) + params, "resident": False,
        "calibration": None,
    }


@pytest.mark.parametrize("codec", ["int8", "pq8x4"])
def test_load_makes_a_tier_resident_and_memory_says_so(store, codec):
    xq = _queries(6)
    with vecstore.open(store.path) as fresh:  # its own tiers: the shared store stays mapped
        tier = _tier(fresh, codec)
        size = N * tier.bytes_per_vector
        before = tier.scan(xq, K)
        mem = tier.memory()
        assert (mem["resident_bytes"], mem["mapped_bytes"]) == (0, size)
        assert not tier.codes.flags.owndata
        tier.load()
        tier.load()  # twice is harmless
        mem = tier.memory()
        norms = N * 4 if store.metric == "l2" else 0
        if codec == "pq8x4" and dispatch.fast_scan():
            # held as fast-scan blocks only: the stored codes stay mapped, never copied
            assert (mem["resident_bytes"], mem["mapped_bytes"]) == (norms, size - norms)
            assert mem["fastscan_bytes"] >= N * 4 and not tier.codes.flags.owndata
            total = fresh.memory()
            params = sum(t["param_bytes"] for t in total["tiers"].values())
            assert total["resident_bytes"] == params + norms + mem["fastscan_bytes"]
        else:
            assert (mem["resident_bytes"], mem["mapped_bytes"]) == (size, 0)
            assert tier.codes.flags.owndata
        assert tier.resident and tier.describe()["resident"]
        assert mem["param_bytes"] == tier.param_bytes
        after = tier.scan(xq, K)
        np.testing.assert_array_equal(after[0], before[0])
        np.testing.assert_array_equal(after[1], before[1])
