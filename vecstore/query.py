"""What a query is and what it returns: query and k validation, the result types, and merging the
results of parts searched separately (appended segments of one store, shards of a collection).

Validation happens here, before any plan is resolved or kernel runs: kernels assume finite float32
C-contiguous queries of the right width (unit-normalised for cosine) and 1 <= k <= documents.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .errors import InvalidDtypeError, InvalidInputError
from .ingest import check_numeric_dtype, prepare_rows

MAX_K = 1 << 20


class SearchResult(NamedTuple):
    """Top-k results: ``D, I = store.search(q, k)``.

    distances : (nq, k) float32, best first. Similarities for ip/cosine, squared L2 for l2.
    ids       : (nq, k) int64 document ids; -1 where fewer than k documents exist, with
                distance -inf (ip/cosine) or +inf (l2) there.
    """

    distances: np.ndarray
    ids: np.ndarray


class TextSearchResult(NamedTuple):
    """``D, I, unknown = store.search_text(texts, k)``: as SearchResult, plus the words of each
    text that the encoder's vocabulary does not know (they were skipped)."""

    distances: np.ndarray
    ids: np.ndarray
    unknown_words: list[list[str]]


class ShardedSearchResult(SearchResult):
    """A :class:`SearchResult` (``D, I = result``) of a sharded collection.

    ``missing_shards`` names the shard files that did not answer; it is empty unless the search was
    made with ``allow_partial=True`` and some shards failed. Then the result holds the best k of the
    shards that answered, and may lack documents the missing shards would have given.

    With ``where=`` or ``allow=``, as a :class:`FilteredSearchResult` says for the parts of a store:
    ``strategies`` holds each shard's strategy, in the manifest's shard order (a shard's own parts
    joined by "+" where they differ; None for a missing shard), ``allowed`` how many documents the
    filter admitted in the shards that answered, and ``strategy`` the strategies used, joined. An
    unfiltered search has no strategies (``strategy`` is None).
    """

    def __new__(cls, distances, ids, missing_shards=(), strategies=(), allowed=None):
        self = super().__new__(cls, distances, ids)
        self.missing_shards = tuple(missing_shards)
        self.strategies = tuple(strategies)
        self.allowed = None if allowed is None else int(allowed)
        return self

    @property
    def complete(self) -> bool:
        return not self.missing_shards

    @property
    def strategy(self) -> str | None:
        """Every strategy a shard used that admitted a row (or "none"), joined by "+" if they differ;
        None for an unfiltered search."""
        if not self.strategies:
            return None
        return _joined(s for shard in self.strategies if shard is not None for s in shard.split("+"))


class FilteredSearchResult(SearchResult):
    """A :class:`SearchResult` (``D, I = result``) of a search with ``where=`` or ``allow=``.

    ``strategies`` names how each part (the main file, then each segment) was searched (see
    vecstore.filters.strategy: "exact", "filtered-two-stage", "filtered-scan", "none"); ``allowed``
    is how many live documents the filter admitted. A filter admitting fewer than k documents
    returns those, padded with id -1.
    """

    def __new__(cls, distances, ids, strategies=(), allowed=0):
        return filtered_result((distances, ids), tuple(strategies), int(allowed), cls)

    @property
    def strategy(self) -> str:
        """The one strategy of every part that admitted a row (or "none"), joined by "+" if they differ."""
        return _joined(self.strategies)


def filtered_result(pair: tuple, strategies: tuple, allowed: int,
                    cls: type = FilteredSearchResult) -> FilteredSearchResult:
    """A FilteredSearchResult (or ``cls``, a subclass) of a kernel's ``(distances, ids)``: the
    filtered search's one result object, made without namedtuple's argument handling (a filtered
    query once made a SearchResult, then this: 0.45 us, now 0.17)."""
    result = tuple.__new__(cls, pair)
    result.strategies = strategies
    result.allowed = allowed
    return result


def _joined(strategies) -> str:
    used = [s for s in dict.fromkeys(strategies) if s != "none"]
    return "+".join(used) or "none"


# -- validation ------------------------------------------------------------------------------------


def prepare_queries(queries, dim: int, metric: str) -> np.ndarray:
    """Validate queries and return them as a (nq, dim) float32 C-contiguous array (unit-normalised
    for cosine, through :func:`vecstore.ingest.prepare_rows` as stored vectors are)."""
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
    return prepare_rows(arr, metric, 0, "queries")


