"""Query validation and the choice of kernel for a (metric, tier layout).

Every metric is served as a maximum inner product, so each code layout needs one family of kernels:
- ip and cosine: score = q . x (cosine stores unit vectors and normalises queries);
- l2: score = 2 q . x - |x|^2 = |q|^2 - |q - x|^2, with |x|^2 stored per document as ``sqnorms``.
Distances handed back follow FAISS: similarities for ip/cosine (higher is better) and squared L2
distances for l2 (lower is better).

Validation happens here, before any kernel runs: kernels assume finite float32 C-contiguous queries
of the right width and 1 <= k <= number of documents.
"""

from __future__ import annotations

import contextlib
import numbers
from typing import NamedTuple

import numba
import numpy as np

from .errors import InvalidDtypeError, InvalidInputError
from .ingest import check_finite, check_numeric_dtype
from .kernels import flat, topk

# Below this many queries, scan rows directly (each row read once for the whole batch); from it on, a BLAS
# product per block of rows wins (measured on 100K x 384: direct 41 ms vs BLAS 68 ms at 16 queries,
# 86 vs 92 at 32, 171 vs 101 at 64). FAISS switches at 20.
GEMM_MIN_QUERIES = 32
GEMM_BLOCK_BYTES = 32 << 20
MAX_K = 1 << 20
# Vectors and queries must keep |x|^2 below this, so that no score (2 q.x - |x|^2 at worst) can
# overflow float32 inside a kernel.
MAX_SQNORM = float(np.finfo(np.float32).max) / 4


class SearchResult(NamedTuple):
    """Top-k results: ``D, I = store.search(q, k)``.

    distances : (nq, k) float32, best first. Similarities for ip/cosine, squared L2 for l2.
    ids       : (nq, k) int64 document ids; -1 where fewer than k documents exist, with
                distance -inf (ip/cosine) or +inf (l2) there.
    """

    distances: np.ndarray
    ids: np.ndarray


def prepare_queries(queries, dim: int, metric: str) -> np.ndarray:
    """Validate queries and return them as a (nq, dim) float32 C-contiguous array."""
    if isinstance(queries, (str, bytes)):
        raise InvalidDtypeError("queries must be numbers (an array of shape (dim,) or (nq, dim)), not text")
    try:
        arr = np.asarray(queries)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"queries cannot be read as an array ({exc})") from None
    check_numeric_dtype(arr.dtype, "queries")
    if arr.ndim == 1:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise InvalidInputError(f"queries must have shape (dim,) or (nq, dim); got {arr.shape}")
    if arr.shape[0] == 0:
        raise InvalidInputError("no queries given: pass at least one vector")
    if arr.shape[1] != dim:
        raise InvalidInputError(f"queries have dimension {arr.shape[1]}, but the store holds dimension {dim}")
    with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused below
        xq = np.ascontiguousarray(arr, dtype=np.float32)
    check_finite(xq, 0, "queries")
    sq = np.einsum("ij,ij->i", xq, xq, dtype=np.float64)
    if metric == "cosine":
        if (sq == 0).any():
            row = int(np.argmax(sq == 0))
            raise InvalidInputError(f"query {row} is all zeros: cosine similarity is undefined for it")
        xq = (xq / np.sqrt(sq)[:, None]).astype(np.float32)  # float64: huge queries stay finite
    elif (sq > MAX_SQNORM).any():
        row = int(np.argmax(sq > MAX_SQNORM))
        raise InvalidInputError(
            f"query {row} has values so large that scores would overflow float32 (squared norm "
            f"{sq[row]:.3g}); scale the queries down"
        )
    return xq


def check_k(k, count: int) -> int:
    """Validate k; return how many results the kernels can actually produce (<= count)."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if k <= 0:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    if k > MAX_K:
        raise InvalidInputError(f"k = {k} is larger than the limit {MAX_K}; ask for fewer results")
    return min(int(k), count)


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


def finish(scores: np.ndarray, rows: np.ndarray, ids: np.ndarray, k: int, metric: str,
           xq: np.ndarray) -> SearchResult:
    """Turn kernel scores of queries ``xq`` and rows into distances and document ids, padded to k
    columns (l2 adds back each query's squared norm: score = |q|^2 - |q - x|^2)."""
    l2 = metric == "l2"
    qnorms = (xq * xq).sum(axis=1) if l2 else np.empty(0, dtype=np.float32)
    return SearchResult(*topk.to_results(scores, rows, ids, k, l2, qnorms))
