"""Which kernel answers a scan or a rescoring, on how many threads: the one place that maps a code
layout ("f32", "f16", "i8", "pq8", "pq4") and a batch size to a kernel of this package.

Every metric is served as a maximum inner product, so each code layout needs one family of kernels:
- ip and cosine: score = q . x (cosine stores unit vectors and normalises queries);
- l2: score = 2 q . x - |x|^2 = |q|^2 - |q - x|^2, with |x|^2 stored per document as ``sqnorms``.
Distances handed back follow FAISS: similarities for ip/cosine (higher is better) and squared L2
distances for l2 (lower is better).

Callers have validated everything (vecstore.query): queries are finite float32 C-contiguous rows
already folded into code space, and 1 <= k <= number of rows. docs/kernels.md has the table of
which kernel answers which query and why.
"""

from __future__ import annotations

import contextlib
import sys
from typing import NamedTuple

import numpy as np


class _Kernels:
    """numba and the kernel modules, imported on first use (``K.flat.scan_f32``, ``K.numba``): they
    cost a fresh process about 0.2 s to import, which a scan answered in numpy (:func:`by_numpy`)
    need not pay. After the first use each is an attribute of this object."""

    def __getattr__(self, name: str):
        if name.startswith("__"):  # (copy, pickle and friends probing for hooks)
            raise AttributeError(name)
        import numba

        from . import fastscan, flat, fused, lists, pq, rescore, topk  # (topk sets numba's threading layer first)

        self.__dict__.update(numba=numba, fastscan=fastscan, flat=flat, fused=fused, lists=lists, pq=pq,
                             rescore=rescore, topk=topk)
        if name not in self.__dict__:
            raise AttributeError(name)
        return self.__dict__[name]


K = _Kernels()

# Below this many queries, scan rows directly (each row read once for the whole batch); from it on, a BLAS
# product per block of rows wins (measured on 100K x 384: direct 41 ms vs BLAS 68 ms at 16 queries,
# 86 vs 92 at 32, 171 vs 101 at 64). FAISS switches at 20.
GEMM_MIN_QUERIES = 32
GEMM_BLOCK_BYTES = 32 << 20

# Below this many inner-loop steps (rows x lookups or rows x dims) a scan runs on the calling thread
# only: it takes about a millisecond, less than waking the workers is worth. (A parallel region
# waits for every worker to be scheduled: on a machine busy with other processes that can cost a
# scheduler slice, 10-25 ms measured here, so busy hosts may prefer numba.set_num_threads(1).)
SERIAL_WORK = 2_000_000


def serial_threads(work: int) -> int:
    """The thread rule of small work: 1 when ``work`` is too small to wake another thread, else 0,
    the threads in effect. :func:`threads_for` applies it around Python calls of the kernels;
    kernels/fused.py's searches take it as their ``threads`` argument and apply it in the compiled
    call (setting the thread count from Python cost 3.3 us a query)."""
    return 1 if work < SERIAL_WORK else 0


@contextlib.contextmanager
def threads_for(work: int):
    """Run the kernels in this block on one thread when ``work`` is small (:func:`serial_threads`;
    numba's setting is thread-local, so concurrent callers are unaffected)."""
    if not serial_threads(work):
        yield
        return
    previous = K.numba.get_num_threads()
    K.numba.set_num_threads(1)
    try:
        yield
    finally:
        K.numba.set_num_threads(previous)


# A slice of rows should hold many times k rows: its top-k reservoir admits nearly every row until
# its threshold has risen, and every slice's k best are merged at the end. With the k x oversample
# candidates of a two-stage search (k = 1280 over 100,000 pq8 codes, one query) 8 slices took 1.16 ms,
# 2 slices 0.69 ms; at k = 10, 0.31 ms either way.
ROWS_PER_RESULT = 32


