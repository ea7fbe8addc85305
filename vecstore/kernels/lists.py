"""Which lists of an inverted-file tier a query probes (vecstore.codecs.ivf, docs/format.md
"Inverted-file tiers"): the ``nprobe`` best centroid scores, ties to the lower list, as position
ranges of the list-ordered codes. One compiled loop instead of numpy's argpartition, tie check,
sort and gather, which cost about 25 us a query."""

from __future__ import annotations

import numba as nb
import numpy as np

from .topk import NJIT, select_best


@nb.njit(**NJIT)
def nearest_lists(scores, nprobe, offsets):
    """scores (nq, nlist) float32 (finite), 1 <= nprobe <= nlist, offsets (nlist + 1,) int64 ->
    (nq, nprobe, 2) int64: [start, stop) of each query's probed lists, in list order."""
    nq, nlist = scores.shape
    out = np.empty((nq, nprobe, 2), dtype=np.int64)
    s = np.empty(nlist, dtype=np.float32)
    idx = np.empty(nlist, dtype=np.int64)
    for q in range(nq):
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
