"""Bounded top-k selection: a k-slot min-heap per query, never a sort of all n scores.

Scores are "higher is better" everywhere (l2 callers negate). Ties break towards the lower row,
so results are deterministic and equal to a stable sort of the scores.

Numba's on-disk cache only watches the file a kernel is defined in: the kernels in other modules
that inline these helpers must be recompiled after an edit here (``make clean-cache``).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from .. import _runtime  # noqa: F401  (numba's threading layer: set before the first parallel region)
from .compiled import compiled

# fastmath without "nnan"/"ninf": a NaN in a damaged file must stay a NaN the heap can refuse, not
# an assumption the compiler may break every comparison with.
FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}
NJIT = dict(nogil=True, fastmath=FASTMATH, boundscheck=False, cache=True)
# Kernels whose additions must stay in the order written: without "reassoc" a sum's order is the
# source's, whichever way LLVM compiles it. (With it, the same source compiled in one process and
# loaded from numba's cache in another summed a 4-bit row's exact score in different orders:
# the last bit of a distance differed between processes.)
SCALAR = dict(NJIT, fastmath=FASTMATH - {"reassoc"})


@nb.njit(inline="always", **NJIT)
def _worse(s_a, i_a, s_b, i_b):
    return s_a < s_b or (s_a == s_b and i_a > i_b)


@nb.njit(inline="always", **NJIT)
def _sift_down(hs, hi, size, pos):
    while True:
        child = 2 * pos + 1
        if child >= size:
            return
        right = child + 1
        if right < size and _worse(hs[right], hi[right], hs[child], hi[child]):
            child = right
        if _worse(hs[child], hi[child], hs[pos], hi[pos]):
            hs[pos], hs[child] = hs[child], hs[pos]
            hi[pos], hi[child] = hi[child], hi[pos]
            pos = child
        else:
            return


@nb.njit(inline="always", **NJIT)
def heap_push(hs, hi, size, score, idx):
    """Offer (score, idx) to a heap holding ``size`` items; return the new size.

    A NaN score (only a damaged file can produce one) counts as -inf: it ranks last.
    """
    if score != score:
        score = -np.inf
    k = hs.shape[0]
    if size < k:
        pos = size
        hs[pos] = score
        hi[pos] = idx
        while pos > 0:
            parent = (pos - 1) >> 1
            if _worse(hs[pos], hi[pos], hs[parent], hi[parent]):
                hs[pos], hs[parent] = hs[parent], hs[pos]
                hi[pos], hi[parent] = hi[parent], hi[pos]
                pos = parent
            else:
                break
        return size + 1
    if _worse(hs[0], hi[0], score, idx):
        hs[0] = score
        hi[0] = idx
        _sift_down(hs, hi, k, 0)
    return size


@nb.njit(inline="always", **NJIT)
def heap_sort_best_first(hs, hi, size):
    """Sort a heap in place so that position 0 holds the best item."""
    end = size
    while end > 1:
        end -= 1
        hs[0], hs[end] = hs[end], hs[0]
        hi[0], hi[end] = hi[end], hi[0]
        _sift_down(hs, hi, end, 0)
    # a min-heap sorted this way leaves the worst item last: already best-first


@nb.njit(parallel=True, **NJIT)
def push_block(scores, bias, row0, hs, hi, sizes):
    """Offer a block of scores (nq, bs) for rows row0.. to every query's heap; bias is (bs,) or (0,)."""
    nq, bs = scores.shape
    use_bias = bias.shape[0] > 0
    for q in prange(nq):
        size = sizes[q]
        hsq = hs[q]
        hiq = hi[q]
        for j in range(bs):
            s = scores[q, j]
            if use_bias:
                s += bias[j]
            size = heap_push(hsq, hiq, size, s, row0 + j)
        sizes[q] = size


# -- reservoirs: the scans' top-k --------------------------------------------------------------
#
# A heap pays a sift (log k comparisons) for every row it admits; two-stage search asks the coarse
# scan for k x oversample candidates (hundreds to thousands), and then the sifts dominated the scan
# (pq8, 100,000 rows: 1.1 ms at k = 10, 3.0 ms at k = 1280). A reservoir admits a row with one store:
# rows better than the threshold are appended to a buffer of 2k slots; when it is full, a quickselect
# keeps the best k and their worst becomes the threshold (O(k) every k rows, O(1) a row). FAISS keeps
# large result sets the same way (ReservoirTopN).


