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

# Up to 1024: a 4-bit tier over 10M clustered documents needed more than 128 (FAISS: k_factor > 128 for
# recall@10 0.91 with IVF4096,PQ48x4fs, benchmarks/bench_ivf.py); the sweep stops at the first that meets.
OVERSAMPLES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CALIBRATION_QUERIES = 200
# An inverted-file tier's calibration compares plans whose recalls differ by less than 200 queries'
# noise: on the 100K real set (ivf1024,pq96x4, nprobe 64 x8) 200 stored documents predicted 0.9665
# where 2,000 predicted 0.9537 and the 1,000 held-out queries measured 0.9558
# (benchmarks/ivf_calibration.py). Five times the queries cut that noise by sqrt(5).
IVF_CALIBRATION_QUERIES = 1000
# Single queries timed for a calibrated plan's latency (after a few untimed ones), which the default
# plan's choice weighs (vecstore.plan.default_plan): 50 medians agreed within 10% from run to run.
LATENCY_QUERIES = 50
LATENCY_WARMUP = 5
# Latencies this close (a share of the faster) are within those medians' run-to-run spread.
LATENCY_NOISE = 0.10
TARGET_RECALL = 0.95
K = 10


def calibrate(coarse: Tier, fine: Tier, raw: Tier, *, seed: int = 0,
              queries: int | None = None, target: float = TARGET_RECALL,
              progress: Callable[[int, int], None] | None = None,
              release: Callable[[np.ndarray], None] | None = None) -> dict:
    """Measure recall@10 of (scan ``coarse``, rescore from ``fine``) for growing oversampling.

    ``queries``: stored documents searched; by default CALIBRATION_QUERIES, IVF_CALIBRATION_QUERIES
    for an inverted-file tier. Returns the JSON-safe record stored as the tier's ``calibration``
    attribute. ``progress(done,
    total)``, if given, is called after the exact answer and after each oversampling tried (total:
    one plus every factor of OVERSAMPLES, for each nprobe tried of an inverted-file tier; the last
    call says done == total, also when it stops early).

    An inverted-file tier is calibrated for (nprobe, oversample) together, so that its lists lose no
    recall against the flat tier they wrap: first with every list probed (the flat tier: recall for
    each oversampling until the target is met, ``flat_recall_by_oversample``); then nprobe doubles
    from 1, each with the least oversampling whose recall reaches both the target and the flat
    tier's at that oversampling (less FLAT_TOLERANCE), until two such plans in a row are no faster
    than the fastest so far; of the plans within LATENCY_NOISE of the fastest, the one reading the
    fewest bytes a query is recorded (``nprobe``, every pair tried under ``nprobe_sweep``).
    """
    return _calibrate(coarse, fine, raw, seed=seed, queries=queries, target=target, progress=progress,
                      release=release)[0]