def default_parts(n: int, k: int = 1, threads: int = 0) -> int:
    """How many row slices a scan on ``threads`` threads (0: the threads in effect) is split into: a
    few per thread, none smaller than 2048 rows or than ROWS_PER_RESULT x k rows (but at least one
    per thread)."""
    threads = threads or K.numba.get_num_threads()
    parts = min(4 * threads, n // 2048, max(threads, n // (ROWS_PER_RESULT * k)))
    return int(max(1, parts))


def pq_parts(nq: int, n: int, k: int, group: int) -> int:
    """Row slices for a PQ scan that takes queries ``group`` at a time: enough (group, slice) tasks
    to keep every thread busy."""
    groups = (nq + group - 1) // group
    return int(max(1, min(default_parts(n, k), (4 * K.numba.get_num_threads() + groups - 1) // groups)))


def _block_rows(nq: int, dim: int) -> int:
    return int(max(256, GEMM_BLOCK_BYTES // (4 * max(dim, nq))))


_DIRECT = {"f32": "scan_f32", "f16": "scan_f16", "i8": "scan_i8"}  # kernels of flat.py
_WIDEN = {"f32": lambda b: b, "f16": lambda b: b.view(np.float16).astype(np.float32),
          "i8": lambda b: b.astype(np.float32)}


def scan_dense(xq: np.ndarray, codes: np.ndarray, bias: np.ndarray, k: int, layout: str):
    """Top-k of ``xq @ decode(codes).T + bias`` for a dense layout ("f32", "f16" as uint16, "i8").

    Returns best-first (scores, rows), each (nq, k).
    """
    nq, n = xq.shape[0], codes.shape[0]
    if nq < GEMM_MIN_QUERIES:
        with threads_for(nq * n * codes.shape[1]):
            return getattr(K.flat, _DIRECT[layout])(xq, codes, bias, k, default_parts(n, k))
    hs, hi, sizes = K.topk.empty_heaps(nq, k)
    widen = _WIDEN[layout]
    step = _block_rows(nq, xq.shape[1])
    for start in range(0, n, step):
        stop = min(start + step, n)
        scores = xq @ widen(codes[start:stop]).T
        K.topk.push_block(scores, bias[start:stop] if bias.shape[0] else bias, start, hs, hi, sizes)
    K.topk.sort_heaps(hs, hi, sizes)
    return hs, hi


# -- small exact scans without a compiled kernel ------------------------------------------------------

# Up to this many multiply-adds (queries x rows x dims) an exact scan of a float32 tier for fewer than
# GEMM_MIN_QUERIES queries is one BLAS product and a partial sort in numpy (search_dense_numpy). A fresh
# process pays about 0.1 s for its first compiled call (numba loads the kernels and starts LLVM), against
# about a millisecond for numpy here; once loaded, the kernels are no faster on one thread (10,000 x
# 384, one query: 0.36 ms kernel, 0.25 ms numpy; 1,000 x 384: 0.036 / 0.035 ms), and on more threads
# at most this millisecond is lost. Above it, the kernels' parallel scans win by more than the load.
NUMPY_MAX_WORK = 4_000_000


def by_numpy(layout: str, nq: int, n: int, dim: int) -> bool:
    """Whether an exact scan of ``nq`` queries over ``n`` rows of ``dim`` codes (layout "f32", "f16",
    "i8") is answered by :func:`search_dense_numpy` rather than the compiled kernels: a small one,
    while this process has not imported numba. The numpy path saves a fresh process numba's import
    and kernel load; once numba is in (an encoder, a PQ tier, any kernel), the kernels cost nothing
    more, and they scale with Python threads where BLAS's own threads oversubscribe the cores (text
    queries from 2 threads on 2 cores: 0.63x the rate of one through numpy)."""
    return (layout == "f32" and nq < GEMM_MIN_QUERIES and nq * n * dim <= NUMPY_MAX_WORK
            and not numba_imported())


def numba_imported() -> bool:
    """Whether this process has imported numba (by_numpy's test, apart so that tests can vary it)."""
    return "numba" in sys.modules


def search_dense_numpy(folded: np.ndarray, codes: np.ndarray, bias: np.ndarray, const: np.ndarray, kk: int, k: int,
                       ids: np.ndarray, l2: bool, qnorms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distances, ids), each (nq, k), of an exact scan of float32 ``codes`` (n, d) by ``folded``
    queries, in numpy: what kernels/fused.py's ``search_dense`` returns (scores ``q . x + bias[row]
    + const[q]``, best ``kk <= n`` first, ties to the lower row, padded to k), with the same ranking
    up to float rounding (BLAS sums in another order): scores that differ in their last bits may come
    out in another order."""
    nq, n = folded.shape[0], codes.shape[0]
    scores = folded @ codes.T  # (nq, n) float32
    if bias.shape[0]:
        scores += bias
    scores[np.isnan(scores)] = -np.inf  # (only a damaged file has NaN) ranked last, as the kernels rank it
    distances = np.full((nq, k), np.inf if l2 else -np.inf, dtype=np.float32)
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    for q in range(nq):  # (fewer than GEMM_MIN_QUERIES: one-dimensional calls cost less than batched ones)
        row_scores = scores[q]
        if kk < n:  # every row scoring at least the kk-th best, in row order, so that ties go to the lower row
            rows = np.flatnonzero(row_scores >= np.partition(row_scores, n - kk)[n - kk])
        else:
            rows = np.arange(n)
        best = row_scores[rows]
        order = np.argsort(-best, kind="stable")[:kk]
        best = best[order] + np.float32(const[q]) if const[q] else best[order]
        distances[q, :kk] = np.maximum(qnorms[q] - best, np.float32(0.0)) if l2 else best
        out_ids[q, :kk] = ids[rows[order]]
    return distances, out_ids


# -- product quantization ---------------------------------------------------------------------------

# From this many queries on, 8-bit PQ batches are scanned GROUP queries a vector; measured on
# 100,000 rows, m = 48/64/256: 4 queries 2.4/5.8/29.7 ms grouped against 8.2/8.4/30.2 one at a time,
# 2 queries slower grouped. The grouped scan does about a quarter of the work per (row, query).
GROUPED_MIN_QUERIES = 4
GROUPED_SPEEDUP = 4
# From this many queries on, the fast scan's tables are quantised on every thread (1,000 queries,
# m = 96: 13 ms on one thread, 7 on two; one query: 13 us serial, 40 us in a parallel region).
PARALLEL_TABLES_QUERIES = 64

# The uint8 row mask of "every row" that the PQ kernels take when there is no filter.
ALL_ROWS = np.zeros(0, dtype=np.uint8)


def fast_scan() -> bool:
    """Whether this machine runs the 4-bit fast scan (AVX-512 VBMI or AVX2); otherwise 4-bit codes are
    scanned through fused 256-entry tables (kernels/pq.py), with the same results. Asked of the CPU
    (through llvmlite) on first use and kept as the module attribute ``FAST_SCAN``, which tests set
    to False to take the other path."""
    found = globals().get("FAST_SCAN")
    if found is None:
        found = globals()["FAST_SCAN"] = bool(K.fastscan.LAYOUT)
    return found


def __getattr__(name: str):
    if name == "FAST_SCAN":
        return fast_scan()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class FastLayout(NamedTuple):
    """A 4-bit tier as the fast scan reads it, built once per tier (private memory about the codes'
    size, plus a byte a row with a bias): the codes in blocks (fastscan.to_blocked) and, with a bias
    (an l2 store's minus the norms), each block's largest (fastscan.block_max) and each row's gap
    below it (fastscan.bias_gaps); with none, empty arrays and 0.0."""

    blocked: np.ndarray
    bias_max: np.ndarray
    bias_gaps: np.ndarray
    gap_unit: float


def blocked_codes(codes: np.ndarray, m: int, bias: np.ndarray) -> FastLayout:
    """:class:`FastLayout` of ``codes`` with ``bias``: what :func:`scan_pq` needs."""
    return FastLayout(K.fastscan.to_blocked(np.asarray(codes), m), *K.fastscan.bias_bounds(bias, codes.shape[0]))


def scan_pq(lut: np.ndarray, codes: np.ndarray, bias: np.ndarray, k: int, layout: str,
            blocked=None, exact: bool = True, allow: np.ndarray | None = None,
            best_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-k over PQ codes given per-query lookup tables ``lut`` (nq, m, ksub).

    The fast scan for 4-bit codes where the CPU has it (``blocked``: a callable returning
    :func:`blocked_codes`, called only then), else 256-entry tables (4-bit codes through fused pair
    tables) scanned a query at a time, or GROUP queries a vector for batches. Non-finite tables (only
    a damaged file makes them) take the scalar kernel, which ranks NaN last. ``exact=False`` lets
    the fast scan rank by its quantised scores (candidates for rescoring; see fastscan.scan_pq4_fast).
    ``allow``: a uint8 row mask (n,) of the rows that may be returned (k <= their count), or None.
    ``best_first=False``: the fast scan may leave each query's top k in any order (padding last).
    """
    nq, n = lut.shape[0], codes.shape[0]
    finite = bool(np.isfinite(lut).all())
    work = nq * n * codes.shape[1]
    if layout == "pq4":
        if fast_scan() and finite and blocked is not None:
            return _scan_fast(lut, codes, bias, k, blocked(), exact, allow, best_first)
        if finite and not exact:  # no fast scan here: the same quantised candidates
            lut8, base, scale, _ = K.fastscan.quantize_tables(lut)
            if allow is None:
                with threads_for(work):
                    return K.fastscan.scan_pq4_quantised(lut8, base, scale, codes, lut.shape[1], bias, k,
                                                         pq_parts(nq, n, k, 1))
            # with a mask: the admitted rows' codes (and biases), in row order so ties still go to
            # the lower row, scanned by the same kernel; a fallback path, so the copy is acceptable
            rows = np.flatnonzero(allow)
            sub_bias = bias[rows] if bias.shape[0] else bias
            with threads_for(nq * rows.shape[0] * codes.shape[1]):
                scores, found = K.fastscan.scan_pq4_quantised(lut8, base, scale, np.ascontiguousarray(codes[rows]),
                                                              lut.shape[1], sub_bias, k,
                                                              pq_parts(nq, rows.shape[0], k, 1))
            return scores, rows[found]
        lut = K.pq.pair_tables(lut, codes.shape[1])
    mask = ALL_ROWS if allow is None else allow
    if finite and nq >= GROUPED_MIN_QUERIES:
        with threads_for(work // GROUPED_SPEEDUP):
            return K.pq.scan_pq8_grouped(lut, codes, bias, mask, k, pq_parts(nq, n, k, K.pq.GROUP))
    with threads_for(work):
        return K.pq.scan_pq8(lut, codes, bias, mask, k, pq_parts(nq, n, k, K.pq.QUERY_GROUP))


def fast_scan_work(nq: int, codes: np.ndarray) -> int:
    """The work figure :func:`threads_for` weighs for a fast scan of ``nq`` queries over ``codes``."""
    return nq * codes.shape[0] * codes.shape[1] // K.fastscan.SPEEDUP


def fast_scan_parts(nq: int, n: int) -> int:
    """Row slices of a fast scan on the threads now in effect (fastscan.scan_parts)."""
    return K.fastscan.scan_parts(nq, n, K.numba.get_num_threads())


def fast_scan_threads(nq: int, codes: np.ndarray) -> int:
    """:func:`serial_threads` for a fast scan of ``nq`` queries over ``codes`` (search_pq4's)."""
    return serial_threads(fast_scan_work(nq, codes))


def _scan_fast(lut: np.ndarray, codes: np.ndarray, bias: np.ndarray, k: int, fast: FastLayout, exact: bool,
               allow: np.ndarray | None, best_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """4-bit PQ through quantised tables in SIMD registers; the same results as the float scan."""
    nq, n = lut.shape[0], codes.shape[0]
    lut8, base, scale, margin, allowed = _fast_tables(lut, allow, n)
    with threads_for(fast_scan_work(nq, codes)):
        return K.fastscan.scan_pq4_fast(lut, lut8, base, scale, margin, fast.blocked, codes, bias, fast.bias_max,
                                        fast.bias_gaps, fast.gap_unit, allowed, k, fast_scan_parts(nq, n), exact,
                                        best_first)


def _fast_tables(lut: np.ndarray, allow: np.ndarray | None, n: int) -> tuple:
    """What a fast scan takes beside the codes: the tables quantised (on every thread for a batch)
    and the block bits of ``allow`` (or of every row)."""
    quantize = (K.fastscan.quantize_tables if lut.shape[0] < PARALLEL_TABLES_QUERIES
                else K.fastscan.quantize_tables_parallel)
    allowed = K.fastscan.ALL_ROWS_ALLOWED if allow is None else K.fastscan.block_allow(allow, n)
    return (*quantize(lut), allowed)


# -- inverted-file tiers (vecstore.codecs.ivf) --------------------------------------------------------
#
# A query scans only its probed lists: ``ranges`` (nq, nprobe, 2) holds each list's [start, stop)
# positions in the list-ordered codes, in increasing order, and the rows returned are those positions.
# Every query has its own rows, so the scans run a query a task; the 4-bit fast scan takes the queries
# that probe one list one after another (fastscan.scan_pq4_lists).


# From this many queries on, list scores are computed by kernels/lists.py:centroid_scores instead of
# numpy's BLAS (whose spinning threads slowed the rest of a batch; one query: BLAS 36 us, the kernel 78).
BLAS_FREE_QUERIES = PARALLEL_TABLES_QUERIES


def list_scores(xq: np.ndarray, ivf, metric: str) -> np.ndarray:
    """(nq, nlist) float32 list scores of validated queries (vecstore.codecs.ivf.IVF.probe_scores):
    numpy's BLAS for a few queries, the compiled kernel for a batch. The two sum in other orders,
    so their last bits may differ (docs/format.md allows it: "List scores")."""
    if xq.shape[0] < BLAS_FREE_QUERIES:
        return ivf.probe_scores(xq, metric)
    return K.lists.centroid_scores(*_list_score_terms(xq, ivf, metric))


def assign_lists(x: np.ndarray, ivf, metric: str) -> np.ndarray:
    """(n,) int64: the list of each validated row as the writer files it (docs/format.md,
    "Assignment": the highest list score, ties to the lower list), by lists.nearest_centroids (no
    score matrix: 30% faster than numpy's BLAS and argmax). Its sums run in another order than
    IVF.probe_scores', so a row whose two best lists score within float rounding may be filed
    in the other (1 row of 200,000 measured); readers use the stored lists."""
    return K.lists.nearest_centroids(*_list_score_terms(x, ivf, metric))


def _list_score_terms(x: np.ndarray, ivf, metric: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, centroids, bias) whose ``rows . c + bias`` is IVF.probe_scores: in l2 stores
    2 x . c - |c|^2, (2 x) . c being exactly twice x . c."""
    q = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "l2":
        return q * np.float32(2.0), ivf.centroids_, -ivf.centroid_sqnorms
    return q, ivf.centroids_, np.empty(0, dtype=np.float32)


def probe_lists(scores: np.ndarray, nprobe: int, offsets: np.ndarray) -> np.ndarray:
    """(nq, nprobe, 2) position ranges of each query's ``nprobe`` best lists by ``scores`` (nq, nlist)."""
    return K.lists.nearest_lists(np.ascontiguousarray(scores, dtype=np.float32), int(nprobe), offsets)


def scan_lists(folded: np.ndarray, lut: np.ndarray | None, codes: np.ndarray, bias: np.ndarray, k: int, layout: str,
               ranges: np.ndarray, blocked=None, exact: bool = True,
               allow: np.ndarray | None = None, best_first: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-k over each query's ``ranges`` of ``codes`` (PQ layouts through ``lut``, dense ones
    through the ``folded`` queries), best first, padded with row -1 and -inf where the probed
    lists hold fewer than k rows (that ``allow``, a uint8 mask in position order, admits).
    ``best_first=False``: each query's top k in any order (the padding still last), for callers
    that need only the set; the 4-bit fast scan then skips its sort."""
    nq = ranges.shape[0]
    work = int((ranges[:, :, 1] - ranges[:, :, 0]).sum()) * codes.shape[1]
    if layout in ("pq8", "pq4"):
        finite = bool(np.isfinite(lut).all())
        if layout == "pq4" and fast_scan() and finite and blocked is not None:
            lut8, base, scale, margin, allowed = _fast_tables(lut, allow, codes.shape[0])
            fast = blocked()
            with threads_for(work // K.fastscan.SPEEDUP):
                return K.fastscan.scan_pq4_lists(lut, lut8, base, scale, margin, fast.blocked, codes, bias,
                                                 fast.bias_max, fast.bias_gaps, fast.gap_unit,
                                                 allowed, ranges, K.fastscan.list_major(ranges),
                                                 K.numba.get_num_threads(), k, exact, best_first)
        if layout == "pq4":
            lut = K.pq.pair_tables(lut, codes.shape[1])
        with threads_for(work):
            return K.pq.scan_pq8_lists(lut, codes, bias, ALL_ROWS if allow is None else allow, ranges, k)
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    rows = np.full((nq, k), -1, dtype=np.int64)
    for q in range(nq):  # dense layouts: a query at a time over the rows of its lists
        mine = np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in ranges[q]])
        if allow is not None:
            mine = mine[allow[mine] != 0]
        kq = min(k, mine.shape[0])
        if kq:
            scores[q, :kq], rows[q, :kq] = (a[0] for a in scan_dense_rows(folded[q:q + 1], codes, bias, kq, layout, mine))
    return scores, rows


# -- rescoring and results --------------------------------------------------------------------------

# The layouts that can score chosen rows exactly, and their code in the rescoring kernel.
RESCORE_LAYOUTS = {"f32": 0, "i8": 1, "f16": 2}


def rescore(folded: np.ndarray, codes: np.ndarray, layout: str, candidates: np.ndarray, bias: np.ndarray,
            k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-first (scores, rows) of each query's ``candidates`` rows (-1: none), scored exactly on a
    dense layout (float16 codes given as uint16); small work on the calling thread, without a
    parallel region."""
    kernel = K.rescore.rescore if candidates.size * codes.shape[1] >= SERIAL_WORK else K.rescore.rescore_serial
    return kernel(folded, codes, RESCORE_LAYOUTS[layout], candidates, bias, k)


def finish(scores: np.ndarray, rows: np.ndarray, ids: np.ndarray, k: int, metric: str,
           xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn kernel scores of queries ``xq`` and rows into (distances, document ids), padded to k
    columns (l2 adds back each query's squared norm: score = |q|^2 - |q - x|^2)."""
    l2 = metric == "l2"
    qnorms = (xq * xq).sum(axis=1) if l2 else np.empty(0, dtype=np.float32)
    return K.topk.to_results(scores, rows, ids, k, l2, qnorms)


# -- filtered scans (issue 18) ------------------------------------------------------------------------
#
# A filter reaches the kernels as a uint8 row mask (n,), nonzero = allowed (deleted rows are already
# zero in it). Dense layouts scan the list of allowed rows (np.flatnonzero of the mask: ~0.1 ms for
# 100,000 rows, against milliseconds of dot products); PQ layouts skip masked rows inside the scan
# (one byte a row; :func:`scan_pq` with ``allow``, the same kernels with a mask), and the 4-bit fast
# scan skips whole blocks with no allowed row. Callers pass 1 <= k <= allowed rows.

# Below this many allowed rows a batch is scanned directly too: gathering the rows and one BLAS call
# cost more (1,000 rows x 384, 50 queries: 17 ms through BLAS and push_block, against about 1.5 ms
# direct; OpenBLAS's spinning threads delay the numba region that follows).
GEMM_MIN_ROWS = 20_000

_DIRECT_ROWS = {"f32": "scan_f32_rows", "f16": "scan_f16_rows", "i8": "scan_i8_rows"}  # kernels of flat.py


def scan_dense_rows(xq: np.ndarray, codes: np.ndarray, bias: np.ndarray, k: int, layout: str,
                    rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scan_dense` over only ``rows`` (sorted, unique int64). Returns best-first (scores, rows)."""
    nq, n = xq.shape[0], rows.shape[0]
    if nq < GEMM_MIN_QUERIES or n < GEMM_MIN_ROWS:
        with threads_for(nq * n * codes.shape[1]):
            return getattr(K.flat, _DIRECT_ROWS[layout])(xq, codes, bias, rows, k, default_parts(n, k))
    hs, hi, sizes = K.topk.empty_heaps(nq, k)
    widen = _WIDEN[layout]
    step = _block_rows(nq, xq.shape[1])
    for start in range(0, n, step):
        block = rows[start:start + step]
        scores = xq @ widen(codes[block]).T
        K.topk.push_block(scores, bias[block] if bias.shape[0] else bias, start, hs, hi, sizes)
    K.topk.sort_heaps(hs, hi, sizes)
    return hs, np.where(hi >= 0, rows[np.maximum(hi, 0)], -1)