@nb.njit(inline="always", **NJIT)
def _better(s_a, i_a, s_b, i_b):
    return s_a > s_b or (s_a == s_b and i_a < i_b)


@nb.njit(**NJIT)
def select_best(bs, bi, size, k):
    """Reorder bs[:size], bi[:size] so that the best k come first and the k-th best is at k - 1
    (Hoare's quickselect; (score, row) pairs are unique, so every element has one place)."""
    lo = 0
    hi = size - 1
    target = k - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        ps = bs[mid]
        pi = bi[mid]
        i = lo
        j = hi
        while i <= j:
            while _better(bs[i], bi[i], ps, pi):
                i += 1
            while _better(ps, pi, bs[j], bi[j]):
                j -= 1
            if i <= j:
                bs[i], bs[j] = bs[j], bs[i]
                bi[i], bi[j] = bi[j], bi[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return


@nb.njit(inline="always", **NJIT)
def reservoir_push(bs, bi, size, thr, k, score, row):
    """Offer (score, row) to a reservoir of ``bs.shape[0]`` = 2k slots holding ``size`` items, rows
    arriving in increasing order; return (size, threshold). A NaN score counts as -inf.
    :func:`reservoir_offer` with no threshold row: a later row tying the threshold is never the
    better one, so only a higher score enters."""
    size, thr, _ = reservoir_offer(bs, bi, size, thr, TIES_REFUSED, k, score, row)
    return size, thr


# The threshold row of an empty reservoir: above every row, so that rows tying the threshold score
# are admitted until the first compaction sets it.
TIES_ADMITTED = np.iinfo(np.int64).max
# The threshold row reservoir_push passes: below every row, so a tie is never admitted.
TIES_REFUSED = -1


@nb.njit(inline="always", **NJIT)
def reservoir_offer(bs, bi, size, thr, thr_row, k, score, row):
    """Offer (score, row) to a reservoir of ``bs.shape[0]`` = 2k slots holding ``size`` items, rows
    arriving in any order: the threshold is the k-th best (score, row) pair seen at the last
    compaction, (``thr``, ``thr_row``; TIES_ADMITTED before it), and a row scoring ``thr`` is
    admitted when it is the lower row, so every row of the top k (ties to the lower row) is
    admitted whatever the order. A NaN score counts as -inf. Returns (size, thr, thr_row)."""
    if score != score:
        score = -np.inf
    if size < k or score > thr or (score == thr and row < thr_row):
        bs[size] = score
        bi[size] = row
        size += 1
        if size == bs.shape[0]:
            select_best(bs, bi, size, k)
            size = k
            thr = bs[k - 1]
            thr_row = bi[k - 1]
    return size, thr, thr_row


@nb.njit(inline="always", **NJIT)
def offer(part_s, part_i, part_sizes, part_thr, p, q, score, row):
    """Offer a row to reservoir (p, q) of (nparts, nq, 2k) reservoirs, rows arriving in increasing
    order. The common case (the score loses to the threshold) is one comparison: the reservoir's
    views are made only on insertion (a view costs atomic reference counting)."""
    size = part_sizes[p, q]
    k = part_s.shape[2] // 2
    if size < k or score > part_thr[p, q]:
        part_sizes[p, q], part_thr[p, q] = reservoir_push(part_s[p, q], part_i[p, q], size, part_thr[p, q],
                                                           k, score, row)


@nb.njit(**NJIT)
def partial_tops(nparts, nq, k):
    """Empty reservoirs (scores, rows, sizes, thresholds) for a scan split into ``nparts`` row ranges."""
    return (np.full((nparts, nq, 2 * k), -np.inf, dtype=np.float32),
            np.full((nparts, nq, 2 * k), -1, dtype=np.int64),
            np.zeros((nparts, nq), dtype=np.int64),
            np.full((nparts, nq), -np.inf, dtype=np.float32))


@nb.njit(inline="always", **NJIT)
def sort_best_first(bs, bi, size):
    """Sort bs[:size] best first in place: heapify as a min-heap, then heap-sort."""
    for pos in range(size // 2 - 1, -1, -1):
        _sift_down(bs, bi, size, pos)
    heap_sort_best_first(bs, bi, size)


# A merge of at most this many reservoir items (queries x parts x 2k) runs on the calling thread: a
# parallel region must wake the other threads, which sleep between calls under OMP_WAIT_POLICY=PASSIVE
# (the benchmarks' setting). 2 threads: 8 queries x 2 parts x 20 items, 46 us in a parallel region,
# 2.7 serially; 200 x 2 x 20 (8,000 items), 68 and 34 us; 32 x 2 x 200, 84 and 169 us.
MERGE_SERIAL_ITEMS = 8192


@nb.njit(**NJIT)
def merge_partial(part_s, part_i, part_sizes, k, best_first=True):
    """Merge reservoirs (nparts, nq, 2k) into final best-first (scores, rows), (nq, k); unfilled
    places hold -inf and row -1. Per query: gather every part's items, select the best k, sort them
    (``best_first=False``: the same k in any order, padding last, for a caller that sorts them its
    own way, such as rescoring). One query, or at most MERGE_SERIAL_ITEMS items, on this thread;
    more on every thread, a query each. The reservoirs are scratch: they are left reordered."""
    nparts, nq, cap = part_s.shape
    if nq == 1 or nparts * nq * cap <= MERGE_SERIAL_ITEMS:
        return _merge_serial(part_s, part_i, part_sizes, k, best_first)
    return _merge_parallel(part_s, part_i, part_sizes, k, best_first)


def _make_merge(parallel: bool):
    def merge(part_s, part_i, part_sizes, k, best_first):
        """:func:`merge_partial`'s body (prange is range in the serial one). One part's reservoirs
        are selected and sorted where they are; several parts' are gathered first."""
        nparts, nq, cap = part_s.shape
        hs = np.full((nq, k), -np.inf, dtype=np.float32)
        hi = np.full((nq, k), -1, dtype=np.int64)
        gathered = nq if nparts > 1 else 0
        all_s = np.empty((gathered, nparts * cap), dtype=np.float32)
        all_i = np.empty((gathered, nparts * cap), dtype=np.int64)
        for q in prange(nq):
            if nparts == 1:
                bs = part_s[0, q]
                bi = part_i[0, q]
                size = part_sizes[0, q]
            else:
                bs = all_s[q]
                bi = all_i[q]
                size = 0
                for p in range(nparts):
                    for j in range(part_sizes[p, q]):
                        bs[size] = part_s[p, q, j]
                        bi[size] = part_i[p, q, j]
                        size += 1
            if size > k:
                select_best(bs, bi, size, k)
                size = k
            if best_first:
                sort_best_first(bs, bi, size)
            for j in range(size):
                hs[q, j] = bs[j]
                hi[q, j] = bi[j]
        return hs, hi

    return compiled(merge, parallel, NJIT)  # (a cache entry each: kernels/compiled.py)


_merge_serial = _make_merge(False)
_merge_parallel = _make_merge(True)


@nb.njit(parallel=True, **NJIT)
def sort_heaps(hs, hi, sizes):
    """Sort every query's heap best-first."""
    for q in prange(hs.shape[0]):
        heap_sort_best_first(hs[q], hi[q], sizes[q])


def empty_heaps(nq: int, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Heaps for nq queries: scores, rows (-1 when unfilled) and fill counts."""
    return (
        np.full((nq, k), -np.inf, dtype=np.float32),
        np.full((nq, k), -1, dtype=np.int64),
        np.zeros(nq, dtype=np.int64),
    )


@nb.njit(**NJIT)
def to_results(scores, rows, ids, k, l2, qnorms):
    """Best-first kernel (scores, rows), (nq, got <= k), -> (distances, ids), (nq, k): ids[row] or -1,
    the score (ip, cosine) or max(|q|^2 - score, 0) (l2, qnorms = |q|^2), padding -inf / +inf.

    One pass instead of a dozen small numpy operations: a single query's search paid more for those
    than for a 4-bit scan of 100,000 rows's worth of them.
    """
    nq, got = rows.shape
    fill = np.inf if l2 else -np.inf
    distances = np.full((nq, k), fill, dtype=np.float32)
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    for q in range(nq):
        for j in range(got):
            r = rows[q, j]
            if r < 0:
                continue
            out_ids[q, j] = ids[r]
            if l2:
                distances[q, j] = max(qnorms[q] - scores[q, j], np.float32(0.0))
            else:
                distances[q, j] = scores[q, j]
    return distances, out_ids
