"""Kernels against plain numpy: top-k selection, dense scans, PQ scans."""

from __future__ import annotations

import numpy as np
import pytest

from vecstore.kernels import dispatch, flat, lists, pq, rescore, topk
from vecstore.kernels.dispatch import scan_dense

EMPTY = np.empty(0, dtype=np.float32)


def scan_pq8(lut, codes, bias, k, parts):
    return pq.scan_pq8(lut, codes, bias, dispatch.ALL_ROWS, k, parts)


def scan_pq4(lut, packed, bias, k, parts):
    """4-bit codes as the fallback scans them (no fast scan): fused pair tables, the 8-bit kernel."""
    return pq.scan_pq8(pq.pair_tables(lut, packed.shape[1]), packed, bias, dispatch.ALL_ROWS, k, parts)


def stable_topk(scores, k):
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, rows, axis=1), rows


@pytest.mark.parametrize("k", [1, 7, 64])
@pytest.mark.parametrize("n", [1, 50, 3000])
def test_push_block_equals_stable_sort(rng, k, n):
    k = min(k, n)
    scores = rng.integers(0, 5, size=(9, n)).astype(np.float32)  # many exact ties
    hs, hi, sizes = topk.empty_heaps(9, k)
    for start in range(0, n, 97):
        topk.push_block(scores[:, start:start + 97], EMPTY, start, hs, hi, sizes)
    topk.sort_heaps(hs, hi, sizes)
    ref_s, ref_i = stable_topk(scores, k)
    np.testing.assert_array_equal(hi, ref_i)
    np.testing.assert_array_equal(hs, ref_s)


@pytest.mark.parametrize("layout", ["f32", "f16", "i8"])
@pytest.mark.parametrize("nq", [1, 3, 40, 70])
@pytest.mark.parametrize("with_bias", [False, True])
def test_dense_scan_matches_numpy(rng, layout, nq, with_bias):
    n, d, k = 2500, 24, 10
    if layout == "i8":
        codes = rng.integers(-128, 128, size=(n, d)).astype(np.int8)
        xb = codes.astype(np.float32)
    else:
        xb = rng.standard_normal((n, d)).astype(np.float32)
        codes = xb.astype(np.float16) if layout == "f16" else xb
        xb = codes.astype(np.float32)
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32) if with_bias else EMPTY
    view = codes.view(np.uint16) if layout == "f16" else codes
    scores, rows = scan_dense(xq, view, bias, k, layout)
    ref = xq.astype(np.float64) @ xb.T.astype(np.float64) + (bias if with_bias else 0)
    ref_s, ref_i = stable_topk(ref, k)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-4, atol=1e-3)
    got = np.take_along_axis(ref, rows, axis=1)
    np.testing.assert_allclose(got, ref_s, rtol=1e-4, atol=1e-3)


def test_f16_widening_is_exact_for_every_finite_half():
    bits = np.arange(1 << 16, dtype=np.uint16)
    halves = bits.view(np.float16)
    finite = np.isfinite(halves)
    bits, halves = bits[finite], halves[finite]
    # score of a one-hot query against each single-value row is the widened value itself
    codes = bits.reshape(-1, 1)
    xq = np.ones((1, 1), dtype=np.float32)
    scores, rows = flat.scan_f16(xq, codes, EMPTY, codes.shape[0], 4)
    widened = np.empty(codes.shape[0], dtype=np.float32)
    widened[rows[0]] = scores[0]
    np.testing.assert_array_equal(widened, halves.astype(np.float32))


WIDEN_ALL_HALVES = """
import numba, numpy as np
from vecstore.kernels import half

@numba.njit
def widen_all(bits, out):
    for i in range(bits.shape[0]):
        out[i] = half.widen(bits[i])

bits = np.arange(1 << 16, dtype=np.uint16)
out = np.empty(1 << 16, dtype=np.float32)
widen_all(bits, out)
"""


