"""Merging top-k results searched separately: appended segments of one store, shards of many.

Every part returns its own best k (best first); the best k of the whole collection are among them.
Ties keep part order, then column order; padding (id -1, e.g. a dropped deleted document) sorts last.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .search import SearchResult


def worst_distance(metric: str) -> float:
    """The distance that pads a result with fewer than k documents (id -1)."""
    return np.inf if metric == "l2" else -np.inf


def merge_results(parts: Sequence[SearchResult], k: int, metric: str) -> SearchResult:
    """The best ``k`` of several (nq, k_i) results of the same queries, best first.

    Padding entries (id -1) sort last; the output is padded to ``k`` columns the same way.
    """
    if not parts:
        raise ValueError("merge_results needs at least one result")
    distances = np.concatenate([np.asarray(p.distances, dtype=np.float32) for p in parts], axis=1)
    ids = np.concatenate([np.asarray(p.ids, dtype=np.int64) for p in parts], axis=1)
    nq, width = ids.shape
    key = np.where(ids >= 0, distances if metric == "l2" else -distances, np.inf)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    out_d = np.full((nq, k), worst_distance(metric), dtype=np.float32)
    out_i = np.full((nq, k), -1, dtype=np.int64)
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
