"""Asymmetric distance computation over product-quantization codes.

A query's score against a code is the sum of m lookups in its table ``lut[j, c_j]`` (plus the
optional per-row bias). Work is split into (group of queries, slice of rows) tasks. 8-bit codes are one byte a sub-quantizer; 4-bit codes hold two, the even
sub-quantizer in the low nibble (see codecs/pq.py).
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from .topk import NJIT, merge_partial, partial_tops, reservoir_push

# Queries scanned together by one thread: their lookup tables (m x 256 floats each) must stay in
# cache while the codes stream past, so a batch is cut into small groups run in parallel.
QUERY_GROUP = 4


@nb.njit(inline="always", **NJIT)
def _scan_rows(table, codes, m, bias, use_bias, start, stop, bs, bi, sizes, thrs, q):
    """Score rows start..stop against one query's table and keep the best in reservoir (bs, bi).

    One query at a time over a slice of rows: the table and reservoir views are made once per slice
    (a view costs atomic reference counting), and the slice's codes stay in cache for the next
    query of the group.
    """
    size = sizes[q]
    thr = thrs[q]
    k = bs.shape[0] // 2
    for row in range(start, stop):
        acc = _lookup_sum(table, codes, row, m)
        if use_bias:
            acc += bias[row]
        if size < k or acc > thr:
            size, thr = reservoir_push(bs, bi, size, thr, k, acc, row)
    sizes[q] = size
    thrs[q] = thr


@nb.njit(inline="always", **NJIT)
def _lookup_sum(table, codes, row, m):
    """sum_j table[j, codes[row, j]] with four independent accumulators.

    One accumulator makes every addition wait for the previous one (a latency-bound chain of m
    adds); four chains run side by side, as FAISS's PQ distance loops do.
    """
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    j = 0
    while j + 4 <= m:
        a0 += table[j, codes[row, j]]
        a1 += table[j + 1, codes[row, j + 1]]
        a2 += table[j + 2, codes[row, j + 2]]
        a3 += table[j + 3, codes[row, j + 3]]
        j += 4
    while j < m:
        a0 += table[j, codes[row, j]]
        j += 1
    return (a0 + a1) + (a2 + a3)


@nb.njit(parallel=True, **NJIT)
def scan_pq8(lut, codes, bias, k, nparts):
    """lut (nq, w, 256) float32, codes (n, w) uint8 -> best-first (scores, rows), (nq, k).

    Column j of the codes indexes table j: 8-bit PQ directly, 4-bit PQ through fused pair tables.
    """
    nq = lut.shape[0]
    n, width = codes.shape
    use_bias = bias.shape[0] > 0
    part_s, part_i, part_sizes, part_thr = partial_tops(nparts, nq, k)
    step = (n + nparts - 1) // nparts
    ngroups = (nq + QUERY_GROUP - 1) // QUERY_GROUP
    for t in prange(ngroups * nparts):
        p = t % nparts
        q0 = (t // nparts) * QUERY_GROUP
        for q in range(q0, min(q0 + QUERY_GROUP, nq)):
            _scan_rows(lut[q], codes, width, bias, use_bias, p * step, min(p * step + step, n),
                       part_s[p, q], part_i[p, q], part_sizes[p], part_thr[p], q)
    return merge_partial(part_s, part_i, part_sizes, k)


@nb.njit(parallel=True, **NJIT)
def pair_tables(lut, width):
    """(nq, m, 16) tables -> (nq, width, 256): pair[q, i, byte] = lut[q, 2i, low] + lut[q, 2i+1, high]."""
    nq, m, _ = lut.shape
    pair = np.zeros((nq, width, 256), dtype=np.float32)
    for q in prange(nq):
        for i in range(width):
            for b in range(256):
                v = lut[q, 2 * i, b & 15]
                if 2 * i + 1 < m:
                    v += lut[q, 2 * i + 1, b >> 4]
                pair[q, i, b] = v
    return pair


@nb.njit(**NJIT)
def scan_pq4(lut, codes, bias, k, nparts):
    """lut (nq, m, 16) float32, codes (n, ceil(m/2)) packed uint8 -> best-first (scores, rows).

    Two neighbouring sub-quantizers share a byte, so their tables are fused per query into one
    256-entry table: one lookup per byte, scanned as 8-bit codes.
    """
    return scan_pq8(pair_tables(lut, codes.shape[1]), codes, bias, k, nparts)