def _calibrate(coarse: Tier, fine: Tier, raw: Tier, *, seed: int, queries: int | None, target: float,
               progress: Callable[[int, int], None] | None, release: Callable[[np.ndarray], None] | None,
               least: dict | None = None, truths: dict | None = None) -> tuple[dict, dict]:
    """:func:`calibrate`, and for each nprobe tried (None: a flat tier) the smallest oversampling
    whose recall reached ``target`` (else 1). ``least``: such a map from a
    calibration against raw, whose factors this one need not try below (see calibrate_fastest).
    ``truths``: the exact answers of earlier calibrations of the same store, by (seed, queries),
    reused (over 10M documents one is a pass over 15 GB of raw rows) and added to."""
    least = least or {}
    truths = {} if truths is None else truths
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
    if queries is None:
        queries = CALIBRATION_QUERIES if coarse.lists is None else IVF_CALIBRATION_QUERIES
    k = min(K, count - 1)
    if (seed, queries) not in truths:
        rng = np.random.default_rng(seed)
        own = np.sort(rng.choice(count, size=min(queries, count), replace=False))
        xq = np.ascontiguousarray(raw.codes[own], dtype=np.float32)
        truths[seed, queries] = own, xq, without(exact_rows(raw, xq, k + 1, release), own)[:, :k]
    own, xq, truth = truths[seed, queries]
    step()
    goal, flat = (lambda factor: target), None
    if coarse.lists is not None:  # every list probed: the flat tier, whose recall the lists must keep
        flat = _oversample_sweep(coarse, fine, raw, xq, own, truth, k, goal, coarse.nlist, step, release,
                                 least.get(coarse.nlist, 1))
        goal = _keeping(flat["recall_by_oversample"], target)
    sweep, best, slower = [], None, 0
    for nprobe in probes:
        if flat is not None and nprobe == coarse.nlist:
            record = flat
        else:
            record = _oversample_sweep(coarse, fine, raw, xq, own, truth, k, goal, nprobe, step, release,
                                       least.get(nprobe, 1))
        # Only a plan that meets the target can be chosen, so only such plans are timed: the others
        # rescore thousands of candidates a query (10M documents, nprobe 1 to 4: x512), whose
        # scattered rows mapped 4 GB of a just-written file's large folios for nothing.
        record["latency_us"] = _latency(coarse, fine, xq, k, record, release) if record["meets_target"] else None
        sweep.append(record)
        if record["meets_target"]:
            if best is not None and record["latency_us"] >= best["latency_us"]:
                slower += 1
                if slower == 2:  # twice: more lists cost more than the fewer candidates they save
                    break         # (once could be a timing blip on a busy machine)
                continue
            best, slower = record, 0
    if best is None:  # no plan meets the target: the best recall, timed now
        best = max(sweep, key=lambda r: r["recall_at_10"])
        best["latency_us"] = _latency(coarse, fine, xq, k, best, release)
    else:
        best = _least_bytes([r for r in sweep if r["meets_target"]],
                            lambda r: query_bytes(coarse, fine, k, r["oversample"], r["nprobe"]))
    if progress is not None:
        progress(total, total)
    out = {
        "method": "leave-one-out recall@10 on stored documents, exact truth from the raw tier",
        "rescore": fine.name,
        "target_recall_at_10": target,
        "oversample": best["oversample"],
        "latency_us": best["latency_us"],
        "recall_at_10": best["recall_at_10"],
        "meets_target": best["recall_at_10"] >= target,
        "recall_by_oversample": best["recall_by_oversample"],
        "queries": int(own.shape[0]),
        "seed": seed,
    }
    if coarse.lists is not None:
        out["nprobe"] = best["nprobe"]
        out["flat_recall_at_10"] = flat["recall_at_10"]
        out["flat_oversample"] = flat["oversample"]
        out["flat_recall_by_oversample"] = flat["recall_by_oversample"]
        out["nprobe_sweep"] = [{key: r[key] for key in ("nprobe", "oversample", "recall_at_10", "meets_target",
                                                          "latency_us")} for r in sweep]
    return out, {r["nprobe"]: _least_meeting(r["recall_by_oversample"], target) for r in sweep + [flat] if r}


def _least_meeting(recalls: dict[str, float], target: float) -> int:
    """The smallest factor of a sweep whose recall reached ``target``; else 1 (another tier's sweep
    at that nprobe cannot meet the target either, and records its own best factor, which may be lower)."""
    return next((int(f) for f in recalls if recalls[f] >= target), 1)


# Rows of the raw tier scanned at once for the exact answer (a tier larger than RAM is read once).
TRUTH_BLOCK_BYTES = 256 << 20


