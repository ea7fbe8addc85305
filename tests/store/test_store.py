"""Building, opening and exact search of stores."""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest

import vecstore
from common import assert_knn, reference_scores, reference_search
from conftest import make_store

METRICS = ["ip", "cosine", "l2"]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("nq", [1, 1000])
@pytest.mark.parametrize("k", [1, 10, "count"])
def test_exact_search_equals_brute_force(tmp_path, rng, metric, nq, k):
    n, d = 600, 20
    xb = rng.standard_normal((n, d)).astype(np.float32)
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    k = n if k == "count" else k
    with make_store(tmp_path, xb, metric) as store:
        D, I = store.search(xq, k)
    assert D.shape == I.shape == (nq, k) and D.dtype == np.float32 and I.dtype == np.int64
    assert_knn(D, I, reference_scores(xq, xb, metric), metric)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("nq", [1, 40])
def test_ties_break_towards_lower_id_like_a_stable_sort(tmp_path, rng, metric, nq):
    # integer vectors with many duplicates: every score is exact, so ids must match exactly
    base = rng.integers(-3, 4, size=(50, 8)).astype(np.float32)
    xb = np.concatenate([base, base, base])[rng.permutation(150)]
    xq = rng.integers(-3, 4, size=(nq, 8)).astype(np.float32)
    xq[xq.sum(axis=1) == 0, 0] = 1  # no zero queries (cosine)
    xb[~xb.any(axis=1), 0] = 1
    with make_store(tmp_path, xb, metric) as store:
        D, I = store.search(xq, 25)
    D_ref, I_ref = reference_search(xq, xb, 25, metric)
    if metric != "cosine":  # normalising makes scores inexact; ip and l2 are exact integers here
        np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-5, atol=1e-5)


def test_real_ground_truth_reproduced(real_store, real_small):
    """recall = 1.0 against the shipped float64 ground truth (ties within 1e-5 may swap)."""
    with vecstore.open(real_store) as store:
        D, I = store.search(real_small["test"], 100)
    gt, gt_dist = real_small["neighbors"], real_small["distances"]
    np.testing.assert_allclose(1.0 - D, gt_dist, atol=2e-5)
    for q in range(gt.shape[0]):
        if not np.array_equal(I[q], gt[q]):
            # a swap is only allowed between neighbours whose true distances tie within 1e-5
            swapped = np.nonzero(I[q] != gt[q])[0]
            assert np.all(np.abs(gt_dist[q, swapped] - (1.0 - D[q, swapped])) < 1e-5)
    recall10 = np.mean([len(set(I[q, :10]) & set(gt[q, :10])) / 10 for q in range(gt.shape[0])])
    assert recall10 == 1.0


def test_k_larger_than_count_pads_like_faiss(tmp_path, rng):
    xb = rng.standard_normal((5, 4)).astype(np.float32)
    for metric, fill in (("ip", -np.inf), ("l2", np.inf)):
        with make_store(tmp_path, xb, metric) as store:
            D, I = store.search(xb[:2], 8)
        assert (I[:, 5:] == -1).all() and (D[:, 5:] == fill).all()
        assert sorted(I[0, :5]) == [0, 1, 2, 3, 4]


def test_ids_keys_and_metadata(tmp_path, rng):
    xb = rng.standard_normal((30, 6)).astype(np.float32)
    ids = np.arange(1000, 1030)[::-1]
    keys = [f"título {i}" for i in range(30)]
    meta = [{"n": i} if i % 2 else None for i in range(30)]
    with make_store(tmp_path, xb, "l2", ids=ids, keys=keys, metadata=meta) as store:
        D, I = store.search(xb[3], 1)
        assert I[0, 0] == ids[3]
        assert store.keys(I) == [["título 3"]]
        assert store.metadata([ids[3], ids[4]]) == [{"n": 3}, None]
        with pytest.raises(vecstore.InvalidInputError, match="id 5 is not in this store"):
            store.keys([5])


def test_tier_is_a_memory_map_and_opening_reads_no_vectors(tmp_path, rng):
    xb = rng.standard_normal((2000, 64)).astype(np.float32)
    make_store(tmp_path, xb, "ip").close()
    with vecstore.open(tmp_path / "s.vs") as store:
        codes = store.tier("raw").codes
        assert not codes.flags.writeable and not codes.flags.owndata
        base = codes
        while isinstance(getattr(base, "base", None), np.ndarray):
            base = base.base
        assert isinstance(base.base, memoryview) and isinstance(base.base.obj, mmap.mmap)
        np.testing.assert_array_equal(codes, xb)


def test_datasets_are_page_aligned(tmp_path, rng):
    import h5py

    make_store(tmp_path, rng.standard_normal((100, 8)).astype(np.float32), "l2", keys=[str(i) for i in range(100)])
    with h5py.File(tmp_path / "s.vs", "r") as f:
        for name in ("ids", "tiers/raw/codes", "tiers/raw/sqnorms", "keys/offsets", "keys/data"):
            assert f[name].id.get_offset() % 4096 == 0, name