def check_widened(out):
    """Every half widened as numpy widens it: finite ones (subnormals, -0 included) to the same float32
    bits, infinities to infinities, NaNs to NaNs of the same sign."""
    ref = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    finite, nan = np.isfinite(ref), np.isnan(ref)
    np.testing.assert_array_equal(out[finite].view(np.uint32), ref[finite].view(np.uint32))
    np.testing.assert_array_equal(out[~finite & ~nan], ref[~finite & ~nan])
    assert np.isnan(out[nan]).all()
    np.testing.assert_array_equal(np.signbit(out[nan]), np.signbit(ref[nan]))


def test_widen_is_ieee_for_every_half():
    scope = {}
    exec(WIDEN_ALL_HALVES, scope)
    check_widened(scope["out"])


def test_widen_without_f16c_is_ieee_for_every_half(tmp_path):
    """NUMBA_CPU_NAME=generic (no F16C): LLVM's fpext would call a compiler-rt function numba does
    not link, so half.widen spells the conversion out in integers; same values."""
    import os
    import subprocess
    import sys

    script = WIDEN_ALL_HALVES + f"assert not half.F16C\nnp.save({str(tmp_path / 'out.npy')!r}, out)\n"
    env = dict(os.environ, NUMBA_CPU_NAME="generic")
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=600)
    check_widened(np.load(tmp_path / "out.npy"))


@pytest.mark.parametrize("d", [1, 16, 383, 4096])
@pytest.mark.parametrize("with_bias", [False, True])
def test_rescoring_float16_equals_rescoring_its_float32_decode(rng, d, with_bias):
    """Bit for bit: a float16 tier ranks and scores as a float32 tier holding its decoded rows, and
    a damaged code (NaN, inf: an encoder never writes one) as a damaged float32 value (a NaN score
    ranks last, as -inf)."""
    xb = (rng.standard_normal((500, d)) * 3).astype(np.float16)
    xb[0, 0], xb[1, 0] = np.float16(6e-8), np.float16(-1e-5)  # subnormals
    xb[2, -1], xb[3, -1] = np.float16(np.nan), np.float16(np.inf)
    xq = rng.standard_normal((7, d)).astype(np.float32)
    cand = rng.integers(-1, 500, (7, 60)).astype(np.int64)
    cand[:, :4] = [0, 1, 2, 3]
    bias = rng.standard_normal(500).astype(np.float32) if with_bias else EMPTY
    for kernel in (rescore.rescore, rescore.rescore_serial):
        s16, r16 = kernel(xq, xb.view(np.uint16), 2, cand, bias, 10)
        s32, r32 = kernel(xq, xb.astype(np.float32), 0, cand, bias, 10)
        np.testing.assert_array_equal(r16, r32)
        np.testing.assert_array_equal(s16.view(np.uint32), s32.view(np.uint32))