def exact_rows(raw: Tier, xq: np.ndarray, k: int, release: Callable[[np.ndarray], None] | None) -> np.ndarray:
    """Best-first rows of each query's exact top ``k`` on ``raw``, scanned in blocks whose mapped pages
    ``release`` drops once read: calibrating a tier of 10M documents reads 15 GB of raw rows, which
    must not stay in the process's resident set."""
    step = max(k, TRUTH_BLOCK_BYTES // max(1, raw.codes.shape[1] * raw.codes.itemsize))
    if release is None or raw.count <= step:
        return raw.scan(xq, k)[1]
    scores, rows = [], []
    for start in range(0, raw.count, step):
        part = raw.row_slice(start, start + step)
        s, r = part.scan(xq, min(k, part.count))
        scores.append(s)
        rows.append(r + start)
        release(part.codes)
    return _best_of(np.concatenate(scores, axis=1), np.concatenate(rows, axis=1), k)


def _nprobe_grid(coarse: Tier) -> list[int | None]:
    """nprobe values an inverted-file tier is calibrated at: 1, 2, 4 ... nlist; [None] for flat tiers."""
    if coarse.lists is None:
        return [None]
    grid = [1 << i for i in range(coarse.nlist.bit_length()) if 1 << i < coarse.nlist]
    return grid + [coarse.nlist]


# Recall an inverted-file tier's lists may lose against its flat tier at the same oversampling: ten
# neighbours of the 2,000 the calibration checks (about its own noise).
FLAT_TOLERANCE = 0.005


def _keeping(flat: dict[str, float], target: float) -> Callable[[int], float]:
    """The recall an nprobe plan must reach at each oversampling: the target, and the flat tier's
    recall at that oversampling (past the largest the flat sweep tried: at that one) less
    FLAT_TOLERANCE, so that the lists lose no recall the flat tier would have found."""
    def goal(factor: int) -> float:
        tried = [int(f) for f in flat if int(f) <= factor]
        return max(target, flat[str(max(tried))] - FLAT_TOLERANCE) if tried else target
    return goal


# Oversamplings one coarse scan serves: it returns its candidates best first (ties to the lower
# position), so the candidates of a smaller factor are a prefix of a larger one's. Three: the flat
# sweep of ivf4096,pq96x4 over 1M documents (factors 1 to 16) took two scans instead of five.
SCAN_SERVES = 3


def _oversample_sweep(coarse: Tier, fine: Tier, raw: Tier, xq: np.ndarray, own: np.ndarray, truth: np.ndarray,
                      k: int, target: Callable[[int], float], nprobe: int | None, step: Callable[..., None],
                      release: Callable[[np.ndarray], None] | None = None, start: int = 1) -> dict:
    """Recall@k for each oversampling of OVERSAMPLES from ``start`` until one reaches
    ``target(factor)``: that one, else the best.

    Rescored on ``raw``, the tier the truth comes from, a true neighbour among the candidates is
    always in their top k (only true neighbours can beat it), so the recall is the share of the
    truth among the candidates and no candidate row is read (ties at the k-th place aside). That
    made calibration cheap: rescoring 1,000 queries' candidates at every oversampling read and
    released scattered raw rows for minutes at 1M documents. Another rescoring tier is rescored.

    An nprobe whose lists hold fewer rows than the candidates asked of every query stops there
    (ivf4096 at nprobe 1, 2 and 4 scanned up to 1024 x 10 candidates for nothing: 23 of the 87 s of
    a calibration at 1M)."""
    count = coarse.count
    recalls, chosen = {}, None
    scanned, width_scanned = None, 0
    for tried, factor in enumerate(OVERSAMPLES, 1):
        if factor < start:
            step()
            continue
        width = min(count - 1, k * factor)
        if width > width_scanned:  # the next SCAN_SERVES factors from one scan: smaller ones are its prefixes
            top = OVERSAMPLES[min(len(OVERSAMPLES), tried + SCAN_SERVES - 1) - 1]
            width_scanned = min(count - 1, k * top)
            _, scanned = coarse.scan(xq, width_scanned + 1, candidates=True, nprobe=nprobe)
            scanned = without(scanned, own)
        cand = np.ascontiguousarray(scanned[:, :width])
        found = cand if fine is raw else _rescored(fine, xq, cand, k, release)
        recall = float(recall_at_k(found, truth, k).mean())
        recalls[str(factor)] = round(recall, 4)
        step()
        # every query's probed lists hold fewer rows than this: more oversampling finds nothing more
        exhausted = width >= count - 1 or bool((cand[:, -1] < 0).all())
        if recall >= target(factor) or exhausted:
            chosen = factor if recall >= target(factor) else None
            if nprobe is not None:  # the next nprobe's steps start at its own share of the total
                step(len(OVERSAMPLES) - tried)
            break
    best = max(recalls, key=lambda f: recalls[f])
    factor = chosen if chosen is not None else int(best)
    return {"nprobe": nprobe, "oversample": factor, "recall_at_10": recalls[str(factor)],
            "meets_target": chosen is not None, "recall_by_oversample": recalls}


def calibrate_fastest(coarse: Tier, fines: list[Tier], raw: Tier, *, seed: int = 0,
                      queries: int | None = None, target: float = TARGET_RECALL,
                      progress: Callable[[int, int], None] | None = None,
                      release: Callable[[np.ndarray], None] | None = None) -> dict | None:
    """:func:`calibrate` against each tier of ``fines`` that can rescore ``coarse`` (raw, and any
    float16 or int8 tier the store holds): the record of the fastest plan that meets the target
    (else of the best recall), with every plan measured listed under ``alternatives``; None when no
    tier can rescore ``coarse`` (a tier as large as raw needs no second stage). Rescoring from
    a smaller dense tier reads fewer bytes a candidate, which matters most when it is not in the page
    cache; whether it is faster at the same recall is measured, not assumed.

    Raw is calibrated first (counted, not rescored: cheap), and each other tier's sweeps start at
    raw's least oversampling reaching the target for the same nprobe: among the same candidates no
    tier finds more of the truth than raw, so a smaller factor cannot reach the target from it. A
    float16 tier's calibration then rescores one or two factors per nprobe, not every factor from 1.

    Plans whose latencies are within LATENCY_NOISE of the fastest count as equally fast, and of
    those the one reading the fewest bytes a query (:func:`query_bytes`) is kept: it is also the
    faster for a batch (1M documents, ivf4096,pq96x4 nprobe 8 x32, 1,000 queries: > raw 66 ms,
    > float16 52 ms, where single queries measured within a few percent) and when the tier is not in
    the page cache. The same rule picks an inverted-file tier's nprobe (:func:`_least_bytes`)."""
    usable = sorted((f for f in fines if rescore_refusal(f, coarse) is None), key=lambda f: f is not raw)
    if not usable:
        return None
    records, least, truths = [], None, {}
    for i, fine in enumerate(usable):
        def step(done: int, total: int, i: int = i) -> None:
            if progress is not None:
                progress(i * total + done, len(usable) * total)
        record, meeting = _calibrate(coarse, fine, raw, seed=seed, queries=queries, target=target, progress=step,
                                     release=release, least=least, truths=truths)
        records.append(record)
        if fine is raw:
            least = meeting
    meeting = [r for r in records if r["meets_target"]]
    if meeting:
        fines_by_name = {f.name: f for f in usable}
        best = _least_bytes(meeting, lambda r: query_bytes(coarse, fines_by_name[r["rescore"]], K, r["oversample"],
                                                           r.get("nprobe")))
    else:
        best = max(records, key=lambda r: (r["recall_at_10"], -r["latency_us"]))
    if len(records) > 1:
        best = dict(best, alternatives=[{key: r[key] for key in ("rescore", "oversample", "recall_at_10",
                                                                 "meets_target", "latency_us")} for r in records])
    return best


def _least_bytes(plans: list[dict], cost: Callable[[dict], float]) -> dict:
    """Of ``plans`` (each meeting the target, with ``latency_us``), those within LATENCY_NOISE of
    the fastest are equally fast: the one reading the fewest bytes a query (``cost``), then the
    faster. Single-query medians cannot tell such plans apart, while the bytes decide a batch's
    throughput and a cold page cache's latency (1M documents, ivf4096,pq96x4 > float16: nprobe 8
    x32 and nprobe 32 x16 measured within a few percent one query at a time; 1,000 queries in one
    call 19,900 against 16,600 QPS)."""
    fastest = min(r["latency_us"] for r in plans)
    close = [r for r in plans if r["latency_us"] <= fastest * (1 + LATENCY_NOISE)]
    return min(close, key=lambda r: (cost(r), r["latency_us"]))


def query_bytes(coarse: Tier, fine: Tier, k: int, oversample: float, nprobe: int | None) -> float:
    """Bytes one query of a two-stage plan reads: the coarse codes it scans (an inverted-file tier:
    ``nprobe`` lists of the average size) and ``k x oversample`` rows of the rescoring tier."""
    rows = coarse.count if nprobe is None else coarse.count * nprobe / coarse.nlist
    return rows * coarse.code_size + k * oversample * fine.codes.shape[1] * fine.codes.itemsize


# Bytes of the rescoring tier one step of a calibration's rescoring reads (and then releases).
RESCORE_BATCH_BYTES = 256 << 20


def _rescored(fine: Tier, xq: np.ndarray, cand: np.ndarray, k: int,
              release: Callable[[np.ndarray], None] | None) -> np.ndarray:
    """Rows of ``fine.rescore``. With ``release``, the rescoring tier is read in row order, a slice
    of RESCORE_BATCH_BYTES at a time (every query's candidates inside the slice rescored, the
    slice's pages released), and the slices' best merged: each page is mapped once a pass and the
    resident set stays at one slice. (Batches of queries instead mapped each candidate's neighbours
    by fault-around for every batch and released the whole tier after it: calibrating
    ivf4096,pq96x4 against a float16 tier over 1M documents spent 66 of its 88 s there.)"""
    if release is None:
        return fine.rescore(xq, cand, k)[1]
    step = max(1, RESCORE_BATCH_BYTES // max(1, fine.codes.shape[1] * fine.codes.itemsize))
    scores, rows = [], []
    for start in range(0, fine.count, step):
        inside = (cand >= start) & (cand < start + step)
        if inside.any():
            s, r = fine.rescore(xq, np.where(inside, cand, -1), k)
            release(fine.codes[start:start + step])
            scores.append(s)
            rows.append(r)
    if not rows:
        return fine.rescore(xq, cand, k)[1]
    return _best_of(np.concatenate(scores, axis=1), np.concatenate(rows, axis=1), k)


def _best_of(scores: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """Each query's ``k`` best rows of several best-first lists: highest score first, ties to the
    lower row, missing rows (-1) last."""
    order = np.lexsort((rows, -scores, rows < 0), axis=1)[:, :k]
    return np.take_along_axis(rows, order, axis=1)


def _latency(coarse: Tier, fine: Tier, xq: np.ndarray, k: int, record: dict,
             release: Callable[[np.ndarray], None] | None) -> float:
    """A sweep record's ``latency_us``, rounded as stored."""
    return round(plan_latency_us(coarse, fine, xq, k, record["oversample"], record["nprobe"], release), 1)


def plan_latency_us(coarse: Tier, fine: Tier, xq: np.ndarray, k: int, factor: float,
                    nprobe: int | None = None, release: Callable[[np.ndarray], None] | None = None) -> float:
    """Median microseconds of one query's two-stage search (scan ``coarse`` for ``k * factor``
    candidates, rescore them on ``fine``) over the first LATENCY_QUERIES of ``xq``, on this machine
    now: what makes one calibrated plan faster than another of the same store."""
    width = min(coarse.count, int(np.ceil(k * factor)))
    times = []
    for i in range(min(LATENCY_WARMUP + LATENCY_QUERIES, xq.shape[0])):
        q = xq[i:i + 1]
        for timed in (False, True):  # the first call maps the candidates' pages: time the second
            start = time.perf_counter()
            _, cand = coarse.scan(q, width, candidates=True, nprobe=nprobe)
            fine.rescore(q, cand, k)
            if timed and i >= LATENCY_WARMUP:
                times.append(time.perf_counter() - start)
        if release is not None:
            release(fine.codes)
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
