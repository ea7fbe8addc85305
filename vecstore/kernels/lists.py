"""Which lists of an inverted-file tier a query probes (vecstore.codecs.ivf, docs/format.md
"Inverted-file tiers"): the ``nprobe`` best centroid scores, ties to the lower list, as position
ranges of the list-ordered codes. One compiled loop instead of numpy's argpartition, tie check,
sort and gather, which cost about 25 us a query."""

from __future__ import annotations

import numba as nb
import numpy as np

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