@pytest.mark.parametrize("m", [1, 8, 15])
@pytest.mark.parametrize("nbits", [8, 4])
@pytest.mark.parametrize("nq", [1, 5])
def test_pq_scan_matches_lookup_sum(rng, m, nbits, nq):
    from vecstore.codecs.pq import pack_nibbles

    n, k, ksub = 3000, 12, 1 << nbits
    codes = rng.integers(0, ksub, size=(n, m)).astype(np.uint8)
    lut = rng.standard_normal((nq, m, ksub)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    ref = np.zeros((nq, n))
    for j in range(m):
        ref += lut[:, j, codes[:, j]]
    ref += bias
    kernel = scan_pq8 if nbits == 8 else scan_pq4
    packed = codes if nbits == 8 else pack_nibbles(codes)
    scores, rows = kernel(lut, packed, bias, k, 3)
    ref_s, ref_i = stable_topk(ref, k)
    np.testing.assert_allclose(scores, ref_s, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.take_along_axis(ref, rows, axis=1), ref_s, rtol=1e-4, atol=1e-4)


def test_kernels_cached_on_disk():
    """A second process must not recompile: every kernel is built with cache=True."""
    for kernel in (flat.scan_f32, flat.scan_f16, flat.scan_i8, pq.scan_pq8, pq.pair_tables,
                   topk.push_block, topk.sort_heaps):
        assert kernel._cache is not None and kernel.targetoptions.get("nogil"), kernel
        assert type(kernel._cache).__name__ == "FunctionCache", kernel


def test_second_process_loads_kernels_from_the_disk_cache(tmp_path):
    """Run the same search in two fresh processes: the second compiles nothing."""
    import subprocess
    import sys

    script = f"""
import numpy as np, vecstore
from vecstore.kernels import dispatch, flat, topk
dispatch.NUMPY_MAX_WORK = 0  # through the kernels, not numpy's small-scan path
x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
s = vecstore.build({str(tmp_path / "c.vs")!r}, x, overwrite=True, progress=False)
s.search(x[:2], 3)
st = flat.scan_f32.stats
print(sum(st.cache_hits.values()), sum(st.cache_misses.values()))
"""
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
            for _ in range(2)]
    hits, misses = map(int, runs[1].stdout.split())
    assert hits >= 1 and misses == 0, runs[1].stdout


def test_serial_and_parallel_compilations_keep_their_own_cache_entries(tmp_path):
    """One body compiled serial and parallel (kernels/compiled.py): in a fresh cache, the serial one
    compiled first must not be loaded for the parallel one (numba's cache does not key by
    ``parallel=``: before, the second compilation of a pair was a cache hit on the first's code)."""
    import os
    import subprocess
    import sys

    script = """
import numpy as np
from vecstore.kernels import topk
from vecstore.encoders import _kernels as E
s, i, n, _ = topk.partial_tops(1, 2, 5)
offsets, ids = np.array([0, 2], np.int64), np.array([0, 1], np.int32)
emb, none, out = np.ones((3, 4), np.float32), np.empty(0, np.float32), np.empty((1, 4), np.float32)
pairs = [(topk._merge_serial, topk._merge_parallel, (s, i, n, 5, True)),
         (E.weighted_mean_serial, E.weighted_mean_parallel, (offsets, ids, emb, none, 1, out)),
         (E.elman_serial, E.elman_parallel, (offsets, ids, emb, np.eye(4, dtype=np.float32), np.zeros(4, np.float32),
                                             True, 1, out))]
for serial, parallel, args in pairs:
    serial(*args)
    parallel(*args)
    print(sum(parallel.stats.cache_hits.values()), sum(parallel.stats.cache_misses.values()))
"""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0", "1"] * 3, out.stdout


@pytest.mark.parametrize("k", [1, 3, 10, 100, 1000, 3000])
@pytest.mark.parametrize("parts", [1, 3, 8])
def test_reservoir_top_k_equals_a_stable_sort_with_many_ties_and_large_k(k, parts):
    """Scores of small integers tie constantly; the reservoirs (kernels/topk.py) must keep the
    lower row on a tie and, for any k up to n, give exactly a stable descending sort."""
    rng = np.random.default_rng(k * 10 + parts)
    n, nq = 2500, 3
    xb = rng.integers(-2, 3, (n, 4)).astype(np.float32)
    xq = rng.integers(-2, 3, (nq, 4)).astype(np.float32)
    xb[17] = np.nan  # a damaged row ranks last, as -inf
    kk = min(k, n)
    scores = np.nan_to_num(xq @ xb.T, nan=-np.inf)
    expect = np.argsort(-scores, axis=1, kind="stable")[:, :kk]
    _, rows = flat.scan_f32(xq, xb, np.empty(0, np.float32), kk, parts)
    np.testing.assert_array_equal(rows, expect)
    lut = rng.integers(-3, 4, (nq, 2, 256)).astype(np.float32)
    codes = rng.integers(0, 256, (n, 2)).astype(np.uint8)
    pq_scores = lut[:, 0, codes[:, 0]] + lut[:, 1, codes[:, 1]]
    _, rows = pq.scan_pq8(lut, codes, np.empty(0, np.float32), dispatch.ALL_ROWS, kk, parts)
    np.testing.assert_array_equal(rows, np.argsort(-pq_scores, axis=1, kind="stable")[:, :kk])


