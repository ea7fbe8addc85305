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
# queries a task takes; queries are scored four at a time, each centroid value loaded once for four.
CENTROID_BLOCK = 32
QUERY_CHUNK = 64


@nb.njit(inline="always", **NJIT)
def _score_block(xq, centroids, bias, out, c0, c1, q0, q1):
    d = xq.shape[1]
    use_bias = bias.shape[0] > 0
    for c in range(c0, c1):
        b = bias[c] if use_bias else np.float32(0.0)
        q = q0
        while q + 4 <= q1:
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            a3 = np.float32(0.0)
            for t in range(d):
                v = centroids[c, t]
                a0 += xq[q, t] * v
                a1 += xq[q + 1, t] * v
                a2 += xq[q + 2, t] * v
                a3 += xq[q + 3, t] * v
            out[q, c] = a0 + b
            out[q + 1, c] = a1 + b
            out[q + 2, c] = a2 + b
            out[q + 3, c] = a3 + b
            q += 4
        while q < q1:
            a0 = np.float32(0.0)
            for t in range(d):
                a0 += xq[q, t] * centroids[c, t]
            out[q, c] = a0 + b
            q += 1


@nb.njit(parallel=True, **NJIT)
def centroid_scores(xq, centroids, bias):
    """(nq, d) float32 queries . (nlist, d) centroids + bias (nlist,) or (0,) -> (nq, nlist) float32,
    on numba's threads: a batch's list scores without numpy's BLAS, whose pthreads keep spinning for
    about 0.1 s after a product and took the cores from the scan and rescoring that follow (1,000
    queries over 4,096 lists: BLAS 13 ms on two threads, but the whole search 133 ms against 107 with
    BLAS on one thread; this kernel 30 ms). Centroid blocks outermost, so each is read from memory once."""
    nq = xq.shape[0]
    nlist = centroids.shape[0]
    out = np.empty((nq, nlist), dtype=np.float32)
    blocks = (nlist + CENTROID_BLOCK - 1) // CENTROID_BLOCK
    chunks = (nq + QUERY_CHUNK - 1) // QUERY_CHUNK
    for task in prange(blocks * chunks):
        b = task // chunks
        g = task % chunks
        _score_block(xq, centroids, bias, out, b * CENTROID_BLOCK, min(b * CENTROID_BLOCK + CENTROID_BLOCK, nlist),
                     g * QUERY_CHUNK, min(g * QUERY_CHUNK + QUERY_CHUNK, nq))
    return out
