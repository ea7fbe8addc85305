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

# fastmath without "nnan"/"ninf": a NaN in a damaged file must stay a NaN the heap can refuse, not
# an assumption the compiler may break every comparison with.
FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}
NJIT = dict(nogil=True, fastmath=FASTMATH, boundscheck=False, cache=True)


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
def offer(part_s, part_i, part_sizes, p, q, score, row):
    """Offer a row to heap (p, q) of (nparts, nq, k) heaps, rows arriving in increasing order.

    The common case (the score loses to the heap's worst) is one comparison: the heap's views are
    made only on insertion, because each view costs atomic reference counting that threads scanning
    side by side would contend on. Rows increase, so a tie with the worst never replaces it.
    """
    size = part_sizes[p, q]
    if size < part_s.shape[2] or score > part_s[p, q, 0]:
        part_sizes[p, q] = heap_push(part_s[p, q], part_i[p, q], size, score, row)


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


@nb.njit(parallel=True, **NJIT)
def merge_partial_heaps(part_s, part_i, part_sizes):
    """Merge partial heaps (nparts, nq, k) into final best-first (scores, rows), (nq, k)."""
    nparts, nq, k = part_s.shape
    hs = np.full((nq, k), -np.inf, dtype=np.float32)
    hi = np.full((nq, k), -1, dtype=np.int64)
    for q in prange(nq):
        size = 0
        hsq = hs[q]
        hiq = hi[q]
        for p in range(nparts):
            for j in range(part_sizes[p, q]):
                size = heap_push(hsq, hiq, size, part_s[p, q, j], part_i[p, q, j])
        heap_sort_best_first(hsq, hiq, size)
    return hs, hi


@nb.njit(**NJIT)
def partial_heaps(nparts, nq, k):
    """Empty per-(part, query) heaps for a scan split into ``nparts`` row ranges."""
    return (np.full((nparts, nq, k), -np.inf, dtype=np.float32),
            np.full((nparts, nq, k), -1, dtype=np.int64),
            np.zeros((nparts, nq), dtype=np.int64))


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