@pytest.mark.parametrize("nlist, nprobe", [(256, 1), (256, 4), (256, 5), (256, 64), (256, 255), (256, 256), (7, 3)])
def test_nearest_lists_are_the_best_scores_ties_to_the_lower_list(nlist, nprobe):
    """lists.nearest_lists (a heap for few lists of many, a quickselect otherwise) against a
    stable sort, with scores of a few values so that ties decide most cuts."""
    rng = np.random.default_rng(nlist + nprobe)
    scores = rng.integers(-3, 4, (40, nlist)).astype(np.float32)
    scores[:3] = 0.0  # every list tied
    offsets = np.concatenate([[0], np.cumsum(rng.integers(0, 5, nlist))]).astype(np.int64)
    got = lists.nearest_lists(scores, nprobe, offsets)
    chosen = np.sort(np.argsort(-scores, axis=1, kind="stable")[:, :nprobe], axis=1)
    np.testing.assert_array_equal(got[:, :, 0], offsets[chosen])
    np.testing.assert_array_equal(got[:, :, 1], offsets[chosen + 1])


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("nq", [1, 63, 64, 130])
def test_batch_list_scores_equal_blas_up_to_summation_order(metric, nq):
    """dispatch.list_scores: numpy's BLAS for a few queries, lists.centroid_scores (tiles of four
    queries x four centroids, blocks of centroids, odd sizes at every edge) for a batch; both equal
    a float64 product to float32 summation error, and choose the same lists where scores are not
    that close."""
    from vecstore.codecs.ivf import IVF

    rng = np.random.default_rng(nq)
    ivf = IVF(dim=37, nlist=45)
    ivf.centroids_ = rng.standard_normal((45, 37)).astype("<f4")
    xq = rng.standard_normal((nq, 37)).astype(np.float32)
    got = dispatch.list_scores(xq, ivf, metric)
    exact = xq.astype(np.float64) @ ivf.centroids_.T.astype(np.float64)
    if metric == "l2":
        exact = 2 * exact - (ivf.centroids_.astype(np.float64) ** 2).sum(axis=1)
    assert got.shape == (nq, 45) and got.dtype == np.float32
    np.testing.assert_allclose(got, exact, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got, ivf.probe_scores(xq, metric), rtol=0, atol=1e-4)
    offsets = np.arange(46, dtype=np.int64)
    np.testing.assert_array_equal(lists.nearest_lists(got, 5, offsets), lists.nearest_lists(
        exact.astype(np.float32), 5, offsets))


@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("n", [1, 5, 64, 131])
def test_assignment_is_the_highest_list_score(metric, n):
    """dispatch.assign_lists (lists.nearest_centroids: tiles with a running best, odd sizes at every
    edge) files each row in the list of highest score by a float64 product, ties to the lower list."""
    from vecstore.codecs.ivf import IVF

    rng = np.random.default_rng(n)
    ivf = IVF(dim=37, nlist=45)
    ivf.centroids_ = rng.standard_normal((45, 37)).astype("<f4")
    ivf.centroids_[7] = ivf.centroids_[3]  # a tie: the lower list wins
    x = rng.standard_normal((n, 37)).astype(np.float32)
    x[0] = ivf.centroids_[3] * 3
    exact = x.astype(np.float64) @ ivf.centroids_.T.astype(np.float64)
    if metric == "l2":
        exact = 2 * exact - (ivf.centroids_.astype(np.float64) ** 2).sum(axis=1)
    got = dispatch.assign_lists(x, ivf, metric)
    assert got.dtype == np.int64 and got[0] == 3
    np.testing.assert_array_equal(got, np.argmax(exact, axis=1))


