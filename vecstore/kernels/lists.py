"""Which lists of an inverted-file tier a query probes (vecstore.codecs.ivf, docs/format.md
"Inverted-file tiers"): the ``nprobe`` best centroid scores, ties to the lower list, as position
ranges of the list-ordered codes. One compiled loop instead of numpy's argpartition, tie check,
sort and gather, which cost about 25 us a query."""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange

from .topk import NJIT, heap_push, select_best

# Up to one list in this many probed, the best are kept in a bounded heap; above, a quickselect of
# every score. 1,000 queries over 4,096 lists: nprobe 8, heap 3.8 ms, quickselect 29 ms; nprobe 64,
# 16 / 32 ms; nprobe 128, 31 / 35 ms; nprobe 512, 111 / 53 ms (the heap admits more lists, each a sift).
HEAP_SHARE = 64


@nb.njit(**NJIT)
def nearest_lists(scores, nprobe, offsets):
    """scores (nq, nlist) float32 (finite), 1 <= nprobe <= nlist, offsets (nlist + 1,) int64 ->
    (nq, nprobe, 2) int64: [start, stop) of each query's probed lists, in list order.

    A few lists of many (the usual nprobe): a heap of the nprobe best so far, lists offered in
    increasing order, so a list that does not beat the heap's worst costs one comparison. Serial:
    the heap takes about 4 us a query, less than a parallel region costs to start."""
    nq, nlist = scores.shape
    out = np.empty((nq, nprobe, 2), dtype=np.int64)
    heap = nprobe * HEAP_SHARE <= nlist
    s = np.empty(nprobe if heap else nlist, dtype=np.float32)
    idx = np.empty(nprobe if heap else nlist, dtype=np.int64)
    for q in range(nq):
        if heap:
            size = 0
            for lst in range(nprobe):
                size = heap_push(s, idx, size, scores[q, lst], lst)
            for lst in range(nprobe, nlist):
                v = scores[q, lst]
                if v > s[0]:  # (a tie loses: the heap's worst has the lower list)
                    heap_push(s, idx, nprobe, v, lst)
        else:
            for lst in range(nlist):
                s[lst] = scores[q, lst]
                idx[lst] = lst
            if nprobe < nlist:
                select_best(s, idx, nlist, nprobe)  # (score, list) pairs are unique: ties go to the lower list
        chosen = np.sort(idx[:nprobe])
        for r in range(nprobe):
            out[q, r, 0] = offsets[chosen[r]]
            out[q, r, 1] = offsets[chosen[r] + 1]
    return out


# Centroids a task scores (32 x 384 floats: 48 KB, held in L2 while a chunk of queries passes) and
# queries a task takes; they are scored in tiles of four queries x four centroids (sixteen sums in
# registers, each value loaded once for four products): 1,000 queries x 4,096 lists x 384 dims
# 11.4 ms against 29.4 ms four queries x one centroid at a time (numpy's BLAS: 12.4 ms).
CENTROID_BLOCK = 32
QUERY_CHUNK = 64


@nb.njit(inline="always", **NJIT)
def _tile(xq, centroids, bias, use_bias, out, c, q, oq, oc):
    """out[q - oq:q - oq + 4, c - oc:c - oc + 4]: four queries x four centroids, sixteen accumulators."""
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = np.float32(0.0)
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = np.float32(0.0)
    for t in range(xq.shape[1]):
        v0 = centroids[c, t]
        v1 = centroids[c + 1, t]
        v2 = centroids[c + 2, t]
        v3 = centroids[c + 3, t]
        x0 = xq[q, t]
        x1 = xq[q + 1, t]
        x2 = xq[q + 2, t]
        x3 = xq[q + 3, t]
        a00 += x0 * v0
        a01 += x0 * v1
        a02 += x0 * v2
        a03 += x0 * v3
        a10 += x1 * v0
        a11 += x1 * v1
        a12 += x1 * v2
        a13 += x1 * v3
        a20 += x2 * v0
        a21 += x2 * v1
        a22 += x2 * v2
        a23 += x2 * v3
        a30 += x3 * v0
        a31 += x3 * v1
        a32 += x3 * v2
        a33 += x3 * v3
    b0 = bias[c] if use_bias else np.float32(0.0)
    b1 = bias[c + 1] if use_bias else np.float32(0.0)
    b2 = bias[c + 2] if use_bias else np.float32(0.0)
    b3 = bias[c + 3] if use_bias else np.float32(0.0)
    r = q - oq
    col = c - oc
    out[r, col] = a00 + b0
    out[r, col + 1] = a01 + b1
    out[r, col + 2] = a02 + b2
    out[r, col + 3] = a03 + b3
    out[r + 1, col] = a10 + b0
    out[r + 1, col + 1] = a11 + b1
    out[r + 1, col + 2] = a12 + b2
    out[r + 1, col + 3] = a13 + b3
    out[r + 2, col] = a20 + b0
    out[r + 2, col + 1] = a21 + b1
    out[r + 2, col + 2] = a22 + b2
    out[r + 2, col + 3] = a23 + b3
    out[r + 3, col] = a30 + b0
    out[r + 3, col + 1] = a31 + b1
    out[r + 3, col + 2] = a32 + b2
    out[r + 3, col + 3] = a33 + b3


