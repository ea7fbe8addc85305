"""Direct scans of uncompressed-layout tiers (float32, float16, int8) for a few queries.

One thread owns one slice of rows and a top-k reservoir per query (kernels/topk.py); each row is read once for all the
queries of the batch, and the partial heaps are merged at the end. Scores are ``q . x + bias[row]`` (bias is empty, or minus the squared norms for l2).
For large batches, kernels/dispatch.py uses a BLAS product per block of rows plus ``topk.push_block``.

float16 codes arrive viewed as uint16 (numba has no float16 type) and are widened inside the dot
product by the CPU's conversion instruction (kernels/half.py), so no float32 copy of the tier is
ever made.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from .half import widen
from .topk import NJIT, merge_partial, offer, partial_tops


@nb.njit(inline="always", **NJIT)
def _row_score(xq, q, xb, row, dtype_code):
    """dtype_code 0 float32, 1 int8, 2 float16 given as uint16 bits."""
    acc = np.float32(0.0)
    d = xq.shape[1]
    if dtype_code == 0:
        for j in range(d):
            acc += xq[q, j] * xb[row, j]
    elif dtype_code == 1:
        for j in range(d):
            acc += xq[q, j] * np.float32(xb[row, j])
    else:
        for j in range(d):
            acc += xq[q, j] * widen(np.uint16(xb[row, j]))  # (a no-op cast: types every layout)
    return acc


def _make_scan(dtype_code: int):
    @nb.njit(parallel=True, **NJIT)
    def scan(xq, xb, bias, k, nparts):
        nq = xq.shape[0]
        n = xb.shape[0]
        use_bias = bias.shape[0] > 0
        part_s, part_i, part_sizes, part_thr = partial_tops(nparts, nq, k)
        step = (n + nparts - 1) // nparts
        for p in prange(nparts):
            for row in range(p * step, min(p * step + step, n)):
                for q in range(nq):  # each row is read once for all queries
                    s = _row_score(xq, q, xb, row, dtype_code)
                    if use_bias:
                        s += bias[row]
                    offer(part_s, part_i, part_sizes, part_thr, p, q, s, row)
        return merge_partial(part_s, part_i, part_sizes, k)

    return scan


scan_f32 = _make_scan(0)
scan_i8 = _make_scan(1)
scan_f16 = _make_scan(2)


@nb.njit(parallel=True, nogil=True, boundscheck=False, cache=True)
def sqnorms_f32(x):
    """Squared L2 norm of every row (float32 rows, float32 result), in index order with every product
    and sum rounded to float32 (no fastmath: the stored norms are then the same bits on every CPU,
    and docs/format.md can say how to recompute them)."""
    out = np.empty(x.shape[0], dtype=np.float32)
    for i in prange(x.shape[0]):
        acc = np.float32(0.0)
        for j in range(x.shape[1]):
            acc += x[i, j] * x[i, j]
        out[i] = acc
    return out


@nb.njit(parallel=True, **NJIT)
def project(xq, rows):
    """xq @ rows.T (float32) on numba's threads, for a few queries.

    A multi-threaded BLAS leaves its threads spinning after the call, and on a machine with as many
    cores as threads they then slow the scan that follows (one query, pca512,pq64 over 100,000 x
    4096: 6.1 ms with a 2-thread OpenBLAS projection, 3.8 ms with a 1-thread one).
    """
    nq, d = xq.shape
    out = np.empty((nq, rows.shape[0]), dtype=np.float32)
    for i in prange(rows.shape[0]):
        for q in range(nq):
            acc = np.float32(0.0)
            for j in range(d):
                acc += xq[q, j] * rows[i, j]
            out[q, i] = acc
    return out


# -- filtered scans: only the given rows -------------------------------------------------------------
#
# Separate kernels, so the unfiltered scans above stay exactly as they are. ``rows`` is sorted and
# unique (int64): the rows a filter allows (kernels/dispatch.py turns a row mask into it). The
# same reservoirs, so ties still go to the lower row.


def _make_scan_rows(dtype_code: int):
    """dtype_code 0 float32, 1 int8, 2 float16 given as uint16 bits."""

    @nb.njit(parallel=True, **NJIT)
    def scan_rows(xq, xb, bias, rows, k, nparts):
        nq = xq.shape[0]
        n = rows.shape[0]
        use_bias = bias.shape[0] > 0
        part_s, part_i, part_sizes, part_thr = partial_tops(nparts, nq, k)
        step = (n + nparts - 1) // nparts
        for p in prange(nparts):
            for i in range(p * step, min(p * step + step, n)):
                row = rows[i]
                for q in range(nq):
                    s = _row_score(xq, q, xb, row, dtype_code)
                    if use_bias:
                        s += bias[row]
                    offer(part_s, part_i, part_sizes, part_thr, p, q, s, row)
        return merge_partial(part_s, part_i, part_sizes, k)

    return scan_rows


scan_f32_rows = _make_scan_rows(0)
scan_i8_rows = _make_scan_rows(1)
scan_f16_rows = _make_scan_rows(2)
