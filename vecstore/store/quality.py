"""A store measures itself: the calibration that picks the default two-stage search, the recall
self-check before a swap, and the drift check of compressed tiers. Every figure is recall@k on the
store's own documents held out as queries (vecstore.query.recall_at_k), with the exact answer from
the raw tier, so no ground-truth file is needed.

Calibration: how much to oversample a coarse tier.

When a compressed tier is added, vecstore measures on the store itself how many candidates the tier
must hand to the rescoring tier for recall@10 to reach a target (0.95 by default), and records the
measurement in the tier's ``calibration`` attribute. ``store.search(q, k)`` with no tier options then
scans the smallest calibrated tier and rescores with the recorded oversampling.

The check is leave-one-out: ``queries`` stored documents, chosen with a seed, each searched for its
nearest *other* documents (the document itself is removed from the truth and from the candidates),
with the exact answer taken from the raw tier.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..errors import InvalidInputError
from ..format import schema as fmt
from ..plan import rescore_refusal
from ..query import recall_at_k, without
from .store import Store
from .tier import Tier

OVERSAMPLES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
CALIBRATION_QUERIES = 200
# Single queries timed for a calibrated plan's latency (after a few untimed ones), which the default
# plan's choice weighs (vecstore.plan.default_plan): 50 medians agreed within 10% from run to run.
LATENCY_QUERIES = 50
LATENCY_WARMUP = 5
TARGET_RECALL = 0.95
K = 10


def calibrate(coarse: Tier, fine: Tier, raw: Tier, *, seed: int = 0,
              queries: int = CALIBRATION_QUERIES, target: float = TARGET_RECALL,
              progress: Callable[[int, int], None] | None = None) -> dict:
    """Measure recall@10 of (scan ``coarse``, rescore from ``fine``) for growing oversampling.

    Returns the JSON-safe record stored as the tier's ``calibration`` attribute. ``progress(done,
    total)``, if given, is called after the exact answer and after each oversampling tried (total:
    one plus every factor of OVERSAMPLES, for each nprobe tried of an inverted-file tier; the last
    call says done == total, also when it stops early).

    An inverted-file tier is calibrated for (nprobe, oversample) together: nprobe doubles from 1,
    each with the least oversampling that meets the target, while the plans that meet it get
    faster; the fastest is recorded (``nprobe``, with every pair tried under ``nprobe_sweep``).
    """
    probes = _nprobe_grid(coarse)
    total = 1 + len(OVERSAMPLES) * len(probes)
    done = [0]

    def step(n: int = 1) -> None:
        done[0] += n
        if progress is not None:
            progress(min(done[0], total), total)

    if progress is not None:
        progress(0, total)
    count = raw.count
    rng = np.random.default_rng(seed)
    own = np.sort(rng.choice(count, size=min(queries, count), replace=False))
    xq = np.ascontiguousarray(raw.codes[own], dtype=np.float32)
    k = min(K, count - 1)
    _, truth = raw.scan(xq, k + 1)
    truth = without(truth, own)[:, :k]
    step()
    sweep, best = [], None
    for nprobe in probes:
        record = _oversample_sweep(coarse, fine, xq, own, truth, k, target, nprobe, step)
        record["latency_us"] = round(plan_latency_us(coarse, fine, xq, k, record["oversample"], nprobe), 1)
        sweep.append(record)
        if record["meets_target"]:
            if best is not None and record["latency_us"] >= best["latency_us"]:
                break  # more lists cost more than the fewer candidates they save
            best = record
    if best is None:
        best = max(sweep, key=lambda r: r["recall_at_10"])
    if progress is not None:
        progress(total, total)
    out = {
        "method": "leave-one-out recall@10 on stored documents, exact truth from the raw tier",
        "rescore": fine.name,
        "target_recall_at_10": target,
        "oversample": best["oversample"],
        "latency_us": best["latency_us"],
        "recall_at_10": best["recall_at_10"],
        "meets_target": best["meets_target"],
        "recall_by_oversample": best["recall_by_oversample"],
        "queries": int(own.shape[0]),
        "seed": seed,
    }
    if coarse.lists is not None:
        out["nprobe"] = best["nprobe"]
        out["nprobe_sweep"] = [{key: r[key] for key in ("nprobe", "oversample", "recall_at_10", "meets_target",
                                                          "latency_us")} for r in sweep]
    return out


def _nprobe_grid(coarse: Tier) -> list[int | None]:
    """nprobe values an inverted-file tier is calibrated at: 1, 2, 4 ... nlist; [None] for flat tiers."""
    if coarse.lists is None:
        return [None]
    grid = [1 << i for i in range(coarse.nlist.bit_length()) if 1 << i < coarse.nlist]
    return grid + [coarse.nlist]


def _oversample_sweep(coarse: Tier, fine: Tier, xq: np.ndarray, own: np.ndarray, truth: np.ndarray, k: int,
                      target: float, nprobe: int | None, step: Callable[..., None]) -> dict:
    """Recall@k for each oversampling of OVERSAMPLES until one meets ``target``: that one, else the best."""
    count = coarse.count
    recalls, chosen = {}, None
    for tried, factor in enumerate(OVERSAMPLES, 1):
        width = min(count - 1, k * factor)
        _, cand = coarse.scan(xq, width + 1, candidates=True, nprobe=nprobe)
        cand = np.ascontiguousarray(without(cand, own)[:, :width])
        _, found = fine.rescore(xq, cand, k)
        recall = float(recall_at_k(found, truth, k).mean())
        recalls[str(factor)] = round(recall, 4)
        step()
        if recall >= target or width >= count - 1:
            chosen = factor if recall >= target else None
            if nprobe is not None:  # the next nprobe's steps start at its own share of the total
                step(len(OVERSAMPLES) - tried)
            break
    best = max(recalls, key=lambda f: recalls[f])
    factor = chosen if chosen is not None else int(best)
    return {"nprobe": nprobe, "oversample": factor, "recall_at_10": recalls[str(factor)],
            "meets_target": chosen is not None, "recall_by_oversample": recalls}


def calibrate_fastest(coarse: Tier, fines: list[Tier], raw: Tier, *, seed: int = 0,
                      queries: int = CALIBRATION_QUERIES, target: float = TARGET_RECALL,
                      progress: Callable[[int, int], None] | None = None) -> dict | None:
    """:func:`calibrate` against each tier of ``fines`` that can rescore ``coarse`` (raw, and any
    float16 or int8 tier the store holds): the record of the fastest plan that meets the target
    (else of the best recall), with every plan measured listed under ``alternatives``; None when no
    tier can rescore ``coarse`` (a tier as large as raw needs no second stage). Rescoring from
    a smaller dense tier reads fewer bytes a candidate, which matters most when it is not in the page
    cache; whether it is faster at the same recall is measured, not assumed."""
    usable = [f for f in fines if rescore_refusal(f, coarse) is None]
    if not usable:
        return None
    records = []
    for i, fine in enumerate(usable):
        def step(done: int, total: int, i: int = i) -> None:
            if progress is not None:
                progress(i * total + done, len(usable) * total)
        records.append(calibrate(coarse, fine, raw, seed=seed, queries=queries, target=target, progress=step))
    meeting = [r for r in records if r["meets_target"]]
    best = (min(meeting, key=lambda r: (r["latency_us"], -r["recall_at_10"])) if meeting
            else max(records, key=lambda r: (r["recall_at_10"], -r["latency_us"])))
    if len(records) > 1:
        best = dict(best, alternatives=[{key: r[key] for key in ("rescore", "oversample", "recall_at_10",
                                                                 "meets_target", "latency_us")} for r in records])
    return best


def plan_latency_us(coarse: Tier, fine: Tier, xq: np.ndarray, k: int, factor: float,
                    nprobe: int | None = None) -> float:
    """Median microseconds of one query's two-stage search (scan ``coarse`` for ``k * factor``
    candidates, rescore them on ``fine``) over the first LATENCY_QUERIES of ``xq``, on this machine
    now: what makes one calibrated plan faster than another of the same store."""
    width = min(coarse.count, int(np.ceil(k * factor)))
    times = []
    for i in range(min(LATENCY_WARMUP + LATENCY_QUERIES, xq.shape[0])):
        q = xq[i:i + 1]
        start = time.perf_counter()
        _, cand = coarse.scan(q, width, candidates=True, nprobe=nprobe)
        fine.rescore(q, cand, k)
        if i >= LATENCY_WARMUP:
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e6) if times else 0.0


# -- self-checks -----------------------------------------------------------------------------------

DRIFT_THRESHOLD = 0.05


def held_out_recall(store: Store, query_ids: np.ndarray, k: int = 10, **plan) -> np.ndarray:
    """Per query document, recall@k of ``store.search(..., **plan)`` against exact search, the
    query document itself left out of both result lists."""
    xq = store.vectors(query_ids)
    width = min(k + 1, store.count)
    exact = store.search(xq, width, tier=fmt.RAW_TIER).ids
    found = store.search(xq, width, **plan).ids if plan else store.search(xq, width).ids
    return recall_at_k(without(found, query_ids), without(exact, query_ids), k)


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
