"""Exact ground truth with vecstore's own exact search, and the true scores recall is judged by.

:func:`exact_neighbors` searches the raw float32 tier of a store (exact, multi-threaded numba or
BLAS kernels) a block of queries at a time, so memory stays at one block of results whatever the
number of queries. The store's ids must be its row numbers (a bench store is built that way).
"""

from __future__ import annotations

import sys

import numpy as np

from . import datasets

GT_DEPTH = 100          # neighbours kept per query: enough for recall@100
QUERY_BLOCK = 256


def exact_neighbors(store, queries: np.ndarray, depth: int = GT_DEPTH, *, progress: bool = True) -> np.ndarray:
    """(nq, min(depth, n)) int64 rows of the exact nearest neighbours, best first."""
    from tqdm import tqdm

    depth = min(int(depth), store.count)
    out = np.empty((queries.shape[0], depth), dtype=np.int64)
    with tqdm(total=queries.shape[0], unit="query", desc="exact ground truth", file=sys.stderr,
              dynamic_ncols=True, disable=not progress, leave=False) as bar:
        for start in range(0, queries.shape[0], QUERY_BLOCK):
            stop = min(start + QUERY_BLOCK, queries.shape[0])
            out[start:stop] = store.search(queries[start:stop], depth, tier="raw").ids
            bar.update(stop - start)
    return out


class Judge:
    """Recall of any result against the ground truth, strict and tolerant of tied scores.

    Parameters
    ----------
    groundtruth : (nq, depth) int64 database rows, best first.
    database : (n, d) the vectors as searched (unit rows for cosine; a memory map is fine).
    queries : (nq, d) float32, unit rows for cosine.
    metric : the store's metric.
    tolerance : a returned row outside the true top k still counts when its true score is within
        this of the k-th true score (two rows tied in float32 may legitimately swap).
    """

    def __init__(self, groundtruth: np.ndarray, database, queries: np.ndarray, metric: str,
                 tolerance: float = 1e-5):
        self.groundtruth = np.asarray(groundtruth, dtype=np.int64)
        self.database, self.queries = database, queries
        self.metric = metric
        self.exact_metric = "ip" if metric == "cosine" else metric   # rows and queries already unit
        self.tolerance = tolerance
        self._ref_scores: dict[int, np.ndarray] = {}

    @property
    def depth(self) -> int:
        return self.groundtruth.shape[1]

    def recall(self, ids: np.ndarray, k: int) -> float:
        """Strict recall@k: the share of the true top k among the first k returned rows."""
        from .metrics import recall_at_k

        return recall_at_k(np.asarray(ids)[:, :k], self.groundtruth, k)

    def recall_tie_tolerant(self, ids: np.ndarray, k: int) -> float:
        from .metrics import recall_at_k

        ids = np.asarray(ids)[:, :k]
        if k not in self._ref_scores:
            self._ref_scores[k] = datasets.exact_scores(self.queries, self.database, self.groundtruth[:, :k],
                                                        self.exact_metric)
        scores = datasets.exact_scores(self.queries, self.database, ids, self.exact_metric)
        return recall_at_k(ids, self.groundtruth, k, D=scores, D_ref=self._ref_scores[k], metric=self.metric,
                           atol=self.tolerance)
