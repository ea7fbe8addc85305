"""Second stage of a two-stage search: exact scores for a few candidate rows per query.

Only the candidates' rows of the fine tier are touched, so a mapped fine tier costs page reads for
those rows alone; they are read in row order (a query's candidates are sorted first), so a fine
tier that is not in the page cache is read forwards. Layout codes: 0 float32, 1 int8, 2 float16 as
uint16 bits (widened by the CPU's conversion instruction: kernels/half.py). One body
(``_rescore_query``) serves the batch kernel (a parallel loop over queries) and the serial one a
fused single-query search calls (kernels/fused.py), which must not pay for a parallel region.
"""

from __future__ import annotations

import mmap

import numba as nb
import numpy as np
from numba import prange, types

from .half import widen
from .prefetch import CACHE_LINE, prefetch_line
from .topk import NJIT, heap_push, heap_sort_best_first

# libc, called from compiled code (resolved by name, so the on-disk cache keeps working): telling the
# kernel which rows a rescoring will read lets it fetch them all at once from storage.
_madvise = types.ExternalFunction("madvise", types.int32(types.intp, types.uintp, types.int32))
_mincore = types.ExternalFunction("mincore", types.int32(types.intp, types.uintp, types.intp))
MADV_WILLNEED = 3
PAGE = mmap.PAGESIZE

# Rows ahead whose cache lines are requested while a row is scored. Candidate rows are scattered, so
# the hardware prefetcher cannot guess the next one and every row began with a wait on memory. 1,000
# queries x 640 float32 rows of 384 (of 1M, in the page cache), 2 threads, load 2.6: 103 ms without,
# 87 ms with 8 rows ahead; in another run 120 ms without, 113 / 98 / 90 / 87 ms with 1 / 2 / 4 / 8.
PREFETCH_ROWS = 8


@nb.njit(inline="always", **NJIT)
def _sorted_rows(cand_row):
    """A new array of ``cand_row``'s rows (-1 = none) in increasing order, the -1s first: what
    np.sort gives, by a radix sort of row + 1 a byte at a time (three passes up to 16M rows).
    numba's np.sort is a comparison sort whose branches a random row order defeats: 640 candidates
    took 61 us a query, the radix sort 7 us (1,000 queries, one thread)."""
    n = cand_row.shape[0]
    a = np.empty(n, dtype=np.int64)
    b = np.empty(n, dtype=np.int64)
    top = 0
    for j in range(n):
        v = cand_row[j] + 1
        a[j] = v
        top = max(top, v)
    counts = np.empty(256, dtype=np.int64)
    shift = 0
    while (top >> shift) > 0:
        counts[:] = 0
        for j in range(n):
            counts[(a[j] >> shift) & 255] += 1
        total = 0
        for c in range(256):
            here = counts[c]
            counts[c] = total
            total += here
        for j in range(n):  # stable: the order of the bytes below is kept
            v = a[j]
            digit = (v >> shift) & 255
            b[counts[digit]] = v
            counts[digit] += 1
        a, b = b, a
        shift += 8
    for j in range(n):
        a[j] -= 1
    return a


@nb.njit(inline="always", **NJIT)
def _rescore_query(xq_row, codes, layout, cand_row, bias, hs_row, hi_row):
    """Heap-select the best of one query's candidate rows (-1 = none) into hs_row/hi_row, best first."""
    d = codes.shape[1]
    use_bias = bias.shape[0] > 0
    order = _sorted_rows(cand_row)
    line = max(1, CACHE_LINE // codes.itemsize)
    size = 0
    for j in range(order.shape[0]):
        if j + PREFETCH_ROWS < order.shape[0]:
            ahead = order[j + PREFETCH_ROWS]
            if ahead >= 0:  # (-1: no candidate)
                for t in range(0, d, line):
                    prefetch_line(codes, ahead, t)
        row = order[j]
        if row < 0:
            continue
        acc = np.float32(0.0)
        if layout == 0:
            for t in range(d):
                acc += xq_row[t] * codes[row, t]
        elif layout == 1:
            for t in range(d):
                acc += xq_row[t] * np.float32(codes[row, t])
        else:
            for t in range(d):
                acc += xq_row[t] * widen(np.uint16(codes[row, t]))  # (a no-op cast: types every layout)
        if use_bias:
            acc += bias[row]
        size = heap_push(hs_row, hi_row, size, acc, row)
    heap_sort_best_first(hs_row, hi_row, size)


@nb.njit(parallel=True, **NJIT)
def rescore(xq, codes, layout, candidates, bias, k):
    """Top-k of ``xq[q] . decode(codes[row]) + bias[row]`` over ``candidates[q]`` (-1 = none).

    Returns best-first (scores, rows), each (nq, k); unfilled slots hold -inf and -1.
    """
    nq = candidates.shape[0]
    hs = np.full((nq, k), -np.inf, dtype=np.float32)
    hi = np.full((nq, k), -1, dtype=np.int64)
    for q in prange(nq):
        _rescore_query(xq[q], codes, layout, candidates[q], bias, hs[q], hi[q])
    return hs, hi


@nb.njit(**NJIT)
def rescore_serial(xq, codes, layout, candidates, bias, k):
    """:func:`rescore` on the calling thread (for one or a few queries)."""
    nq = candidates.shape[0]
    hs = np.full((nq, k), -np.inf, dtype=np.float32)
    hi = np.full((nq, k), -1, dtype=np.int64)
    for q in range(nq):
        _rescore_query(xq[q], codes, layout, candidates[q], bias, hs[q], hi[q])
    return hs, hi


@nb.njit(nogil=True, boundscheck=False, cache=True)
def prefetch_rows(codes, candidates):
    """If the first candidate row of ``codes`` is not in memory, ask the kernel to read every
    candidate row now (MADV_WILLNEED, asynchronous): their reads then overlap instead of one page
    fault after another as the rescoring loop touches them. One mincore call when the tier is in
    the page cache (the usual case). Returns whether it asked. Candidates -1 are skipped.

    A hint, not I/O: the rows are read either way; a 4096-d rescoring of 80 rows out of the page
    cache took 16.6 ms one fault at a time, against 4.5 ms for 80 preads (benchmarks/bench_realtime.py).
    """
    first = -1
    for r in candidates.ravel():
        if r >= 0:
            first = r
            break
    if first < 0 or codes.shape[0] == 0:
        return False
    base = codes.ctypes.data
    row_bytes = codes.shape[1] * codes.itemsize
    vec = np.zeros(1, dtype=np.uint8)
    at = base + first * row_bytes
    _mincore(at - at % PAGE, PAGE, vec.ctypes.data)
    if vec[0] & 1:
        return False
    for r in candidates.ravel():
        if r >= 0:
            at = base + r * row_bytes
            start = at - at % PAGE
            _madvise(start, at + row_bytes - start, MADV_WILLNEED)
    return True