@nb.njit(inline="always", **NJIT)
def _one_by_one(xq, centroids, bias, use_bias, out, c, q, oq, oc):
    a = np.float32(0.0)
    for t in range(xq.shape[1]):
        a += xq[q, t] * centroids[c, t]
    out[q - oq, c - oc] = a + (bias[c] if use_bias else np.float32(0.0))


@nb.njit(inline="always", **NJIT)
def _score_block(xq, centroids, bias, out, c0, c1, q0, q1, oq, oc):
    """out[q - oq, c - oc] for q in q0..q1, c in c0..c1: whole tiles, then the queries and
    centroids left over one by one."""
    use_bias = bias.shape[0] > 0
    tiles_q = q0 + (q1 - q0) // 4 * 4
    tiles_c = c0 + (c1 - c0) // 4 * 4
    for c in range(c0, tiles_c, 4):
        for q in range(q0, tiles_q, 4):
            _tile(xq, centroids, bias, use_bias, out, c, q, oq, oc)
        for q in range(tiles_q, q1):
            for j in range(4):
                _one_by_one(xq, centroids, bias, use_bias, out, c + j, q, oq, oc)
    for c in range(tiles_c, c1):
        for q in range(q0, q1):
            _one_by_one(xq, centroids, bias, use_bias, out, c, q, oq, oc)


@nb.njit(parallel=True, **NJIT)
def centroid_scores(xq, centroids, bias):
    """(nq, d) float32 queries . (nlist, d) centroids + bias (nlist,) or (0,) -> (nq, nlist) float32,
    on numba's threads: a batch's list scores without numpy's BLAS, whose pthreads keep spinning for
    about 0.1 s after a product and took the cores from the scan and rescoring that follow (1,000
    queries over 4,096 lists: BLAS 13 ms on two threads, but the whole search 133 ms against 107 with
    BLAS on one thread; this kernel 11 ms). Centroid blocks outermost, so each is read from memory once."""
    nq = xq.shape[0]
    nlist = centroids.shape[0]
    out = np.empty((nq, nlist), dtype=np.float32)
    blocks = (nlist + CENTROID_BLOCK - 1) // CENTROID_BLOCK
    chunks = (nq + QUERY_CHUNK - 1) // QUERY_CHUNK
    for task in prange(blocks * chunks):
        b = task // chunks
        g = task % chunks
        _score_block(xq, centroids, bias, out, b * CENTROID_BLOCK, min(b * CENTROID_BLOCK + CENTROID_BLOCK, nlist),
                     g * QUERY_CHUNK, min(g * QUERY_CHUNK + QUERY_CHUNK, nq), 0, 0)
    return out


@nb.njit(parallel=True, **NJIT)
def nearest_centroids(x, centroids, bias):
    """(n, d) float32 rows -> (n,) int64: each row's centroid of highest ``x . c + bias[c]`` (bias
    (nlist,) or (0,)), ties to the lower centroid; every score finite. The tiles of
    :func:`centroid_scores`, a chunk of rows against every centroid block, keeping each row's best
    as it goes: no (n, nlist) score matrix is written and read back (200,000 rows of 384 dims into
    4,096 lists: 2.08 s, against 2.97 s for numpy's BLAS and argmax in 64 MB blocks)."""
    n = x.shape[0]
    nlist = centroids.shape[0]
    out = np.zeros(n, dtype=np.int64)
    for g in prange((n + QUERY_CHUNK - 1) // QUERY_CHUNK):
        q0 = g * QUERY_CHUNK
        q1 = min(q0 + QUERY_CHUNK, n)
        scores = np.empty((QUERY_CHUNK, CENTROID_BLOCK), dtype=np.float32)
        best = np.full(QUERY_CHUNK, -np.inf, dtype=np.float32)
        for c0 in range(0, nlist, CENTROID_BLOCK):
            c1 = min(c0 + CENTROID_BLOCK, nlist)
            _score_block(x, centroids, bias, scores, c0, c1, q0, q1, q0, c0)
            for q in range(q0, q1):
                for c in range(c0, c1):
                    if scores[q - q0, c - c0] > best[q - q0]:
                        best[q - q0] = scores[q - q0, c - c0]
                        out[q] = c
    return out
