"""Choosing the default two-stage search: how much to oversample a coarse tier.

When a compressed tier is added, vecstore measures on the store itself how many candidates the tier
must hand to the rescoring tier for recall@10 to reach a target (0.95 by default), and records the
measurement in the tier's ``calibration`` attribute. ``store.search(q, k)`` with no tier options then
scans the smallest calibrated tier and rescores with the recorded oversampling.

The check is leave-one-out: ``queries`` stored documents, chosen with a seed, each searched for its
nearest *other* documents (the document itself is removed from the truth and from the candidates),
with the exact answer taken from the raw tier.
"""

from __future__ import annotations

import numpy as np

from .tier import Tier

OVERSAMPLES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CALIBRATION_QUERIES = 200
TARGET_RECALL = 0.95
K = 10


def _drop_self(rows: np.ndarray, own: np.ndarray, width: int) -> np.ndarray:
    """Remove each query's own row from its result list and keep ``width`` columns."""
    out = np.full((rows.shape[0], width), -1, dtype=np.int64)
    for q in range(rows.shape[0]):
        kept = rows[q][rows[q] != own[q]][:width]
        out[q, : kept.shape[0]] = kept
    return out


def calibrate(coarse: Tier, fine: Tier, raw: Tier, *, seed: int = 0,
              queries: int = CALIBRATION_QUERIES, target: float = TARGET_RECALL) -> dict:
    """Measure recall@10 of (scan ``coarse``, rescore from ``fine``) for growing oversampling.

    Returns the JSON-safe record stored as the tier's ``calibration`` attribute.
    """
    count = raw.count
    rng = np.random.default_rng(seed)
    own = np.sort(rng.choice(count, size=min(queries, count), replace=False))
    xq = np.ascontiguousarray(raw.codes[own], dtype=np.float32)
    k = min(K, count - 1)
    _, truth = raw.scan(xq, k + 1)
    truth = _drop_self(truth, own, k)
    recalls = {}
    chosen = None
    for factor in OVERSAMPLES:
        width = min(count - 1, k * factor)
        _, cand = coarse.scan(xq, width + 1)
        cand = _drop_self(cand, own, width)
        _, found = fine.rescore(xq, cand, k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))
        recalls[str(factor)] = round(recall, 4)
        if recall >= target:
            chosen = factor
            break
        if width >= count - 1:
            break
    best = max(recalls, key=lambda f: recalls[f])
    return {
        "method": "leave-one-out recall@10 on stored documents, exact truth from the raw tier",
        "rescore": fine.name,
        "target_recall_at_10": target,
        "oversample": chosen if chosen is not None else int(best),
        "recall_at_10": recalls[str(chosen)] if chosen is not None else recalls[best],
        "meets_target": chosen is not None,
        "recall_by_oversample": recalls,
        "queries": int(own.shape[0]),
        "seed": seed,
    }