def check_k(k, count: int) -> int:
    """Validate k; return how many results the kernels can actually produce (<= count)."""
    # (type(k) is int first: the ABC check costs a query 0.3 us)
    if type(k) is not int and (isinstance(k, bool) or not isinstance(k, numbers.Integral)):
        raise InvalidInputError(f"k must be a positive integer, got {k!r}")
    if k <= 0:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    if k > MAX_K:
        raise InvalidInputError(f"k = {k} is larger than the limit {MAX_K}; ask for fewer results")
    return min(int(k), count)


# -- results of several parts ----------------------------------------------------------------------


def worst_distance(metric: str) -> float:
    """The distance that pads a result with fewer than k documents (id -1)."""
    return np.inf if metric == "l2" else -np.inf


def empty_result(nq: int, k: int, metric: str) -> SearchResult:
    """``nq`` rows of ``k`` padding entries: the answer of a part with no documents."""
    return SearchResult(np.full((nq, k), worst_distance(metric), np.float32), np.full((nq, k), -1, np.int64))


def merge_results(parts: Sequence[SearchResult], k: int, metric: str) -> SearchResult:
    """The best ``k`` of several (nq, k_i) results of the same queries, best first.

    Every part returns its own best k (best first); the best k of the whole collection are among
    them. Ties keep part order, then column order; padding (id -1) sorts last, and the output is
    padded to ``k`` columns the same way.
    """
    if not parts:
        raise ValueError("merge_results needs at least one result")
    distances = np.concatenate([np.asarray(p.distances, dtype=np.float32) for p in parts], axis=1)
    ids = np.concatenate([np.asarray(p.ids, dtype=np.int64) for p in parts], axis=1)
    nq, width = ids.shape
    key = np.where(ids >= 0, distances if metric == "l2" else -distances, np.inf)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    out_d, out_i = empty_result(nq, k, metric)
    take = min(k, width)
    out_d[:, :take] = np.take_along_axis(distances, order, axis=1)
    out_i[:, :take] = np.take_along_axis(ids, order, axis=1)
    return SearchResult(out_d, out_i)


def drop_ids(result: SearchResult, dropped: np.ndarray, metric: str) -> SearchResult:
    """``result`` with every id found in the sorted array ``dropped`` turned into padding (id -1)."""
    if dropped.shape[0] == 0:
        return result
    ids = result.ids
    pos = np.clip(np.searchsorted(dropped, ids), 0, dropped.shape[0] - 1)
    hit = (dropped[pos] == ids) & (ids >= 0)
    if not hit.any():
        return result
    return SearchResult(np.where(hit, worst_distance(metric), result.distances).astype(np.float32),
                        np.where(hit, -1, ids))


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int) -> np.ndarray:
    """Per query, the share of its first ``k`` true ids found anywhere in its ``found`` row; padding
    (-1) is no id, and a query with no true id scores 1. The one recall that calibration,
    self-checks and drift checks report (vecstore.bench adds tolerance for tied scores)."""
    found, truth = np.asarray(found), np.asarray(truth)[:, :k]
    hits = np.zeros(truth.shape, dtype=bool)
    for j in range(found.shape[1]):
        hits |= truth == found[:, j:j + 1]
    real = truth >= 0
    want = real.sum(axis=1)
    return np.where(want > 0, (hits & real).sum(axis=1) / np.maximum(want, 1), 1.0)


def without(ids: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Each row of ``ids`` with its query's own id ``own[q]`` removed (held-out checks: a stored
    document used as a query must not count itself); the row keeps its order, padded with -1."""
    ids = np.asarray(ids)
    hit = ids == np.asarray(own)[:, None]
    if ids.shape[1] and hit.sum(axis=1).max() <= 1 and not (ids[:, :-1] < 0)[ids[:, 1:] >= 0].any():
        # the usual case (own at most once, padding only at the end): shift what follows own left
        shifted = np.full_like(ids, -1)
        shifted[:, :-1] = ids[:, 1:]
        return np.where(np.cumsum(hit, axis=1, dtype=np.int8) > 0, shifted, ids)
    kept = np.where(hit, -1, ids)
    order = np.argsort(kept < 0, axis=1, kind="stable")
    return np.take_along_axis(kept, order, axis=1)