def test_close_twice_repr_and_closed_errors(tmp_path, rng):
    store = make_store(tmp_path, rng.standard_normal((10, 3)).astype(np.float32))
    assert "count=10" in repr(store)
    store.close()
    store.close()
    assert repr(store).startswith("<closed vecstore.Store")
    with pytest.raises(vecstore.ClosedStoreError):
        store.search(np.zeros(3), 1)


def test_info_lists_tiers(tmp_path, rng):
    with make_store(tmp_path, rng.standard_normal((10, 3)).astype(np.float32), "l2") as store:
        info = store.info()
    assert info["count"] == 10 and info["dim"] == 3 and info["metric"] == "l2"
    assert info["tiers"][0]["name"] == "raw" and info["tiers"][0]["bytes_per_vector"] == 16


def test_cosine_stores_unit_vectors(tmp_path, rng):
    xb = rng.standard_normal((20, 5)).astype(np.float32) * 7
    with make_store(tmp_path, xb, "cosine") as store:
        np.testing.assert_allclose(np.linalg.norm(store.tier().codes, axis=1), 1.0, rtol=1e-6)


def test_many_threads_search_one_store(tmp_path, rng):
    from concurrent.futures import ThreadPoolExecutor

    xb = rng.standard_normal((3000, 32)).astype(np.float32)
    xq = rng.standard_normal((64, 32)).astype(np.float32)
    with make_store(tmp_path, xb, "l2") as store:
        serial = [store.search(q, 5) for q in xq]
        with ThreadPoolExecutor(8) as pool:
            parallel = list(pool.map(lambda q: store.search(q, 5), xq))
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(a.ids, b.ids)
        np.testing.assert_array_equal(a.distances, b.distances)


def test_open_store_survives_replacement(tmp_path, rng):
    x1 = rng.standard_normal((50, 4)).astype(np.float32)
    x2 = rng.standard_normal((60, 4)).astype(np.float32)
    old = make_store(tmp_path, x1)
    before = old.search(x1[:3], 3)
    make_store(tmp_path, x2).close()
    after = old.search(x1[:3], 3)
    np.testing.assert_array_equal(before.ids, after.ids)
    with vecstore.open(tmp_path / "s.vs") as new:
        assert new.count == 60
    old.close()


def test_build_from_files(tmp_path, rng):
    import h5py

    xb = rng.standard_normal((300, 12)).astype(np.float32)
    np.save(tmp_path / "x.npy", xb)
    fv = np.concatenate([np.full((300, 1), 12, np.int32).view(np.float32), xb], axis=1)
    fv.tofile(tmp_path / "x.fvecs")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("grp/emb", data=xb.astype(np.float64))
        f.create_dataset("names", data=[f"n{i}" for i in range(300)], dtype=h5py.string_dtype())
    (tmp_path / "keys.txt").write_text("\n".join(f"line {i}" for i in range(300)) + "\n")
    for src in ("x.npy", "x.fvecs", "x.h5:/grp/emb"):
        with vecstore.build(tmp_path / "o.vs", str(tmp_path / src), overwrite=True, progress=False,
                            keys=str(tmp_path / "keys.txt")) as store:
            np.testing.assert_array_equal(store.tier().codes, xb)
            assert store.keys([7]) == ["line 7"]
    with vecstore.build(tmp_path / "o.vs", str(tmp_path / "x.npy"), overwrite=True, progress=False,
                        keys=f"{tmp_path}/x.h5:/names") as store:
        assert store.keys([299]) == ["n299"]


def test_build_streams_in_chunks(tmp_path, rng, monkeypatch):
    """The input is read in bounded chunks: never the whole array at once."""
    from vecstore import ingest

    monkeypatch.setattr(ingest, "CHUNK_BYTES", 10 * 16 * 4)
    xb = rng.standard_normal((95, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", xb)
    sizes = []
    source = ingest.open_vectors(str(tmp_path / "x.npy"))
    original = source.reader
    source.reader = lambda a, b: (sizes.append(b - a), original(a, b))[1]
    with vecstore.build(tmp_path / "o.vs", source, progress=False) as store:
        np.testing.assert_array_equal(store.tier().codes, xb)
    assert max(sizes) == 10 and sum(sizes) == 95


def test_ann_benchmarks_file_sets_metric(tmp_path):
    from conftest import SMALL_REAL

    with vecstore.build(tmp_path / "a.vs", SMALL_REAL, progress=False) as store:
        assert store.metric == "cosine" and store.count == 10_000
    assert not any(".vecstore-tmp-" in p for p in os.listdir(tmp_path))
