"""A resolved plan over one store file, with what its searches need gathered once.

Resolving a plan, looking up its tiers, negating l2 norms, building the fast-scan blocks and checking
that a damaged file cannot feed a kernel non-finite tables are done when the plan is prepared, not per
query. A prepared plan is immutable and shared: a view (vecstore.store.view) keeps one per plan, and
any number of threads search through it at once.

One or a few queries over a 4-bit PQ tier with no pre-transform (alone, or rescored from a dense
tier) take the fused path: one compiled call from tables to ids (kernels/fused.py); so does an exact
scan of a float32 or int8 tier small enough for one thread. Everything else goes through
:meth:`StoreFile.search_plan`; both give the same results, bit for bit. A small exact scan of a
float32 tier (kernels.dispatch.by_numpy) is answered in numpy, with no compiled call: the same
ranking up to float rounding, and a fresh process does not wait for numba to load its kernels.
The compiled kernels are reached through kernels.dispatch.K, imported on first use.
"""

from __future__ import annotations

import math

import numpy as np

from ..filters.strategy import choose_strategy
from ..kernels import dispatch
from ..kernels.dispatch import K
from ..plan import Plan
from ..query import FilteredSearchResult, SearchResult, empty_result, filtered_result
from .file import StoreFile
from .masks import RowMask
from .tier import Tier

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
        fusable = self._can_fuse()
        self.fused = fusable and self.coarse.lists is None
        self.fused_lists = fusable and self.coarse.lists is not None
        self.scan_work = file.count * self.coarse.code_size  # what choose_strategy weighs (StoreFile.allowed_strategy)
        self._dense_layout = self.coarse.layout if self.fine is None and self.coarse.lists is None else None
        if self.fused_lists:
            self.rows_of = self.coarse.lists.checked_rows()
        if fusable:
            self.fast = self.coarse.fast_layout()
            self.codebooks = self.coarse.codec.terminal.codebooks_
            self.books_t = self.coarse.codec.terminal.table_codebooks()  # what pq.lookup_tables also reads
            self.fine_layout = 0 if self.fine is None else dispatch.RESCORE_LAYOUTS[self.fine.layout]

    @property
    def dense(self):
        """An exact scan of a float32 / int8 tier small enough for one thread: one compiled call, no
        parallel region (kernels/fused.py's search_dense); None for other tiers and two-stage plans.
        (Looked up when used: a plan answered in numpy never imports the kernels.)"""
        return None if self._dense_layout is None else K.fused.SEARCH_DENSE.get(self._dense_layout)

    @property
    def fine_rows(self):
        """A filtered search's exact scan of the admitted rows of the fine tier (the exact strategy)."""
        return None if self.fine is None else K.fused.SEARCH_DENSE_ROWS.get(self.fine.layout)

    @property
    def coarse_rows(self):
        """A filtered search's exact scan of the admitted rows of a dense tier searched alone (filtered-scan)."""
        return None if self._dense_layout is None else K.fused.SEARCH_DENSE_ROWS.get(self._dense_layout)

    def _norms(self, xq: np.ndarray) -> tuple[bool, np.ndarray]:
        """(l2, the queries' |q|^2 for an l2 store, else an empty array): what the kernels add back."""
        if self.file.metric == "l2":
            return True, (xq * xq).sum(axis=1)
        return False, NO_BIAS

    def _can_fuse(self) -> bool:
        """A 4-bit PQ tier with no pre-transform (behind its inverted file, if it has one) on a CPU
        with the fast scan, whose codebooks cannot overflow a table."""
        codec = self.coarse.codec
        stages = 2 if self.coarse.lists is not None else 1
        if self.coarse.layout != "pq4" or len(codec.stages) != stages or not dispatch.fast_scan():
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
        if self.fine is None and dispatch.by_numpy(self.coarse.layout, xq.shape[0], count, self.coarse.codes.shape[1]):
            return SearchResult._make(self._search_numpy(xq, k, kk))
        if (self._dense_layout is not None and xq.shape[0] <= FUSED_MAX_QUERIES
                and xq.shape[0] * count * self.coarse.codes.shape[1] < dispatch.SERIAL_WORK and self.dense is not None):
            return SearchResult._make(self._search_dense(xq, k, kk))
        if self.fused_lists and xq.shape[0] <= FUSED_MAX_QUERIES:
            return SearchResult._make(self._search_ivf_pq4(xq, k, kk, nprobe))
        if not self.fused or xq.shape[0] > FUSED_MAX_QUERIES:
            return self.file.search_plan(xq, k, self.plan, nprobe)
        return SearchResult._make(self._search_pq4(xq, k, kk, self._width(kk, count), K.fastscan.ALL_ROWS_ALLOWED))

    def _width(self, kk: int, rows: int) -> int:
        """Candidates the scan keeps: ``ceil(kk x oversample)`` of at most ``rows`` for a two-stage
        plan, else ``kk``. (math.ceil, not np.ceil: the same integer, 0.16 us less a query.)"""
        return kk if self.fine is None else min(rows, math.ceil(kk * self.plan.oversample))

    def _folded(self, xq: np.ndarray) -> tuple:
        """What the fused 4-bit kernels take of the queries: (coarse_q, bias, fine_q, fine_codes,
        fine_bias, const, l2, qnorms)."""
        doubled = xq * np.float32(2.0) if self.file.metric == "l2" and self.fine is not None else None
        coarse_q, const, bias = self.coarse.fold(xq, doubled)
        fine_q, fine_codes, fine_bias = coarse_q, NO_CODES, NO_BIAS
        if self.fine is not None:  # (codes read now: a tier loaded into RAM since is used from RAM)
            fine_q, const, fine_bias = self.fine.fold(xq, doubled)
            fine_codes = self.fine.dense_codes()
        return (coarse_q, bias, fine_q, fine_codes, fine_bias, const, *self._norms(xq))

    # The kernel wrappers below return the compiled call's (distances, ids); the caller makes the result.

    def _search_pq4(self, xq: np.ndarray, k: int, kk: int, width: int, allowed: np.ndarray) -> tuple:
        coarse_q, bias, fine_q, fine_codes, fine_bias, const, l2, qnorms = self._folded(xq)
        threads = dispatch.fast_scan_threads(xq.shape[0], self.coarse.codes)
        fast = self.fast
        return K.fused.search_pq4(coarse_q, self.codebooks, self.books_t, fast.blocked, self.coarse.codes, bias,
                                  fast.bias_max, fast.bias_gaps, fast.gap_unit, width, threads, fine_q, fine_codes,
                                  self.fine_layout, fine_bias, const, kk, k, self.file.ids, l2, qnorms, allowed)

    def _search_ivf_pq4(self, xq: np.ndarray, k: int, kk: int, nprobe: int | None) -> tuple:
        """An inverted-file 4-bit tier's fused search: the lists probed here (list scores by BLAS),
        everything from the tables to the ids in one compiled call (kernels/fused.py)."""
        ranges, order = self.coarse.probe_in_order(xq, self.coarse.check_nprobe(nprobe))
        coarse_q, bias, fine_q, fine_codes, fine_bias, const, l2, qnorms = self._folded(xq)
        fast = self.fast
        return K.fused.search_ivf_pq4(coarse_q, self.codebooks, self.books_t, fast.blocked, self.coarse.codes, bias,
                                      fast.bias_max, fast.bias_gaps, fast.gap_unit, ranges, order, self.rows_of,
                                      self._width(kk, self.file.count), dispatch.SERIAL_WORK, fine_q, fine_codes,
                                      self.fine_layout, fine_bias, const, kk, k, self.file.ids, l2, qnorms)

    def search_allowed(self, xq: np.ndarray, k: int, allow: RowMask,
                       nprobe: int | None = None) -> FilteredSearchResult:
        """:meth:`StoreFile.search_allowed` (the same strategy, the same results bit for bit): one to
        four queries take one compiled call: the 4-bit scan with the filter's block bits
        (kernels/fused.py:search_pq4, the unfiltered search's kernel), or the exact scan of the
        admitted rows of the fine tier (the exact strategy) or of a dense tier searched alone
        (SEARCH_DENSE_ROWS); anything else the separate kernels."""
        kk = min(k, allow.allowed)
        strategy = choose_strategy(allow.allowed, kk, self.file.dim, self.plan, self.scan_work)
        if kk > 0 and xq.shape[0] <= FUSED_MAX_QUERIES:
            if strategy == "exact" and self.fine_rows is not None:
                pair = self._search_rows(self.fine, self.fine_rows, xq, k, kk, allow.rows())
            elif strategy == "filtered-scan" and self.coarse_rows is not None:
                pair = self._search_rows(self.coarse, self.coarse_rows, xq, k, kk, allow.rows())
            elif strategy != "exact" and self.fused:
                pair = self._search_pq4(xq, k, kk, self._width(kk, allow.allowed), allow.blocks())
            else:
                return self.file.search_allowed(xq, k, self.plan, allow, nprobe)
            return filtered_result(pair, (strategy,), allow.allowed)
        return self.file.search_allowed(xq, k, self.plan, allow, nprobe)

    def _search_dense(self, xq: np.ndarray, k: int, kk: int) -> tuple:
        folded, const, bias = self.coarse.fold(xq)
        l2, qnorms = self._norms(xq)
        # small work (see search): one thread, set by the compiled call
        return self.dense(folded, self.coarse.codes, bias, const, kk, k, self.file.ids, l2, qnorms,
                          dispatch.default_parts(self.file.count, kk, 1), 1)

    def _search_numpy(self, xq: np.ndarray, k: int, kk: int) -> tuple:
        folded, const, bias = self.coarse.fold(xq)
        l2, qnorms = self._norms(xq)
        return dispatch.search_dense_numpy(folded, self.coarse.codes, bias, const, kk, k, self.file.ids, l2, qnorms)

    def _search_rows(self, tier: Tier, kernel, xq: np.ndarray, k: int, kk: int, rows: np.ndarray) -> tuple:
        """``rows`` of a dense ``tier`` scored exactly by ``kernel`` (fused.SEARCH_DENSE_ROWS), with
        the threads and row slices dispatch.scan_dense_rows gives a batch this small."""
        folded, const, bias = tier.fold(xq)
        codes = tier.dense_codes()
        l2, qnorms = self._norms(xq)
        threads = dispatch.serial_threads(xq.shape[0] * rows.shape[0] * codes.shape[1])
        return kernel(folded, codes, bias, rows, const, kk, k, self.file.ids, l2, qnorms,
                      dispatch.default_parts(rows.shape[0], kk, threads), threads)
