"""Second stage of a two-stage search: exact scores for a few candidate rows per query.

Only the candidates' rows of the fine tier are touched, so a mapped fine tier costs page reads for
those rows alone. Layout codes: 0 float32, 1 int8, 2 float16 as uint16 bits.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from .topk import NJIT, heap_push, heap_sort_best_first


@nb.njit(parallel=True, **NJIT)
def rescore(xq, codes, layout, candidates, bias, k):
    """Top-k of ``xq[q] . decode(codes[row]) + bias[row]`` over ``candidates[q]`` (-1 = none).

    Returns best-first (scores, rows), each (nq, k); unfilled slots hold -inf and -1.
    """
    nq, c = candidates.shape
    d = codes.shape[1]
    use_bias = bias.shape[0] > 0
    hs = np.full((nq, k), -np.inf, dtype=np.float32)
    hi = np.full((nq, k), -1, dtype=np.int64)
    bits = np.empty((nq, d), dtype=np.uint32)
    widened = bits.view(np.float32)
    magic = np.float32(5.192296858534828e33)  # 2**112, see flat.scan_f16
    for q in prange(nq):
        size = 0
        hsq = hs[q]
        hiq = hi[q]
        for j in range(c):
            row = candidates[q, j]
            if row < 0:
                continue
            acc = np.float32(0.0)
            if layout == 0:
                for t in range(d):
                    acc += xq[q, t] * codes[row, t]
            elif layout == 1:
                for t in range(d):
                    acc += xq[q, t] * np.float32(codes[row, t])
            else:
                for t in range(d):
                    h = np.uint32(codes[row, t])
                    bits[q, t] = ((h & np.uint32(0x7FFF)) << np.uint32(13)) | ((h & np.uint32(0x8000)) << np.uint32(16))
                for t in range(d):
                    acc += xq[q, t] * (widened[q, t] * magic)
            if use_bias:
                acc += bias[row]
            size = heap_push(hsq, hiq, size, acc, row)
        heap_sort_best_first(hsq, hiq, size)
    return hs, hi
