"""Direct scans of uncompressed-layout tiers (float32, float16, int8) for a few queries.

One thread owns one (query, slice of rows) pair and a k-slot heap; the partial heaps are merged at
the end. Scores are ``q . x + bias[row]`` (bias is empty, or minus the squared norms for l2).
For large batches, search.py uses a BLAS product per block of rows plus ``topk.push_block``.

float16 codes arrive viewed as uint16 (numba has no float16 type) and are widened row by row with
the IEEE 754 bit layout, so no float32 copy of the tier is ever made.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from .topk import NJIT, heap_push, merge_partial_heaps


@nb.njit(inline="always", **NJIT)
def _row_score(xq, q, xb, row, dtype_code):
    acc = np.float32(0.0)
    d = xq.shape[1]
    if dtype_code == 0:
        for j in range(d):
            acc += xq[q, j] * xb[row, j]
    else:
        for j in range(d):
            acc += xq[q, j] * np.float32(xb[row, j])
    return acc


def _make_scan(dtype_code: int):
    @nb.njit(parallel=True, **NJIT)
    def scan(xq, xb, bias, k, nparts):
        nq = xq.shape[0]
        n = xb.shape[0]
        use_bias = bias.shape[0] > 0
        part_s = np.full((nq * nparts, k), -np.inf, dtype=np.float32)
        part_i = np.full((nq * nparts, k), -1, dtype=np.int64)
        part_sizes = np.zeros(nq * nparts, dtype=np.int64)
        step = (n + nparts - 1) // nparts
        for t in prange(nq * nparts):
            q = t // nparts
            start = (t % nparts) * step
            stop = min(start + step, n)
            size = 0
            hs = part_s[t]
            hi = part_i[t]
            for row in range(start, stop):
                s = _row_score(xq, q, xb, row, dtype_code)
                if use_bias:
                    s += bias[row]
                size = heap_push(hs, hi, size, s, row)
            part_sizes[t] = size
        hs = np.full((nq, k), -np.inf, dtype=np.float32)
        hi = np.full((nq, k), -1, dtype=np.int64)
        sizes = np.zeros(nq, dtype=np.int64)
        merge_partial_heaps(part_s, part_i, part_sizes, nparts, hs, hi, sizes)
        return hs, hi

    return scan


scan_f32 = _make_scan(0)
scan_i8 = _make_scan(1)


@nb.njit(parallel=True, **NJIT)
def scan_f16(xq, xb_bits, bias, k, nparts):
    """As ``scan_f32`` over float16 codes given as their uint16 bit patterns.

    Each row is widened into a per-thread float32 buffer with integer shifts and one multiply
    (magnitude bits << 13, times 2**112, which also maps subnormals exactly), a loop LLVM
    vectorizes; the sign is applied as a factor of +1 or -1. Codes are finite by construction.
    """
    nq = xq.shape[0]
    n, d = xb_bits.shape
    use_bias = bias.shape[0] > 0
    ntask = nq * nparts
    part_s = np.full((ntask, k), -np.inf, dtype=np.float32)
    part_i = np.full((ntask, k), -1, dtype=np.int64)
    part_sizes = np.zeros(ntask, dtype=np.int64)
    bits = np.empty((ntask, d), dtype=np.uint32)
    widened = bits.view(np.float32)
    signs = np.empty((ntask, d), dtype=np.float32)
    magic = np.float32(5.192296858534828e33)  # 2**112
    step = (n + nparts - 1) // nparts
    for t in prange(ntask):
        q = t // nparts
        start = (t % nparts) * step
        stop = min(start + step, n)
        size = 0
        for row in range(start, stop):
            for j in range(d):
                h = np.uint32(xb_bits[row, j])
                bits[t, j] = (h & np.uint32(0x7FFF)) << np.uint32(13)
                signs[t, j] = np.float32(1.0) - np.float32(2.0) * np.float32(h >> np.uint32(15))
            acc = np.float32(0.0)
            for j in range(d):
                acc += xq[q, j] * (widened[t, j] * magic * signs[t, j])
            if use_bias:
                acc += bias[row]
            size = heap_push(part_s[t], part_i[t], size, acc, row)
        part_sizes[t] = size
    hs = np.full((nq, k), -np.inf, dtype=np.float32)
    hi = np.full((nq, k), -1, dtype=np.int64)
    sizes = np.zeros(nq, dtype=np.int64)
    merge_partial_heaps(part_s, part_i, part_sizes, nparts, hs, hi, sizes)
    return hs, hi


@nb.njit(parallel=True, **NJIT)
def sqnorms_f32(x):
    """Squared L2 norm of every row (float32 rows, float32 result)."""
    out = np.empty(x.shape[0], dtype=np.float32)
    for i in prange(x.shape[0]):
        acc = np.float32(0.0)
        for j in range(x.shape[1]):
            acc += x[i, j] * x[i, j]
        out[i] = acc
    return out
