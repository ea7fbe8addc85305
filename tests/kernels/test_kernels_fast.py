"""The SIMD PQ kernels (4-bit fast scan, grouped 8-bit scan) against the scalar kernels and numpy.

They are speed paths, not approximations: the scores are the float ADC scores (to float32 rounding:
the additions are grouped differently), so the rows are those of the float scan, and exactly those
(ties to the lower row) when the tables hold small integers and every sum is exact.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from vecstore.codecs.pq import pack_nibbles
from vecstore.kernels import fastscan, pq
from vecstore.kernels.dispatch import ALL_ROWS, pq_parts

EMPTY = np.empty(0, dtype=np.float32)
needs_simd = pytest.mark.skipif(not fastscan.LAYOUT, reason="no AVX2 on this machine: the fast scan is off")


def assert_same_top_k(scores, rows, ref_scores_all, k):
    """scores/rows are a top-k of ref_scores_all (nq, n) up to float32 rounding of near-ties."""
    expect = -np.sort(-ref_scores_all, axis=1)[:, :k]
    np.testing.assert_allclose(scores, expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(ref_scores_all, rows, axis=1), expect, rtol=1e-5, atol=1e-5)
    assert all(len(set(r)) == len(r) for r in rows.tolist())


def fast_scan(lut, packed, bias, k, parts, exact=True):
    blocked = fastscan.to_blocked(packed, lut.shape[1])
    tables = fastscan.quantize_tables(lut)
    return fastscan.scan_pq4_fast(lut, *tables, blocked, packed, bias, *fastscan.bias_bounds(bias, packed.shape[0]),
                                  fastscan.ALL_ROWS_ALLOWED, k, parts, exact)


def test_blocked_layout_follows_the_documented_byte_order(rng):
    """Sub-quantizer j of block b: HALF bytes at (b * msq + j) * HALF, byte t holding row
    b * BLOCK + t (low nibble) and row b * BLOCK + HALF + t (high); m padded to even, rows to whole
    blocks, both with zero codes."""
    block, half = fastscan.BLOCK, fastscan.HALF
    n, m = 2 * block + 5, 7
    codes = rng.integers(0, 16, (n, m)).astype(np.uint8)
    blocked = fastscan.to_blocked(pack_nibbles(codes), m)
    nblocks, msq = 3, 8
    full = np.zeros((nblocks * block, msq), dtype=np.uint8)
    full[:n, :m] = codes
    expect = np.zeros((nblocks, msq, half), dtype=np.uint8)
    for b in range(nblocks):
        rows = full[block * b:block * (b + 1)]
        for j in range(msq):
            expect[b, j] = rows[:half, j] | (rows[half:, j] << 4)
    np.testing.assert_array_equal(blocked, expect.reshape(-1))


def test_quantised_tables_repeat_each_table_and_bound_every_score(rng):
    """Table j: its 16 levels (0..LEVELS) repeated over HALF bytes at j * HALF; and
    |score - (base + S / scale)| <= m / (2 scale), the bound the scan's filter relies on."""
    nq, m, n = 4, 9, 500
    lut = (rng.standard_normal((nq, m, 16)) * rng.uniform(0.01, 100, (nq, m, 1))).astype(np.float32)
    codes = rng.integers(0, 16, (n, m)).astype(np.uint8)
    lut8, base, scale, _ = fastscan.quantize_tables(lut)
    tables = lut8.reshape(nq, m + 1, fastscan.HALF // 16, 16)
    assert (tables == tables[:, :, :1]).all() and not tables[:, m].any()
    table8 = tables[:, :m, 0]
    assert table8.max() == fastscan.LEVELS and (table8.min(axis=2) == 0).all()
    for q in range(nq):
        exact = lut[q][np.arange(m), codes].sum(axis=1, dtype=np.float64)
        approx = base[q] + table8[q][np.arange(m), codes].sum(axis=1) / scale[q]
        assert np.abs(exact - approx).max() <= m / (2 * scale[q]) + 1e-9
    for serial, parallel in zip(fastscan.quantize_tables(lut), fastscan.quantize_tables_parallel(lut)):
        np.testing.assert_array_equal(serial, parallel)


@needs_simd
@pytest.mark.parametrize("n, m, nq, k", [
    (1000, 8, 3, 5), (1000, 7, 9, 5), (5000, 128, 20, 10), (3000, 300, 5, 10), (3000, 301, 3, 50),
    (37, 6, 2, 40), (2000, 16, 2, 2000), (20000, 64, 1, 1280)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fast_scan_equals_the_float_scan(rng, n, m, nq, k, with_bias):
    """Odd m, more than 256 sub-quantizers (several passes), a partial last block, k > n, k = n and
    the k x oversample of a two-stage search."""
    codes = rng.integers(0, 16, (n, m)).astype(np.uint8)
    packed = pack_nibbles(codes)
    lut = rng.standard_normal((nq, m, 16)).astype(np.float32)
    bias = (-3 * rng.random(n)).astype(np.float32) if with_bias else EMPTY
    kk = min(k, n)
    parts = pq_parts(nq, n, kk, fastscan.QUERY_GROUP)
    s_fast, r_fast = fast_scan(lut, packed, bias, kk, parts)
    ref = sum(lut[:, j, codes[:, j]].astype(np.float64) for j in range(m)) + (bias if with_bias else 0)
    assert_same_top_k(s_fast, r_fast, ref, kk)


def _quantised_scores(lut, codes):
    """float32(base + S / scale) of every row (nq, n), by the documented quantisation."""
    nq, m = lut.shape[0], codes.shape[1]
    lut8, base, scale, _ = fastscan.quantize_tables(lut)
    table8 = lut8.reshape(nq, -1, fastscan.HALF // 16, 16)[:, :m, 0].astype(np.int64)
    sums = sum(table8[:, j, codes[:, j]] for j in range(m))
    return (base[:, None] + sums / scale[:, None]).astype(np.float32)


@needs_simd
@pytest.mark.parametrize("n, m, nq, k", [(1000, 8, 3, 5), (5000, 96, 4, 40), (3000, 301, 2, 50), (37, 6, 2, 40)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_candidate_scan_ranks_by_the_quantised_scores(rng, n, m, nq, k, with_bias):
    """exact=False (the candidates of a two-stage search): the top k of base + S / scale (+ bias),
    S the sum of the byte tables, computed here from the documented quantisation."""
    codes = rng.integers(0, 16, (n, m)).astype(np.uint8)
    lut = rng.standard_normal((nq, m, 16)).astype(np.float32)
    bias = (-3 * rng.random(n)).astype(np.float32) if with_bias else EMPTY
    kk = min(k, n)
    scores, rows = fast_scan(lut, pack_nibbles(codes), bias, kk, pq_parts(nq, n, kk, fastscan.QUERY_GROUP),
                             exact=False)
    approx = _quantised_scores(lut, codes) + (bias if with_bias else 0)
    for q in range(nq):
        want = np.argsort(-approx[q], kind="stable")[:kk]
        np.testing.assert_allclose(scores[q], approx[q][want], rtol=1e-6, atol=1e-6)
        kth = approx[q][want[-1]]
        assert (approx[q][rows[q]] >= kth - 1e-6).all()   # ties at the k-th may pick either row
    assert all(len(set(r)) == len(r) for r in rows.tolist())


@pytest.mark.parametrize("n, m, nq, k", [(1000, 8, 3, 5), (5000, 96, 2, 40), (3000, 301, 2, 50), (37, 6, 2, 40)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_quantised_scan_without_simd_selects_the_fast_scans_candidates(rng, n, m, nq, k, with_bias):
    """A CPU without the fast scan ranks a two-stage search's candidates by the same quantised
    scores (docs/format.md): the row-by-row kernel against the fast scan, row for row and bit for bit."""
    codes = rng.integers(0, 16, (n, m)).astype(np.uint8)
    packed = pack_nibbles(codes)
    lut = rng.standard_normal((nq, m, 16)).astype(np.float32)
    bias = (-3 * rng.random(n)).astype(np.float32) if with_bias else EMPTY
    kk = min(k, n)
    lut8, base, scale, _ = fastscan.quantize_tables(lut)
    slow = fastscan.scan_pq4_quantised(lut8, base, scale, packed, m, bias, kk, 3)
    approx = _quantised_scores(lut, codes) + (bias if with_bias else 0)
    want = np.argsort(-approx, axis=1, kind="stable")[:, :kk]
    np.testing.assert_array_equal(slow[1], want)
    np.testing.assert_array_equal(slow[0], np.take_along_axis(approx, want, axis=1))
    if fastscan.LAYOUT:
        fast = fast_scan(lut, packed, bias, kk, 3, exact=False)
        np.testing.assert_array_equal(fast[1], slow[1])
        np.testing.assert_array_equal(fast[0], slow[0])


@needs_simd
@pytest.mark.parametrize("k", [1, 10, 40, 100])
@pytest.mark.parametrize("filtered", [False, True])
@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("with_bias", [False, True])
def test_candidate_scan_from_a_sampled_floor_selects_the_same_rows(k, filtered, parts, with_bias):
    """A candidate scan of enough blocks starts its reservoir at the score a sample of its blocks'
    k-th best row reaches (fastscan._sample_floor; with a bias, an l2 store, a score floor:
    fastscan._sample_score_floor). Its candidates are still the top k by the quantised scores
    (float32(base + S / scale), + bias), ties to the lower row: row for row against a stable sort,
    with ties everywhere (three code values, integer tables and biases), and with a query whose
    tables are nearly constant, so that different integer sums round to the same float32 score."""
    rng = np.random.default_rng(k + 7 if with_bias else k)
    n, m = 20_000 + 37, 16
    codes = rng.integers(0, 3, (n, m)).astype(np.uint8)
    packed = pack_nibbles(codes)
    lut = np.stack([rng.integers(-3, 4, (m, 16)).astype(np.float32),
                    (1.0 + 2.0 ** -20 * rng.integers(0, 8, (m, 16))).astype(np.float32)])
    bias = -rng.integers(0, 3, n).astype(np.float32) if with_bias else EMPTY
    allow = rng.random(n) < 0.3 if filtered else np.ones(n, dtype=bool)
    blocked = fastscan.to_blocked(packed, m)
    lut8, base, scale, margin = fastscan.quantize_tables(lut)
    allowed = fastscan.block_allow(allow.astype(np.uint8), n) if filtered else fastscan.ALL_ROWS_ALLOWED
    scores, rows = fastscan.scan_pq4_fast(lut, lut8, base, scale, margin, blocked, packed, bias,
                                          *fastscan.bias_bounds(bias, n), allowed, k, parts, False)
    approx = _quantised_scores(lut, codes) + (bias if with_bias else 0)
    msq = fastscan.padded_subquantizers(m)
    sample = (blocked, 0, -(-n // fastscan.BLOCK), n, msq, lut8.reshape(-1))
    scratch = (fastscan._filter_words(allowed, filtered), filtered, k, np.empty(fastscan.BLOCK, np.uint16),
               np.zeros(max(1, fastscan.BLOCK // 64), np.uint64),
               np.zeros(fastscan.FLOOR_BUCKETS + fastscan.SPARE_BUCKETS, np.int32))
    for q in range(2):
        ranked = np.flatnonzero(allow)[np.argsort(-approx[q][allow], kind="stable")][:k]
        np.testing.assert_array_equal(rows[q], ranked)
        np.testing.assert_array_equal(scores[q], approx[q][ranked])
        if with_bias:
            floor = fastscan._sample_score_floor(*sample, q * msq * fastscan.HALF, *scratch, base[q], scale[q], bias,
                                                 np.empty(max(fastscan.SAMPLE_ROWS, 16 * k) + fastscan.BLOCK,
                                                          np.float32))
            assert -np.inf < floor <= approx[q][ranked[-1]]  # a floor was used, and the k-th best passes it
        else:
            floor = fastscan._sample_floor(*sample, q * msq * fastscan.HALF, *scratch, base[q], scale[q])
            if q == 0:
                assert floor > 0  # the scan above started from a floor


@needs_simd
@pytest.mark.parametrize("k", [1, 10, 300])
def test_fast_scan_keeps_the_lower_row_on_ties(k):
    """Integer tables and repeated codes tie constantly: the results are a stable sort."""
    rng = np.random.default_rng(k)
    n, m, nq = 3000, 4, 3
    codes = rng.integers(0, 3, (n, m)).astype(np.uint8)
    lut = rng.integers(-2, 3, (nq, m, 16)).astype(np.float32)
    scores = sum(lut[:, j, codes[:, j]] for j in range(m))
    _, rows = fast_scan(lut, pack_nibbles(codes), EMPTY, k, 3)
    np.testing.assert_array_equal(rows, np.argsort(-scores, axis=1, kind="stable")[:, :k])


@needs_simd
def test_fast_scan_with_flat_tables_and_tiny_ranges(rng):
    """All-equal tables (no range to quantise) and tables whose spread is far below their magnitude
    (float32 rounding larger than a quantisation step) still give the float scan's rows."""
    n, m = 4000, 32
    codes = rng.integers(0, 16, (n, m)).astype(np.uint8)
    packed = pack_nibbles(codes)
    flat = np.full((1, m, 16), 0.5, dtype=np.float32)
    _, rows = fast_scan(flat, packed, EMPTY, 10, 2)
    np.testing.assert_array_equal(rows[0], np.arange(10))
    narrow = (1000 + 1e-3 * rng.standard_normal((2, m, 16))).astype(np.float32)
    s_fast, r_fast = fast_scan(narrow, packed, EMPTY, 10, 2)
    ref = sum(narrow[:, j, codes[:, j]].astype(np.float64) for j in range(m))
    np.testing.assert_allclose(np.take_along_axis(ref, r_fast, axis=1), -np.sort(-ref, axis=1)[:, :10],
                               rtol=0, atol=32 * 1000 * 2 ** -23)  # m additions of float32 ~1000


def _tied_tier(rng, n, m, nq, with_bias):
    """A 4-bit tier of codes 0-2 and small integer tables (ties everywhere: positions decide them),
    as scan_pq4_lists takes it: (lut, quantised tables, blocked, packed, bias, its bounds)."""
    codes = rng.integers(0, 3, (n, m)).astype(np.uint8)
    packed = pack_nibbles(codes)
    lut = rng.integers(-2, 3, (nq, m, 16)).astype(np.float32)
    bias = (-rng.integers(0, 3, n)).astype(np.float32) if with_bias else EMPTY
    blocked = fastscan.to_blocked(packed, m)
    return lut, fastscan.quantize_tables(lut), blocked, packed, bias, fastscan.bias_bounds(bias, n)


@needs_simd
@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("with_bias", [False, True])
def test_list_scan_in_any_order_selects_the_best_first_rows(rng, exact, with_bias):
    """scan_pq4_lists with best_first=False (an inverted-file tier's candidates for rescoring):
    per query the rows and scores of the best-first scan, in another order, padding last. Small
    integer tables tie constantly, so ties to the lower position decide the cut."""
    n, m, nq, k = 3000, 6, 5, 200
    lut, tables, blocked, packed, bias, bias_bounds = _tied_tier(rng, n, m, nq, with_bias)
    bounds = np.sort(rng.choice(np.arange(1, n), 2 * 3, replace=False)).reshape(1, 3, 2)
    ranges = np.repeat(bounds, nq, axis=0).astype(np.int64)
    ranges[1, :, 1] = ranges[1, :, 0] + 20  # a query whose lists hold fewer than k rows: padded
    args = (lut, *tables, blocked, packed, bias, *bias_bounds, fastscan.ALL_ROWS_ALLOWED, ranges,
            fastscan.list_major(ranges), 2, k, exact)
    ordered = fastscan.scan_pq4_lists(*args, True)
    loose = fastscan.scan_pq4_lists(*args, False)
    for q in range(nq):
        got = int((ordered[1][q] >= 0).sum())
        assert (loose[1][q, got:] == -1).all() and (ordered[1][q, got:] == -1).all()
        assert dict(zip(ordered[1][q, :got].tolist(), ordered[0][q, :got].tolist())) == \
            dict(zip(loose[1][q, :got].tolist(), loose[0][q, :got].tolist()))
    assert int((ordered[1][1] >= 0).sum()) == 60
    assert (loose[1] != ordered[1]).any()  # (else the test shows nothing)


def _probed_ranges(rng, nq, nlist, nprobe, n):
    """Each query's ``nprobe`` of ``nlist`` random lists over n positions, as [start, stop) in list order."""
    offsets = np.concatenate([[0], np.sort(rng.choice(np.arange(1, n), nlist - 1, replace=False)), [n]])
    lists = np.sort(np.stack([rng.choice(nlist, nprobe, replace=False) for _ in range(nq)]), axis=1)
    return np.stack([offsets[lists], offsets[lists + 1]], axis=2).astype(np.int64)


@needs_simd
@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("best_first", [True, False])
def test_list_major_scan_answers_as_each_query_alone_on_any_threads(rng, exact, best_first):
    """scan_pq4_lists cuts the queries into groups (one per thread) and scans each group's (query,
    list) pairs list by list: each query's answer is the one it gets alone, bit for bit, whatever
    the groups, with many queries sharing lists (small integer tables: ties everywhere, decided by
    the lower position)."""
    import numba

    n, m, nq, k, nlist, nprobe = 6000, 6, 40, 50, 30, 7
    lut, tables, blocked, packed, bias, bias_bounds = _tied_tier(rng, n, m, nq, True)
    ranges = _probed_ranges(rng, nq, nlist, nprobe, n)
    order = fastscan.list_major(ranges)
    starts = ranges[:, :, 0].ravel()[order]
    assert (np.diff(starts) >= 0).all() and not (np.diff(order) > 0).all()  # list by list, not query by query

    def scan(q0, q1, parts):
        previous = numba.get_num_threads()
        numba.set_num_threads(min(parts, numba.config.NUMBA_NUM_THREADS))
        try:
            sub = ranges[q0:q1]
            return fastscan.scan_pq4_lists(lut[q0:q1], *(t[q0:q1] for t in tables), blocked, packed,
                                           bias, *bias_bounds, fastscan.ALL_ROWS_ALLOWED, sub, fastscan.list_major(sub),
                                           parts, k, exact, best_first)
        finally:
            numba.set_num_threads(previous)

    alone = [scan(q, q + 1, 1) for q in range(nq)]
    for parts in (1, 2, 3):
        scores, rows = scan(0, nq, parts)
        for q in range(nq):
            if best_first:
                np.testing.assert_array_equal(rows[q], alone[q][1][0])
                np.testing.assert_array_equal(scores[q], alone[q][0][0])
            else:
                assert dict(zip(rows[q].tolist(), scores[q].tolist())) == \
                    dict(zip(alone[q][1][0].tolist(), alone[q][0][0].tolist()))


@needs_simd
@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("with_bias", [False, True])
def test_list_scan_answers_the_same_in_any_order_of_lists(rng, exact, with_bias):
    """The pairs may come in any order (one query's best list first, as the fused path orders them):
    rows then reach the reservoir out of position order, and ties with its threshold are admitted
    by the lower row, so the answer is the list-major one bit for bit (small integer tables: ties
    everywhere)."""
    n, m, nq, k, nlist, nprobe = 6000, 6, 12, 50, 30, 9
    lut, tables, blocked, packed, bias, bias_bounds = _tied_tier(rng, n, m, nq, with_bias)
    ranges = _probed_ranges(rng, nq, nlist, nprobe, n)
    args = (lut, *tables, blocked, packed, bias, *bias_bounds, fastscan.ALL_ROWS_ALLOWED, ranges)
    expect = fastscan.scan_pq4_lists(*args, fastscan.list_major(ranges), 1, k, exact, True)
    for seed in range(3):
        shuffled = np.random.default_rng(seed).permutation(nq * nprobe)
        got = fastscan.scan_pq4_lists(*args, shuffled, 1, k, exact, True)
        np.testing.assert_array_equal(got[1], expect[1])
        np.testing.assert_array_equal(got[0], expect[0])


@pytest.mark.parametrize("n, m, nq, k", [(1000, 8, 4, 5), (1000, 7, 17, 5), (5000, 64, 40, 10),
                                         (37, 6, 5, 40), (20000, 48, 33, 500)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_grouped_pq8_scan_equals_the_scalar_scan(rng, n, m, nq, k, with_bias):
    codes = rng.integers(0, 256, (n, m)).astype(np.uint8)
    lut = rng.standard_normal((nq, m, 256)).astype(np.float32)
    bias = (-3 * rng.random(n)).astype(np.float32) if with_bias else EMPTY
    kk = min(k, n)
    s_grp, r_grp = pq.scan_pq8_grouped(lut, codes, bias, ALL_ROWS, kk, pq_parts(nq, n, kk, pq.GROUP))
    ref = sum(lut[:, j, codes[:, j]].astype(np.float64) for j in range(m)) + (bias if with_bias else 0)
    assert_same_top_k(s_grp, r_grp, ref, kk)
    s_one, r_one = pq.scan_pq8(lut, codes, bias, ALL_ROWS, kk, pq_parts(nq, n, kk, pq.QUERY_GROUP))
    np.testing.assert_array_equal(r_grp, r_one)  # the same additions in the same order: bit-identical
    np.testing.assert_array_equal(s_grp, s_one)


@pytest.mark.parametrize("k", [1, 10, 300])
def test_grouped_pq8_scan_keeps_the_lower_row_on_ties(k):
    rng = np.random.default_rng(k)
    n, m, nq = 3000, 3, 21
    codes = rng.integers(0, 4, (n, m)).astype(np.uint8)
    lut = rng.integers(-2, 3, (nq, m, 256)).astype(np.float32)
    scores = sum(lut[:, j, codes[:, j]] for j in range(m))
    _, rows = pq.scan_pq8_grouped(lut, codes, EMPTY, ALL_ROWS, k, 3)
    np.testing.assert_array_equal(rows, np.argsort(-scores, axis=1, kind="stable")[:, :k])


def test_fast_kernels_are_cached_on_disk():
    for kernel in (fastscan.scan_pq4_fast, fastscan.to_blocked, fastscan.quantize_tables,
                   fastscan.quantize_tables_parallel, fastscan.block_max,
                   pq.scan_pq8_grouped):
        assert type(kernel._cache).__name__ == "FunctionCache" and kernel.targetoptions.get("nogil"), kernel


@pytest.mark.skipif(fastscan.LAYOUT != "vbmi", reason="the AVX2 path is the default here")
def test_avx2_fast_scan_in_a_process_compiling_for_avx2():
    """On an AVX-512 VBMI machine the AVX2 kernel is otherwise never run: compile for Haswell + AVX2
    in a child (its own cache entries) and compare with numpy there."""
    script = """
import numpy as np
from vecstore.codecs.pq import pack_nibbles
from vecstore.kernels import fastscan
assert fastscan.LAYOUT == "avx2" and fastscan.BLOCK == 32, fastscan.LAYOUT
rng = np.random.default_rng(5)
for n, m, bias_on in ((3000, 9, False), (5000, 128, True), (2000, 300, False)):
    raw = rng.integers(0, 16, (n, m)).astype(np.uint8)
    codes = pack_nibbles(raw)
    lut = rng.standard_normal((5, m, 16)).astype(np.float32)
    bias = (-rng.random(n)).astype(np.float32) if bias_on else np.empty(0, np.float32)
    bounds = fastscan.bias_bounds(bias, n)
    got = fastscan.scan_pq4_fast(lut, *fastscan.quantize_tables(lut), fastscan.to_blocked(codes, m),
                                 codes, bias, *bounds, fastscan.ALL_ROWS_ALLOWED, 20, 3, True)[1]
    ref = sum(lut[:, j, raw[:, j]].astype(np.float64) for j in range(m)) + (bias if bias_on else 0)
    expect = -np.sort(-ref, axis=1)[:, :20]
    assert np.allclose(np.take_along_axis(ref, got, axis=1), expect, rtol=1e-5, atol=1e-5), (n, m)
    # a filter (its bits in the block kernel): exact scores, and candidates by quantised sums
    allow = (rng.random(n) < 0.3).astype(np.uint8)
    words = fastscan.block_allow(allow, n)
    for exact in (True, False):
        got = fastscan.scan_pq4_fast(lut, *fastscan.quantize_tables(lut), fastscan.to_blocked(codes, m),
                                     codes, bias, *bounds, words, 20, 3, exact)[1]
        assert allow[got].all(), (n, m, exact)
        masked = np.where(allow.astype(bool), ref, -np.inf)
        expect = -np.sort(-masked, axis=1)[:, :20]
        tol = 1e-5 if exact else m / 2 / fastscan.quantize_tables(lut)[2][:, None] + 1e-4
        assert (np.take_along_axis(masked, got, axis=1) >= expect[:, -1:] - 2 * tol).all(), (n, m, exact)
        if exact:
            assert np.allclose(np.take_along_axis(ref, got, axis=1), expect, rtol=1e-5, atol=1e-5), (n, m)
print("ok")
"""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="+avx2")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_store_search_gives_the_same_results_on_every_pq_path(tmp_path, monkeypatch):
    """Through the public API: a 4-bit tier with and without the fast scan, an 8-bit tier in batches
    (grouped) and one query at a time; l2, so the per-row norms take part."""
    import vecstore
    from vecstore.kernels import dispatch

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 32)).astype(np.float32)
    path = str(tmp_path / "p.vs")
    vecstore.build(path, x, metric="l2", progress=False).close()
    vecstore.compress(path, "pq16x4", progress=False).close()
    vecstore.compress(path, "pq8", progress=False).close()
    xq = rng.standard_normal((20, 32)).astype(np.float32)
    with vecstore.open(path) as store:
        fast = store.search(xq, 10, tier="pq16x4")
        nblocks = -(-3000 // fastscan.BLOCK)
        # the blocks, each block's largest bias (float64) and each row's gap below it (a byte)
        expect = nblocks * 16 * fastscan.HALF + nblocks * 8 + nblocks * fastscan.BLOCK if fastscan.LAYOUT else 0
        assert store.tier("pq16x4").memory()["fastscan_bytes"] == expect
        monkeypatch.setattr(dispatch, "FAST_SCAN", False)
        slow = store.search(xq, 10, tier="pq16x4")
        grouped = store.search(xq, 10, tier="pq8")
        single = [store.search(q, 10, tier="pq8") for q in xq]
    np.testing.assert_array_equal(fast.ids, slow.ids)
    np.testing.assert_allclose(fast.distances, slow.distances, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(grouped.ids, np.vstack([s.ids for s in single]))
    np.testing.assert_allclose(grouped.distances, np.vstack([s.distances for s in single]), rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def limited_block():
    """A compiled call of fastscan._block_sums_limited on block 0: (sums, masks)."""
    import numba as nb

    @nb.njit
    def call(blocked, lut8, msq, cut, gaps, factor, allow):
        chunk = np.empty(fastscan.BLOCK, dtype=np.uint16)
        masks = np.zeros(max(1, fastscan.BLOCK // 64), dtype=np.uint64)
        fastscan._block_sums_limited(blocked, 0, lut8, 0, msq, np.uint16(cut), chunk, masks, allow, 0, gaps, 0,
                                     np.uint16(factor))
        return chunk, masks

    return call


@needs_simd
@pytest.mark.parametrize("cut, factor", [(0, 0), (900, 700), (1500, 300), (2000, 65535), (65000, 4000), (65535, 9)])
def test_row_limits_raise_each_rows_cut_by_its_gap(limited_block, cut, factor):
    """_block_sums_limited: row t is a candidate exactly when its sum exceeds min(65535, cut +
    (gap_t x factor) >> 8) and the filter admits it, in every lane of both halves of the block."""
    assert fastscan.LAYOUT == os.environ.get("VECSTORE_TEST_LAYOUT", fastscan.LAYOUT)  # (the AVX2 child below)
    rng = np.random.default_rng(cut + factor)
    m = 2 * fastscan.SQ_STEP * 8
    packed = pack_nibbles(rng.integers(0, 16, (fastscan.BLOCK, m)).astype(np.uint8))
    lut8 = fastscan.quantize_tables(rng.standard_normal((1, m, 16)).astype(np.float32))[0]
    gaps = rng.integers(0, 256, fastscan.BLOCK).astype(np.uint8)
    gaps[:4] = (0, 255, 1, 128)
    allow = fastscan.block_allow((rng.random(fastscan.BLOCK) < 0.8).astype(np.uint8), fastscan.BLOCK).reshape(-1)
    sums, masks = limited_block(fastscan.to_blocked(packed, m), lut8, fastscan.padded_subquantizers(m), cut, gaps,
                                factor, allow)
    assert 0 < sums.max() < 65535
    limits = np.minimum(65535, cut + ((gaps.astype(np.int64) << 8) * factor >> 16))
    admitted = np.unpackbits(allow.view(np.uint8), bitorder="little")[:fastscan.BLOCK].astype(bool)
    expect = (sums > limits) & admitted
    got = np.unpackbits(masks.view(np.uint8), bitorder="little")[:fastscan.BLOCK].astype(bool)
    np.testing.assert_array_equal(got, expect)
    assert (sums[~admitted] == 0).all()


@pytest.mark.skipif(fastscan.LAYOUT != "vbmi", reason="the AVX2 path is the default here")
def test_row_limits_in_a_process_compiling_for_avx2():
    """The AVX2 block kernel's row limits (16 rows a half, not 64) lane by lane: the test above, in a
    child compiling for Haswell + AVX2. (A whole scan's test could miss a lane taking another's gap:
    an exact scan's slack of m / 2 integer units hides small errors.)"""
    env = dict(os.environ, NUMBA_CPU_NAME="haswell", NUMBA_CPU_FEATURES="+avx2", VECSTORE_TEST_LAYOUT="avx2")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__, "-k",
           "test_row_limits_raise_each_rows_cut_by_its_gap"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=os.path.dirname(__file__))
    assert out.returncode == 0 and "6 passed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]


@pytest.mark.parametrize("outlier", [False, True])
def test_bias_gaps_never_exceed_a_rows_own_gap(rng, outlier):
    """Each row's gap below its block's largest bias, in uint8 units: never more than the true gap
    (the scan may only raise a row's cut by less than its own bias allows), within one unit of it
    or GAP_LEVELS, 0 for a NaN row, the rows of a block whose largest is NaN (+inf) and the padding;
    one outlying norm saturates alone instead of making the unit so coarse that every other gap is
    0; and the factor that turns gaps into integer units never exceeds unit x scale."""
    n = 5 * fastscan.BLOCK + 17
    bias = (-3 * rng.random(n)).astype(np.float32)
    bias[3] = np.nan  # its block's largest counts as +inf: every gap there is 0
    if outlier:
        bias[fastscan.BLOCK + 5] = -1e30
    bias_max, gaps, unit = fastscan.bias_bounds(bias, n)
    assert gaps.shape == (6 * fastscan.BLOCK,) and gaps.dtype == np.uint8
    true = np.repeat(bias_max, fastscan.BLOCK)[:n] - bias.astype(np.float64)
    finite = np.isfinite(true)
    ordinary = finite & (true < 10)
    assert true[ordinary].max() / 255 * 0.99 <= unit <= true[ordinary].max() / 255 * 1.1
    assert (gaps[:n][finite] * unit <= true[finite]).all()
    assert (gaps[:n][finite] * unit > np.minimum(true[finite], 255 * unit) - unit).all()
    assert np.count_nonzero(gaps[:n][ordinary]) >= 0.9 * np.count_nonzero(true[ordinary] >= unit)
    assert gaps[fastscan.BLOCK + 5] == (255 if outlier else gaps[fastscan.BLOCK + 5])
    assert (gaps[:fastscan.BLOCK] == 0).all() and (gaps[n:] == 0).all()
    for unit in (1e-4, 0.3 / 255, 1.0):
        for scale in (1e-3, 0.7, 21.3, 2000.0, 1e9):
            factor = int(fastscan._gap_factor(unit, scale))
            assert (255 * factor) >> 8 <= 255 * unit * scale
            assert factor == min(65535, int(unit * scale * 256)) or factor == int(unit * scale * 256) - 1
    assert fastscan._gap_factor(0.0, 2000.0) == 0
    assert fastscan.bias_bounds(np.full(n, -1.0, np.float32), n)[2] == 0.0  # equal biases: no gaps


@needs_simd
@pytest.mark.parametrize("kind", ["tied", "wide", "special"])
@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize("filtered", [False, True])
def test_per_row_limits_leave_the_scans_answer_unchanged(kind, exact, filtered):
    """scan_pq4_fast and scan_pq4_lists with each row's gap (fastscan.bias_gaps) and with none
    (one cut a block): the same rows and scores, bit for bit, with biases spread widely, tied
    integer tables, and NaN, +-inf and outlying biases; 1 and 3 parts, k from 1 to 100."""
    rng = np.random.default_rng(["tied", "wide", "special"].index(kind) * 4 + 2 * exact + filtered)
    n, m, nq = 3001, 24, 4
    if kind == "tied":
        codes = rng.integers(0, 3, (n, m)).astype(np.uint8)
        lut = rng.integers(-2, 3, (nq, m, 16)).astype(np.float32)
        bias = (-rng.integers(0, 4, n)).astype(np.float32)
    else:
        codes = rng.integers(0, 16, (n, m)).astype(np.uint8)
        lut = rng.standard_normal((nq, m, 16)).astype(np.float32)
        bias = (-rng.random(n) * (30 if kind == "wide" else 5)).astype(np.float32)
        if kind == "special":
            bias[rng.choice(n, 6, replace=False)] = (np.nan, np.nan, -np.inf, np.inf, -1e30, 3.0)
    packed = pack_nibbles(codes)
    blocked = fastscan.to_blocked(packed, m)
    tables = fastscan.quantize_tables(lut)
    bias_max, gaps, unit = fastscan.bias_bounds(bias, n)
    assert np.count_nonzero(gaps) > n // 2 and fastscan._gap_factor(unit, tables[2][0]) > 0  # the limits act
    allowed = fastscan.block_allow((rng.random(n) < 0.4).astype(np.uint8), n) if filtered else fastscan.ALL_ROWS_ALLOWED
    bounds = np.sort(rng.choice(np.arange(1, n), 14, replace=False)).reshape(1, 7, 2)
    ranges = np.repeat(bounds, nq, axis=0).astype(np.int64)
    for k in (1, 10, 100):
        for parts in (1, 3):
            got = fastscan.scan_pq4_fast(lut, *tables, blocked, packed, bias, bias_max, gaps, unit, allowed, k, parts,
                                         exact)
            want = fastscan.scan_pq4_fast(lut, *tables, blocked, packed, bias, bias_max, gaps, 0.0, allowed, k, parts,
                                          exact)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])
        if not filtered:
            args = (fastscan.ALL_ROWS_ALLOWED, ranges, fastscan.list_major(ranges), 2, k, exact, True)
            got = fastscan.scan_pq4_lists(lut, *tables, blocked, packed, bias, bias_max, gaps, unit, *args)
            want = fastscan.scan_pq4_lists(lut, *tables, blocked, packed, bias, bias_max, gaps, 0.0, *args)
            np.testing.assert_array_equal(got[1], want[1])
            np.testing.assert_array_equal(got[0], want[0])