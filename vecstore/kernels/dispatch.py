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

import numba
import numpy as np

from . import fastscan, flat, pq, topk
from .rescore import rescore as rescore_kernel
from .rescore import rescore_serial

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


@contextlib.contextmanager
def threads_for(work: int):
    """Run the kernels in this block on one thread when ``work`` is small (numba's setting is
    thread-local, so concurrent callers are unaffected)."""
    if work >= SERIAL_WORK:
        yield
        return
    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


# A slice of rows should hold many times k rows: its top-k reservoir admits nearly every row until
# its threshold has risen, and every slice's k best are merged at the end. With the k x oversample
# candidates of a two-stage search (k = 1280 over 100,000 pq8 codes, one query) 8 slices took 1.16 ms,
# 2 slices 0.69 ms; at k = 10, 0.31 ms either way.
ROWS_PER_RESULT = 32


def default_parts(n: int, k: int = 1) -> int:
    """How many row slices a scan is split into: a few per thread, none smaller than 2048 rows or
    than ROWS_PER_RESULT x k rows (but at least one per thread)."""
    threads = numba.get_num_threads()
    parts = min(4 * threads, n // 2048, max(threads, n // (ROWS_PER_RESULT * k)))
    return int(max(1, parts))


def pq_parts(nq: int, n: int, k: int, group: int) -> int:
    """Row slices for a PQ scan that takes queries ``group`` at a time: enough (group, slice) tasks
    to keep every thread busy."""
    groups = (nq + group - 1) // group
    return int(max(1, min(default_parts(n, k), (4 * numba.get_num_threads() + groups - 1) // groups)))


def _block_rows(nq: int, dim: int) -> int:
    return int(max(256, GEMM_BLOCK_BYTES // (4 * max(dim, nq))))


_DIRECT = {"f32": flat.scan_f32, "f16": flat.scan_f16, "i8": flat.scan_i8}
_WIDEN = {"f32": lambda b: b, "f16": lambda b: b.view(np.float16).astype(np.float32),
          "i8": lambda b: b.astype(np.float32)}


def scan_dense(xq: np.ndarray, codes: np.ndarray, bias: np.ndarray, k: int, layout: str):
    """Top-k of ``xq @ decode(codes).T + bias`` for a dense layout ("f32", "f16" as uint16, "i8").

    Returns best-first (scores, rows), each (nq, k).
    """
    nq, n = xq.shape[0], codes.shape[0]
    if nq < GEMM_MIN_QUERIES:
        with threads_for(nq * n * codes.shape[1]):
            return _DIRECT[layout](xq, codes, bias, k, default_parts(n, k))
    hs, hi, sizes = topk.empty_heaps(nq, k)
    widen = _WIDEN[layout]
    step = _block_rows(nq, xq.shape[1])
    for start in range(0, n, step):
        stop = min(start + step, n)
        scores = xq @ widen(codes[start:stop]).T
        topk.push_block(scores, bias[start:stop] if bias.shape[0] else bias, start, hs, hi, sizes)
    topk.sort_heaps(hs, hi, sizes)
    return hs, hi


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

# Whether this machine runs the 4-bit fast scan (AVX-512 VBMI or AVX2); otherwise 4-bit codes are scanned
# through fused 256-entry tables (kernels/pq.py), with the same results.
FAST_SCAN = bool(fastscan.LAYOUT)


def blocked_codes(codes: np.ndarray, m: int, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """4-bit codes in the fast scan's block layout, with each block's largest bias (l2 norms):
    what :func:`scan_pq` needs, built once per tier (private memory about the codes' size)."""
    blocked = fastscan.to_blocked(np.asarray(codes), m)
    bias_max = fastscan.block_max(bias, codes.shape[0]) if bias.shape[0] else np.empty(0)
    return blocked, bias_max


def scan_pq(lut: np.ndarray, codes: np.ndarray, bias: np.ndarray, k: int, layout: str,
            blocked=None, exact: bool = True, allow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k over PQ codes given per-query lookup tables ``lut`` (nq, m, ksub).

    The fast scan for 4-bit codes where the CPU has it (``blocked``: a callable returning
    :func:`blocked_codes`, called only then), else 256-entry tables (4-bit codes through fused pair
    tables) scanned a query at a time, or GROUP queries a vector for batches. Non-finite tables (only
    a damaged file makes them) take the scalar kernel, which ranks NaN last. ``exact=False`` lets
    the fast scan rank by its quantised scores (candidates for rescoring; see fastscan.scan_pq4_fast).
    ``allow``: a uint8 row mask (n,) of the rows that may be returned (k <= their count), or None.
    """
    nq, n = lut.shape[0], codes.shape[0]
    finite = bool(np.isfinite(lut).all())
    work = nq * n * codes.shape[1]
    if layout == "pq4":
        if FAST_SCAN and finite and blocked is not None:
            return _scan_fast(lut, codes, bias, k, *blocked(), exact, allow)
        if finite and not exact:  # no fast scan here: the same quantised candidates
            lut8, base, scale, _ = fastscan.quantize_tables(lut)
            if allow is None:
                with threads_for(work):
                    return fastscan.scan_pq4_quantised(lut8, base, scale, codes, lut.shape[1], bias, k,
                                                       pq_parts(nq, n, k, 1))
            # with a mask: the admitted rows' codes (and biases), in row order so ties still go to
            # the lower row, scanned by the same kernel; a fallback path, so the copy is acceptable
            rows = np.flatnonzero(allow)
            sub_bias = bias[rows] if bias.shape[0] else bias
            with threads_for(nq * rows.shape[0] * codes.shape[1]):
                scores, found = fastscan.scan_pq4_quantised(lut8, base, scale, np.ascontiguousarray(codes[rows]),
                                                            lut.shape[1], sub_bias, k,
                                                            pq_parts(nq, rows.shape[0], k, 1))
            return scores, rows[found]
        lut = pq.pair_tables(lut, codes.shape[1])
    mask = ALL_ROWS if allow is None else allow
    if finite and nq >= GROUPED_MIN_QUERIES:
        with threads_for(work // GROUPED_SPEEDUP):
            return pq.scan_pq8_grouped(lut, codes, bias, mask, k, pq_parts(nq, n, k, pq.GROUP))
    with threads_for(work):
        return pq.scan_pq8(lut, codes, bias, mask, k, pq_parts(nq, n, k, pq.QUERY_GROUP))


def fast_scan_work(nq: int, codes: np.ndarray) -> int:
    """The work figure :func:`threads_for` weighs for a fast scan of ``nq`` queries over ``codes``."""
    return nq * codes.shape[0] * codes.shape[1] // fastscan.SPEEDUP


def fast_scan_parts(nq: int, n: int) -> int:
    """Row slices of a fast scan on the threads now in effect: at most one slice per thread (more
    were slower), enough (query group, slice) tasks to keep every thread busy."""
    threads = numba.get_num_threads()
    groups = -(-nq // fastscan.QUERY_GROUP)
    return max(1, min(threads, -(-4 * threads // groups), -(-n // fastscan.BLOCK)))


def _scan_fast(lut: np.ndarray, codes: np.ndarray, bias: np.ndarray, k: int, blocked: np.ndarray,
               bias_max: np.ndarray, exact: bool, allow: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """4-bit PQ through quantised tables in SIMD registers; the same results as the float scan."""
    nq, n = lut.shape[0], codes.shape[0]
    quantize = fastscan.quantize_tables if nq < PARALLEL_TABLES_QUERIES else fastscan.quantize_tables_parallel
    lut8, base, scale, margin = quantize(lut)
    allowed = fastscan.ALL_ROWS_ALLOWED if allow is None else fastscan.block_allow(allow, n)
    with threads_for(fast_scan_work(nq, codes)):
        return fastscan.scan_pq4_fast(lut, lut8, base, scale, margin, blocked, codes, bias, bias_max, allowed, k,
                                      fast_scan_parts(nq, n), exact)



# -- inverted-file tiers (vecstore.codecs.ivf) --------------------------------------------------------
#
# A query scans only its probed lists: ``ranges`` (nq, nprobe, 2) holds each list's [start, stop)
# positions in the list-ordered codes, in increasing order, and the rows returned are those positions.
# Every query has its own rows, so the scans run a query a task.


def scan_lists(folded: np.ndarray, lut: np.ndarray | None, codes: np.ndarray, bias: np.ndarray, k: int, layout: str,
               ranges: np.ndarray, blocked=None, exact: bool = True,
               allow: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k over each query's ``ranges`` of ``codes`` (PQ layouts through ``lut``, dense ones
    through the ``folded`` queries), best first, padded with row -1 and -inf where the probed
    lists hold fewer than k rows (that ``allow``, a uint8 mask in position order, admits)."""
    nq = ranges.shape[0]
    work = int((ranges[:, :, 1] - ranges[:, :, 0]).sum()) * codes.shape[1]
    if layout in ("pq8", "pq4"):
        finite = bool(np.isfinite(lut).all())
        if layout == "pq4" and FAST_SCAN and finite and blocked is not None:
            quantize = fastscan.quantize_tables if nq < PARALLEL_TABLES_QUERIES else fastscan.quantize_tables_parallel
            lut8, base, scale, margin = quantize(lut)
            block_bits, bias_max = blocked()
            allowed = fastscan.ALL_ROWS_ALLOWED if allow is None else fastscan.block_allow(allow, codes.shape[0])
            with threads_for(work // fastscan.SPEEDUP):
                return fastscan.scan_pq4_lists(lut, lut8, base, scale, margin, block_bits, codes, bias, bias_max,
                                               allowed, ranges, k, exact)
        if layout == "pq4":
            lut = pq.pair_tables(lut, codes.shape[1])
        with threads_for(work):
            return pq.scan_pq8_lists(lut, codes, bias, ALL_ROWS if allow is None else allow, ranges, k)
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
    kernel = rescore_kernel if candidates.size * codes.shape[1] >= SERIAL_WORK else rescore_serial
    return kernel(folded, codes, RESCORE_LAYOUTS[layout], candidates, bias, k)


def finish(scores: np.ndarray, rows: np.ndarray, ids: np.ndarray, k: int, metric: str,
           xq: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Turn kernel scores of queries ``xq`` and rows into (distances, document ids), padded to k
    columns (l2 adds back each query's squared norm: score = |q|^2 - |q - x|^2)."""
    l2 = metric == "l2"
    qnorms = (xq * xq).sum(axis=1) if l2 else np.empty(0, dtype=np.float32)
    return topk.to_results(scores, rows, ids, k, l2, qnorms)


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

_DIRECT_ROWS = {"f32": flat.scan_f32_rows, "f16": flat.scan_f16_rows, "i8": flat.scan_i8_rows}


def scan_dense_rows(xq: np.ndarray, codes: np.ndarray, bias: np.ndarray, k: int, layout: str,
                    rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scan_dense` over only ``rows`` (sorted, unique int64). Returns best-first (scores, rows)."""
    nq, n = xq.shape[0], rows.shape[0]
    if nq < GEMM_MIN_QUERIES or n < GEMM_MIN_ROWS:
        with threads_for(nq * n * codes.shape[1]):
            return _DIRECT_ROWS[layout](xq, codes, bias, rows, k, default_parts(n, k))
    hs, hi, sizes = topk.empty_heaps(nq, k)
    widen = _WIDEN[layout]
    step = _block_rows(nq, xq.shape[1])
    for start in range(0, n, step):
        block = rows[start:start + step]
        scores = xq @ widen(codes[block]).T
        topk.push_block(scores, bias[block] if bias.shape[0] else bias, start, hs, hi, sizes)
    topk.sort_heaps(hs, hi, sizes)
    return hs, np.where(hi >= 0, rows[np.maximum(hi, 0)], -1)