@pytest.mark.parametrize("n, top", [(0, 10), (1, 10), (640, 1_000_000), (700, 1 << 40), (50, 256), (300, 3)])
def test_rescoring_reads_candidates_in_the_order_np_sort_gives(n, top):
    """rescore._sorted_rows (a radix sort, a byte a pass) against np.sort: rows up to ``top``,
    repeated and -1 (no candidate) among them, -1s first."""
    rng = np.random.default_rng(n)
    rows = rng.integers(-1, top, n).astype(np.int64)
    rows[: n // 5] = -1
    rng.shuffle(rows)
    np.testing.assert_array_equal(rescore._sorted_rows(rows), np.sort(rows))
    np.testing.assert_array_equal(rescore._sorted_rows(np.full(n, -1, dtype=np.int64)), np.full(n, -1))


@pytest.mark.parametrize("nq", [1, 3, 7])
def test_project_equals_numpy(rng, nq):
    """The few-query projection (PCA's fold on numba's threads) is xq @ rows.T."""
    xq = rng.standard_normal((nq, 300)).astype(np.float32)
    rows = rng.standard_normal((37, 300)).astype(np.float32)
    np.testing.assert_allclose(flat.project(xq, rows), xq @ rows.T, rtol=1e-4, atol=1e-4)


def test_pca_fold_is_the_same_for_few_and_many_queries(rng):
    from vecstore.codecs import pca as pca_module

    pca = pca_module.PCA(64, 16).fit(rng.standard_normal((500, 64)).astype(np.float32))
    xq = rng.standard_normal((pca_module.FEW_QUERIES + 5, 64)).astype(np.float32)
    many, const_many = pca.fold_query(xq, np.zeros(xq.shape[0]))
    for i in range(3):
        one, const_one = pca.fold_query(xq[i:i + 1], np.zeros(1))
        np.testing.assert_allclose(one[0], many[i], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(const_one[0], const_many[i], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nparts", [1, 3])
@pytest.mark.parametrize("best_first", [True, False])
def test_serial_and_parallel_merges_agree(nparts, best_first):
    """topk.merge_partial runs a small merge serially and a large one in a parallel region (one
    body compiled twice): both give the same answer, with ties, partly filled reservoirs (padding
    -inf / -1) and a query whose reservoirs are empty; one part's are sorted where they are."""
    rng = np.random.default_rng(nparts * 2 + best_first)
    nq, k = 40, 25
    part_s, part_i, part_sizes, _ = topk.partial_tops(nparts, nq, k)
    for p in range(nparts):
        for q in range(nq - 1):  # the last query: every reservoir empty
            size = int(rng.integers(0, 2 * k + 1))
            part_s[p, q, :size] = rng.integers(-5, 5, size).astype(np.float32)
            part_i[p, q, :size] = rng.choice(10_000, size, replace=False) + p * 10_000
            part_sizes[p, q] = size
    copies = [(part_s.copy(), part_i.copy()) for _ in range(2)]
    serial = topk._merge_serial(*copies[0], part_sizes, k, best_first)
    parallel = topk._merge_parallel(*copies[1], part_sizes, k, best_first)
    np.testing.assert_array_equal(serial[0], parallel[0])
    np.testing.assert_array_equal(serial[1], parallel[1])
    assert (serial[1][nq - 1] == -1).all() and (serial[0][nq - 1] == -np.inf).all()
    for q in range(nq - 1):
        items = sorted(((-s, r) for p in range(nparts) for s, r in
                        zip(part_s[p, q, :part_sizes[p, q]], part_i[p, q, :part_sizes[p, q]])))[:k]
        got = [(-s, r) for s, r in zip(serial[0][q], serial[1][q]) if r >= 0]
        assert sorted(got) == sorted(items) if not best_first else got == items
