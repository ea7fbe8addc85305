"""Recall self-checks on a store's own documents: before a swap, and for codec drift.

Each check queries the store with some of its own documents and leaves the query document out of
both answers (held out), comparing a search plan with exact search on the raw tier. No ground
truth file is needed, so a check runs anywhere the store does.
"""

from __future__ import annotations

import numpy as np

from . import _format as fmt
from ._store import Store
from .errors import InvalidInputError

DRIFT_THRESHOLD = 0.05


def held_out_recall(store: Store, query_ids: np.ndarray, k: int = 10, **plan) -> np.ndarray:
    """Per query document, recall@k of ``store.search(..., **plan)`` against exact search, the
    query document itself left out of both result lists."""
    xq = store.vectors(query_ids)
    width = min(k + 1, store.count)
    exact = store.search(xq, width, tier=fmt.RAW_TIER).ids
    found = store.search(xq, width, **plan).ids if plan else store.search(xq, width).ids
    recalls = np.empty(query_ids.shape[0])
    for i, qid in enumerate(query_ids.tolist()):
        truth = [d for d in exact[i].tolist() if d != qid and d >= 0][:k]
        got = {d for d in found[i].tolist() if d != qid and d >= 0}
        recalls[i] = len(got.intersection(truth)) / len(truth) if truth else 1.0
    return recalls


def _sample(ids: np.ndarray, size: int, seed: int) -> np.ndarray:
    if size >= ids.shape[0]:
        return np.asarray(ids)
    rng = np.random.default_rng(seed)
    return np.asarray(ids)[np.sort(rng.choice(ids.shape[0], size=size, replace=False))]


def self_check(store: Store, *, sample: int = 200, k: int = 10, seed: int = 0) -> dict:
    """Recall@k of the store's default search (what ``search(q, k)`` does) on ``sample`` held-out
    documents. A store whose default is exact search scores 1.0 by construction."""
    if store.count < 2:
        raise InvalidInputError("a recall self-check needs at least 2 documents")
    query_ids = _sample(store.ids, sample, seed)
    recalls = held_out_recall(store, query_ids, k)
    return {"recall": float(recalls.mean()), "k": k, "queries": int(query_ids.shape[0]),
            "plan": list(store.default_plan())}


def check_drift(store: Store, *, sample: int = 200, k: int = 10, threshold: float = DRIFT_THRESHOLD) -> dict:
    """Per compressed tier, recall@k (the tier alone, no rescoring) with the ``sample`` newest
    documents as queries against the ``sample`` oldest. Codec parameters trained on old documents
    that fit new ones badly show as a drop; above ``threshold`` the advice is to retrain the tier."""
    if not 0 <= threshold <= 1:
        raise InvalidInputError(f"threshold must be in [0, 1], got {threshold}")
    ids = np.asarray(store.ids)
    size = min(sample, ids.shape[0] // 2)
    if size < 1:
        raise InvalidInputError("a drift check needs at least 2 documents")
    oldest, newest = ids[:size], ids[-size:]
    tiers = []
    for name, tier in store.tiers.items():
        if name == fmt.RAW_TIER:
            continue
        old = float(held_out_recall(store, oldest, k, tier=name).mean())
        new = float(held_out_recall(store, newest, k, tier=name).mean())
        retrain = old - new > threshold
        tiers.append({
            "tier": name, "codec": tier.codec_string, "recall_oldest": old, "recall_newest": new,
            "drop": old - new, "retrain": retrain,
            "advice": (f"vecstore compress STORE --retrain {name}" if retrain else None),
        })
    return {"k": k, "queries": size, "threshold": threshold, "tiers": tiers}
