"""The benchmark support package: generators, ground truth, recall, FAISS twins, /proc readers.

Fast checks only (tiny sizes); the measurements themselves live in benchmarks/.
"""

from __future__ import annotations

import mmap
import os
import time

import numpy as np
import pytest

import vecstore
from vecstore.bench import datasets, faiss_twins, metrics

from conftest import SMALL_REAL


@pytest.fixture
def one_faiss_thread():
    """Tiny FAISS jobs are fastest (and immune to a busy machine) on one thread."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def brute_force(xq, xb, k, metric):
    q, b = xq.astype(np.float64), xb.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
    if metric == "l2":
        s = -((q[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    else:
        s = q @ b.T
    rows = np.argsort(-s, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(s, rows, axis=1)
    return (-top if metric == "l2" else top), rows


# -- generators ------------------------------------------------------------------------------------


def _clustered(n, dim=4096, seed=0):
    return np.vstack(list(datasets.iter_clustered(datasets.clustered_model(dim, seed), n)))


def test_clustered_generator_is_seeded_and_deterministic():
    a, b = _clustered(300), _clustered(300)
    assert a.dtype == np.float32 and a.shape == (300, 4096)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, _clustered(300, seed=1))
    # row i does not depend on n (blocks are seeded by their index)
    np.testing.assert_array_equal(_clustered(1100, dim=64)[:300], _clustered(300, dim=64))


def test_clustered_generator_is_fc7_like():
    x = _clustered(1000)
    assert (x >= 0).all()
    assert 0.70 <= (x == 0).mean() <= 0.80
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    # clustered: a point's nearest neighbour is much closer than a typical point
    s = x[:50] @ x.T
    np.fill_diagonal(s[:, :50], -1)
    assert np.median(s.max(axis=1)) > 2 * np.median(s)


def test_fc7_lift_of_real_embeddings():
    blocks = lambda: np.vstack(list(datasets.iter_fc7lift(SMALL_REAL, "train", 200, dim=4096, seed=0)))  # noqa: E731
    x = blocks()
    assert x.shape == (200, 4096) and x.dtype == np.float32
    np.testing.assert_array_equal(x, blocks())
    assert (x >= 0).all()
    assert 0.70 <= (x == 0).mean() <= 0.80
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    other = np.vstack(list(datasets.iter_fc7lift(SMALL_REAL, "train", 200, dim=4096, seed=1)))
    assert not np.array_equal(x, other)


def test_write_npy_streams_blocks(tmp_path):
    model = datasets.clustered_model(32, 3)
    path = str(tmp_path / "x.npy")
    datasets.write_npy(path, (2500, 32), datasets.iter_clustered(model, 2500))
    np.testing.assert_array_equal(np.load(path), np.vstack(list(datasets.iter_clustered(model, 2500))))
    with pytest.raises(ValueError, match="rows"):
        datasets.write_npy(str(tmp_path / "y.npy"), (10, 32), datasets.iter_clustered(model, 5))
    assert not os.path.exists(tmp_path / "y.npy")


# -- ground truth ----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_exact_knn_equals_brute_force_with_ties(metric, monkeypatch, rng):
    monkeypatch.setattr(datasets, "GT_BLOCK_BYTES", 8 * 16 * 64)  # force many small blocks
    xb = rng.standard_normal((700, 16)).astype(np.float32)
    xb[300:310] = xb[5]            # exact ties that straddle blocks
    xb[650] = xb[5]
    xq = np.vstack([xb[5:6], rng.standard_normal((9, 16)).astype(np.float32)])
    D, I = datasets.exact_knn(xq, xb, 25, metric)
    D_ref, I_ref = brute_force(xq, xb, 25, metric)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_allclose(D, D_ref, rtol=1e-9, atol=1e-9)


def test_exact_scores_of_given_rows(rng):
    xb = rng.standard_normal((50, 8)).astype(np.float32)
    xq = rng.standard_normal((3, 8)).astype(np.float32)
    rows = np.array([[0, 1, -1], [49, 2, 2], [7, 8, 9]])
    s = datasets.exact_scores(xq, xb, rows, "ip")
    assert np.isnan(s[0, 2])
    np.testing.assert_allclose(s[1, 0], xq[1].astype(np.float64) @ xb[49].astype(np.float64))
    l2 = datasets.exact_scores(xq, xb, rows, "l2")
    np.testing.assert_allclose(l2[2, 1], ((xq[2] - xb[8]).astype(np.float64) ** 2).sum(), rtol=1e-6)


def test_synthetic_dataset_ground_truth_and_cache(tmp_path):
    ds = datasets.SyntheticDataset("clustered", n=600, nq=20, dim=64, workdir=str(tmp_path))
    xb, xq = np.asarray(ds.get_database()), ds.get_queries()
    assert xb.shape == (600, 64) and xq.shape == (20, 64)
    np.testing.assert_array_equal(ds.get_groundtruth(10), brute_force(xq, xb, 10, "ip")[1])
    stamp = os.path.getmtime(ds.base_file)
    again = datasets.SyntheticDataset("clustered", n=600, nq=20, dim=64, workdir=str(tmp_path))
    again.materialize()
    assert os.path.getmtime(again.base_file) == stamp        # reused, not regenerated
    assert again.get_groundtruth(5).shape == (20, 5)


def test_ann_benchmarks_dataset(tmp_path):
    ds = datasets.AnnBenchmarksDataset(SMALL_REAL, nq=20)
    assert ds.metric == "cosine" and ds.d == 384 and ds.uses_shipped_groundtruth
    D, I = ds.get_groundtruth_with_scores(10)
    D_ref, I_ref = datasets.exact_knn(ds.get_queries(), ds.get_database(), 10, "cosine")
    assert metrics.recall_at_k(I, I_ref, 10, D=D, D_ref=D_ref, atol=1e-5) == 1.0
    np.testing.assert_allclose(D, D_ref, atol=1e-6)
    cut = datasets.AnnBenchmarksDataset(SMALL_REAL, n=2000, nq=5, cache_dir=str(tmp_path))
    assert not cut.uses_shipped_groundtruth and cut.database_path() is None
    np.testing.assert_array_equal(cut.get_groundtruth(10),
                                  brute_force(cut.get_queries(), cut.get_database(), 10, "cosine")[1])


def test_missing_real_file_says_how_to_get_it(tmp_path):
    with pytest.raises(datasets.DataNotFoundError, match="make_wordnet_minilm.py"):
        datasets.load_dataset(os.path.join(str(tmp_path), "wordnet-minilm-384.hdf5"))


# -- recall ----------------------------------------------------------------------------------------


def test_recall_at_k_basic_and_duplicates():
    I_ref = np.array([[1, 2, 3], [4, 5, 6]])
    assert metrics.recall_at_k(I_ref, I_ref) == 1.0
    assert metrics.recall_at_k(np.array([[3, 2, 9], [6, -1, -1]]), I_ref) == pytest.approx(3 / 6)
    assert metrics.recall_at_k(np.array([[1, 1, 1], [4, 4, 5]]), I_ref) == pytest.approx(3 / 6)
    assert metrics.recall_at_k(np.array([[1, 9], [4, 9]]), I_ref, 1) == 1.0


def test_recall_tolerates_ties_only_when_asked():
    I_ref, D_ref = np.array([[1, 2, 3]]), np.array([[0.9, 0.8, 0.7]])
    I, D = np.array([[1, 2, 7]]), np.array([[0.9, 0.8, 0.7 - 1e-7]])   # 7 ties with 3
    assert metrics.recall_at_k(I, I_ref) == pytest.approx(2 / 3)
    assert metrics.recall_at_k(I, I_ref, D=D, D_ref=D_ref, atol=1e-5) == 1.0
    far = np.array([[0.9, 0.8, 0.6]])
    assert metrics.recall_at_k(I, I_ref, D=far, D_ref=D_ref, atol=1e-5) == pytest.approx(2 / 3)
    # l2: lower is better
    Dl_ref, Dl = np.array([[0.1, 0.2, 0.3]]), np.array([[0.1, 0.2, 0.3 + 1e-7]])
    assert metrics.recall_at_k(I, I_ref, D=Dl, D_ref=Dl_ref, metric="l2", atol=1e-5) == 1.0
    report = metrics.tie_report(I, I_ref, 3, D=D, D_ref=D_ref)
    assert report["explained_by_ties"] == 1 and report["unexplained"] == 0


# -- FAISS twins -----------------------------------------------------------------------------------


@pytest.mark.parametrize("codec, factory", [
    ("raw", "Flat"), ("float32", "Flat"), ("float16", "SQfp16"), ("int8", "SQ8"), ("int8c0.001", "SQ8"),
    ("pca128,int8", "PCA128,SQ8"), ("pca512,int8", "PCA512,SQ8"), ("pq48", "PQ48np"), ("pq64x8", "PQ64np"),
    ("pca192,pq48", "PCA192,PQ48np"), ("pca512,pq64", "PCA512,PQ64np"), ("pq96x4", "PQ96x4fs"),
    ("pq128x4", "PQ128x4fs"), ("pca256", "PCA256,Flat"), ("pca256,float16", "PCA256,SQfp16"),
    ("pca256,pq32x4", "PCA256,PQ32x4fs"), ("ivf1024,pq32x4", "IVF1024,PQ32x4fs"), ("ivf64,int8", "IVF64,SQ8"),
    ("ivf4096,pca128,pq32", "PCA128,IVF4096,PQ32np"), ("ivf16", "IVF16,Flat"),
])
def test_twin_factory_strings(codec, factory):
    assert faiss_twins.twin_factory_string(codec) == factory


def test_twin_of_unknown_codec_is_refused():
    with pytest.raises(vecstore.UnknownCodecError):
        faiss_twins.twin_factory_string("opq16")


@pytest.mark.parametrize("codec", ["float16", "int8", "pca8,int8", "pq4", "pq8x4", "pca8,pq4"])
def test_twin_has_vecstore_bytes_and_metric(codec, rng, one_faiss_thread):
    import faiss

    x = rng.standard_normal((300, 16)).astype(np.float32)
    index, info = faiss_twins.build_twin(codec, x, metric="cosine", train=x)
    assert index.ntotal == 300 and index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert info["code_size"] == vecstore.get_codec(codec, 16).code_size
    assert info["code_size"] == faiss_twins.bytes_per_vector(codec, 16)


def test_training_rows_match_compress(tmp_path, rng):
    from vecstore.store.build import sample_rows
    from vecstore.store.file import StoreFile

    x = rng.standard_normal((500, 8)).astype(np.float32)
    vecstore.build(str(tmp_path / "s.vs"), x, metric="ip", progress=False).close()
    with StoreFile(str(tmp_path / "s.vs")) as store:  # what compress samples from
        for size, seed in ((100, 0), (100, 7), (500, 0), (900, 1)):
            rows = faiss_twins.training_rows(store.count, size, seed)
            np.testing.assert_array_equal(store.tier().codes[rows], sample_rows(store, size, seed))


def test_set_threads_sets_numba_and_faiss():
    import faiss
    import numba

    before = numba.get_num_threads()
    try:
        assert faiss_twins.set_threads(1) == 1
        assert numba.get_num_threads() == 1 and faiss.omp_get_max_threads() == 1
    finally:
        faiss_twins.set_threads(before)


# -- /proc, page cache, machine, timers -------------------------------------------------------------


def test_memory_reader_returns_positive_numbers(tmp_path):
    m = metrics.memory()
    for key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
        assert m[key] > 0
    assert m["VmHWM"] >= m["VmRSS"] >= m["RssAnon"]
    path = tmp_path / "f.bin"
    path.write_bytes(b"\1" * (1 << 20))
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert np.frombuffer(mm, dtype=np.uint8).sum() == 1 << 20
        assert metrics.mapped_rss(str(path)) == 1 << 20
    assert 0.0 <= metrics.page_cache_fraction(str(path)) <= 1.0


def test_machine_description():
    m = metrics.machine()
    assert m["logical_cpus"] >= 1 and m["numba_threads"] >= 1 and m["cpu_model"]
    assert "numpy" in m["versions"]
    assert "cpus" in metrics.describe_machine(m)


def test_timers():
    t = metrics.time_repeated(lambda: None, repeats=4, warmup=1)
    assert len(t.seconds) == 4 and t.min >= 0 and t.p99 >= t.p50
    calls = []
    out = metrics.time_each_interleaved({"a": calls.append, "b": calls.append}, [1, 2, 3], warmup=1)
    assert len(out["a"].seconds) == 3 and calls == [1, 1, 1, 1, 2, 2, 3, 3]


def test_fast_calls_get_more_rounds_within_the_budget_and_every_system_the_same():
    from vecstore.bench import metrics

    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1
        return fn

    out = metrics.time_repeated_interleaved({"a": make("a"), "b": make("b")}, repeats=3, warmup=1,
                                            budget_s=1.0, max_repeats=9)
    assert len(out["a"].seconds) == len(out["b"].seconds) == 9 and calls == {"a": 10, "b": 10}
    slow = metrics.time_repeated_interleaved({"a": lambda: time.sleep(0.05)}, repeats=2, warmup=1, budget_s=0.01)
    assert len(slow["a"].seconds) == 2
