"""A resolved plan over one store file, with what its searches need gathered once.

Resolving a plan, looking up its tiers, negating l2 norms, building the fast-scan blocks and checking
that a damaged file cannot feed a kernel non-finite tables are done when the plan is prepared, not per
query. A prepared plan is immutable and shared: a view (vecstore.store.view) keeps one per plan, and
any number of threads search through it at once.

One or a few queries over a 4-bit PQ tier with no pre-transform (alone, or rescored from a dense
tier) take the fused path: one compiled call from tables to ids (kernels/fused.py); so does an exact
scan of a float32 or int8 tier small enough for one thread. Everything else goes through
:meth:`StoreFile.search_plan`; both give the same results, bit for bit.
"""

from __future__ import annotations

import numpy as np

from ..kernels import dispatch
from ..kernels.fused import SEARCH_DENSE, search_pq4
from ..plan import Plan
from ..query import SearchResult, empty_result
from .file import StoreFile

# Up to this many queries a call take the fused path (the scan's query groups keep it efficient;
# larger batches amortise the separate kernels' costs and use their parallel loops over queries).
FUSED_MAX_QUERIES = 4
# Codebook rows longer than this could overflow a float32 table entry against a query near
# vecstore.ingest.MAX_SQNORM (|q| < 1e19, |q . c| < 3.4e38): only a damaged file has them, and it
# takes the separate kernels, which rank non-finite scores last.
MAX_CODEBOOK_NORM = 1e18
NO_CODES = np.empty((0, 1), dtype=np.uint8)
NO_BIAS = np.empty(0, dtype=np.float32)


class PreparedPlan:
    """``plan`` over ``file``, ready to search. ``search(xq, k)`` takes validated queries."""

    def __init__(self, file: StoreFile, plan: Plan):
        self.file, self.plan = file, plan
        self.coarse = file.tier(plan.tier)
        self.fine = file.rescoring_tier(plan.rescore) if plan.rescore is not None else None
        self.fused = self._can_fuse()
        # an exact scan of a float32 / int8 tier small enough for one thread: one call, no parallel region
        self.dense = SEARCH_DENSE.get(self.coarse.layout) if self.fine is None and self.coarse.lists is None else None
        if self.fused:
            self.blocked, self.bias_max = self.coarse.fast_layout()
            self.codebooks = self.coarse.codec.terminal.codebooks_
            self.fine_layout = 0 if self.fine is None else dispatch.RESCORE_LAYOUTS[self.fine.layout]

    def _can_fuse(self) -> bool:
        codec = self.coarse.codec
        if not dispatch.FAST_SCAN or self.coarse.layout != "pq4" or len(codec.stages) != 1:
            return False
        books = codec.terminal.codebooks_
        return bool(np.isfinite(books).all() and (np.sqrt((books.astype(np.float64) ** 2).sum(axis=2)) < MAX_CODEBOOK_NORM).all())

    def search(self, xq: np.ndarray, k: int, nprobe: int | None = None) -> SearchResult:
        """Top-k of validated queries ``xq`` (k validated; it may exceed the count; ``nprobe``: lists
        an inverted-file tier scans)."""
        count = self.file.count
        kk = min(k, count)
        if kk == 0:
            return empty_result(xq.shape[0], k, self.file.metric)
        if (self.dense is not None and xq.shape[0] <= FUSED_MAX_QUERIES
                and xq.shape[0] * count * self.coarse.codes.shape[1] < dispatch.SERIAL_WORK):
            return self._search_dense(xq, k, kk)
        if not self.fused or xq.shape[0] > FUSED_MAX_QUERIES:
            return self.file.search_plan(xq, k, self.plan, nprobe)
        coarse_q, const, bias = self.coarse.fold(xq)
        width, fine_q, fine_codes, fine_bias = kk, coarse_q, NO_CODES, NO_BIAS
        if self.fine is not None:  # (codes read now: a tier loaded into RAM since is used from RAM)
            width = min(count, int(np.ceil(kk * self.plan.oversample)))
            fine_q, const, fine_bias = self.fine.fold(xq)
            fine_codes = self.fine.dense_codes()
        l2 = self.file.metric == "l2"
        qnorms = (xq * xq).sum(axis=1) if l2 else np.empty(0, dtype=np.float32)
        with dispatch.threads_for(dispatch.fast_scan_work(xq.shape[0], self.coarse.codes)):
            parts = dispatch.fast_scan_parts(xq.shape[0], count)
            distances, ids = search_pq4(coarse_q, self.codebooks, self.blocked, self.coarse.codes, bias,
                                        self.bias_max, width, parts, fine_q, fine_codes, self.fine_layout,
                                        fine_bias, const, kk, k, self.file.ids, l2, qnorms)
        return SearchResult(distances, ids)

    def _search_dense(self, xq: np.ndarray, k: int, kk: int) -> SearchResult:
        folded, const, bias = self.coarse.fold(xq)
        l2 = self.file.metric == "l2"
        qnorms = (xq * xq).sum(axis=1) if l2 else np.empty(0, dtype=np.float32)
        with dispatch.threads_for(0):  # small work: one thread (see search)
            distances, ids = self.dense(folded, self.coarse.codes, bias, const, kk, k, self.file.ids, l2, qnorms,
                                        dispatch.default_parts(self.file.count, kk))
        return SearchResult(distances, ids)
