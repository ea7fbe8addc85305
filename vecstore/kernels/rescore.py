"""Second stage of a two-stage search: exact scores for a few candidate rows per query.

Only the candidates' rows of the fine tier are touched, so a mapped fine tier costs page reads for
those rows alone; they are read in row order (a query's candidates are sorted first), so a fine
tier that is not in the page cache is read forwards. Layout codes: 0 float32, 1 int8, 2 float16 as
uint16 bits. One body (``_rescore_query``) serves the batch kernel (a parallel loop over queries)
and the serial one a fused single-query search calls (kernels/fused.py), which must not pay for a
parallel region.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from .topk import NJIT, heap_push, heap_sort_best_first

# 2**112: float16 bits shifted into a float32's place, times this, is the float16 value (flat.scan_f16)
F16_MAGIC = np.float32(5.192296858534828e33)


@nb.njit(inline="always", **NJIT)
def _rescore_query(xq_row, codes, layout, cand_row, bias, hs_row, hi_row, bits_row):
    """Heap-select the best of one query's candidate rows (-1 = none) into hs_row/hi_row, best first."""
    d = codes.shape[1]
    use_bias = bias.shape[0] > 0
    widened = bits_row.view(np.float32)
    order = np.sort(cand_row)
    size = 0
    for j in range(order.shape[0]):
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
                h = np.uint32(codes[row, t])
                bits_row[t] = ((h & np.uint32(0x7FFF)) << np.uint32(13)) | ((h & np.uint32(0x8000)) << np.uint32(16))
            for t in range(d):
                acc += xq_row[t] * (widened[t] * F16_MAGIC)
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
    bits = np.empty((nq, codes.shape[1]), dtype=np.uint32)
    for q in prange(nq):
        _rescore_query(xq[q], codes, layout, candidates[q], bias, hs[q], hi[q], bits[q])
    return hs, hi


@nb.njit(**NJIT)
def rescore_serial(xq, codes, layout, candidates, bias, k):
    """:func:`rescore` on the calling thread (for one or a few queries)."""
    nq = candidates.shape[0]
    hs = np.full((nq, k), -np.inf, dtype=np.float32)
    hi = np.full((nq, k), -1, dtype=np.int64)
    bits = np.empty((nq, codes.shape[1]), dtype=np.uint32)
    for q in range(nq):
        _rescore_query(xq[q], codes, layout, candidates[q], bias, hs[q], hi[q], bits[q])
    return hs, hi
