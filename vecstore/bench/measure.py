"""Measuring search systems side by side: recall@1/10/100, batch QPS, single-query p50/p99.

Systems are measured alternately (:func:`vecstore.bench.metrics.time_repeated_interleaved`), so a
noisy neighbour on a shared machine slows each alike. Each system gets the queries in the form it
wants (FAISS: unit rows for a cosine store; vecstore normalises its own).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import metrics
from .groundtruth import Judge

RECALL_DEPTHS = (1, 10, 100)


@dataclass
class System:
    """A search to measure: ``search(queries, k) -> (D, I)`` over the database's row numbers."""

    name: str
    search: Callable[[np.ndarray, int], tuple]
    queries: np.ndarray


def recall_figures(system: System, judge: Judge, k: int) -> dict:
    """recall_at_1 / _10 / _100 and recall_at_k (None where the ground truth is not that deep), and a
    tie-tolerant recall_at_k. Each depth is its own search: a two-stage search of k=1 takes fewer
    candidates than one of k=100."""
    out: dict = {}
    for r in sorted(set(RECALL_DEPTHS) | {k}):
        key = f"recall_at_{r}"
        if r > judge.depth:
            out[key] = None
            continue
        ids = np.asarray(system.search(system.queries, r)[1])
        out[key] = judge.recall(ids, r)
        if r == k:
            out["recall_at_k_tie_tolerant"] = judge.recall_tie_tolerant(ids, r)
    out["recall_at_k"] = out[f"recall_at_{k}"]
    out.setdefault("recall_at_k_tie_tolerant", None)
    return out


def measure(systems: list[System], judge: Judge, *, k: int, single: int = 100, repeats: int = 3,
            warmup: int = 1) -> dict[str, dict]:
    """Per system: recall figures, ``qps`` (all queries in one call, median of ``repeats`` after
    ``warmup``), ``p50_ms`` / ``p99_ms`` over ``single`` one-query calls, and the raw timings."""
    figures = {s.name: recall_figures(s, judge, k) for s in systems}
    nq = systems[0].queries.shape[0]
    batch = metrics.time_repeated_interleaved(
        {s.name: (lambda s=s: s.search(s.queries, k)) for s in systems}, repeats=repeats, warmup=warmup)
    items = list(range(min(single, nq)))
    one = metrics.time_each_interleaved(
        {s.name: (lambda i, s=s: s.search(s.queries[i:i + 1], k)) for s in systems}, items,
        warmup=min(3, len(items)))
    for s in systems:
        f = figures[s.name]
        f["qps"] = nq / batch[s.name].median
        f["p50_ms"] = one[s.name].p50 * 1e3
        f["p99_ms"] = one[s.name].p99 * 1e3
        f["timings"] = {"batch": batch[s.name].summary(), "single": one[s.name].summary()}
    return figures
