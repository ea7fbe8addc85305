"""Write vecstore's conformance files: small stores, their exported JSON, queries and the results and
digests another implementation must reproduce (see conformance/README.md).

    PYTHONPATH=. python conformance/generate.py [OUTDIR]      # default: conformance/v1

Deterministic: every random number comes from numpy generators with fixed seeds, and the learned
arrays of PCA and PQ tiers are constructed here (on a grid of multiples of 2**-10) instead of trained,
so the files do not depend on LAPACK or FAISS. int8 tiers are trained by vecstore (min/max and
quantiles, exact). Only vecstore's public API is used: ``vecstore``, ``vecstore.encoders`` and the
CLI (``export-params``, ``export-encoder``); h5py only reads offsets and removes one attribute.

Every expected result is checked for near-ties before it is written: queries whose results (or the
candidate cut of a two-stage search) have two scores closer than ``TIE_GAP`` are not used, so that
any implementation within the stated tolerance returns identical ids.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import shutil
import sys
import tempfile

import h5py
import numpy as np
import xxhash
from click.testing import CliRunner

import vecstore
from vecstore.cli import cli
from vecstore.encoders import ElmanEncoder, WordVectorEncoder, tokenize

HERE = os.path.dirname(os.path.abspath(__file__))
DIM = 16
COUNT = 200
K = 5
TIE_GAP = 2e-5          # minimum distance between scores that decide an order or a cut
GRID = 2.0 ** -10        # constructed parameters are multiples of this (exact in float32, short in JSON)
# Every tier kind appears in at least one store; each store stays small (HDF5's 4096-byte alignment
# makes every dataset cost ~12 KB whatever its size). Two-stage plans: (scanned, rescore, oversample).
TIERS = {"ip": ["float16", "int8", "pq4", "pq8x4"],
         "cosine": ["int8c0.05", "pca8,int8", "pq8x4"],
         "l2": ["int8", "pca8", "pq4", "pq8x4"]}
TWO_STAGE = {"ip": [("pq8x4", "raw", 2.0), ("pq4", "int8", 1.5)],
             "cosine": [("pq8x4", "raw", 2.0), ("pca8,int8", "raw", 3.0)],
             "l2": [("pq4", "int8", 1.5), ("pq8x4", "pca8", 2.5)]}
N_QUERIES = 6


def f32_list(values) -> list:
    """float32 values as JSON numbers that parse back (as float64, then float32) to the same bits."""
    return [float(v) for v in np.asarray(values, dtype=np.float32).ravel()]


def file_name(tier: str) -> str:
    return tier.replace(",", "+")


def grid(a) -> np.ndarray:
    return (np.round(np.asarray(a, dtype=np.float64) / GRID) * GRID).astype(np.float32)


# -- constructed parameters (the arrays of docs/format.md "Codecs") ------------------------------

def hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def pca_params(raw: np.ndarray, k: int) -> dict:
    """mean on the grid, components = k orthonormal rows of a scaled Hadamard matrix (exact)."""
    mean = grid(raw.astype(np.float64).mean(axis=0))
    comps = (hadamard(DIM)[:k] / math.sqrt(DIM)).astype(np.float32)
    return {"0.mean": mean, "0.components": comps}


def int8_params(y: np.ndarray, prefix: str) -> dict:
    lo, hi = y.min(axis=0).astype(np.float64), y.max(axis=0).astype(np.float64)
    scale = np.maximum(np.ceil((hi - lo) / 255 / GRID * 64) * GRID / 64, GRID / 64)
    offset = np.round((lo + 128 * scale) / (GRID / 64)) * (GRID / 64)
    return {f"{prefix}.scale": scale.astype(np.float32), f"{prefix}.offset": offset.astype(np.float32)}


def pq_params(raw: np.ndarray, m: int, nbits: int, rng) -> dict:
    """Codebooks: stored sub-vectors (with noise) on the grid, so every centroid is used by someone."""
    ksub, dsub = 2 ** nbits, DIM // m
    books = np.empty((m, ksub, dsub), dtype=np.float32)
    for j in range(m):
        rows = rng.choice(raw.shape[0], size=ksub, replace=ksub > raw.shape[0])
        books[j] = grid(raw[rows, j * dsub:(j + 1) * dsub] + 0.02 * rng.standard_normal((ksub, dsub)))
    return {"0.codebooks": books}


def tier_params(tier: str, raw: np.ndarray, rng) -> dict | None:
    if tier == "pca8":
        return pca_params(raw, 8)
    if tier == "pca8,int8":
        p = pca_params(raw, 8)
        y = (raw - p["0.mean"]) @ p["0.components"].T
        return {**p, **int8_params(y, "1")}
    if tier == "pq4":
        return pq_params(raw, 4, 8, rng)
    if tier == "pq8x4":
        return pq_params(raw, 8, 4, rng)
    return None  # float16 needs none; int8 and int8c are trained by vecstore (exact min/max/quantiles)


# -- reading what vecstore wrote -------------------------------------------------------------------

def datasets_of(path: str) -> dict:
    """Every dataset: file offset, dtype, shape and recorded xxh3_64 (what a port maps and checks)."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = {"offset": obj.id.get_offset(), "dtype": obj.dtype.str, "shape": list(obj.shape),
                             "xxh3_64": str(obj.attrs["xxh3_64"])}
        f.visititems(visit)
    return dict(sorted(out.items()))


def spec_identity(datasets: dict) -> str:
    """docs/format.md, Segments: the derived identity of a file without store_id."""
    h = xxhash.xxh3_128()
    for path, d in sorted(datasets.items()):
        h.update(f"{path}\0{d['dtype']}\0{tuple(d['shape'])}\0{d['xxh3_64']}\0".encode("utf-8"))
    return h.hexdigest()


def spec_digest(arrays: dict, text: str = "") -> str:
    """docs/format.md, Parameter digest."""
    h = xxhash.xxh3_64()
    h.update(text.encode("utf-8"))
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        a = a.astype(a.dtype.newbyteorder("<"))
        h.update(f"\0{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode("utf-8"))
        h.update(a.tobytes())
    return h.hexdigest()


def run_cli(*args: str) -> None:
    result = CliRunner().invoke(cli, list(args))
    if result.exit_code != 0:
        raise RuntimeError(f"vecstore {' '.join(args)} failed: {result.output}")


def export_params(store: str, tier: str, out: str) -> dict:
    run_cli("export-params", store, tier, out)
    with open(out, encoding="utf-8") as fh:
        doc = json.load(fh)
    arrays = {n: np.asarray(e["data"], dtype=np.float64).astype(np.float32) for n, e in doc["arrays"].items()}
    return {"params_file": os.path.basename(out), "codec_string": doc["codec_string"],
            "codec_digest": spec_digest(arrays, json.dumps(doc["codec"], sort_keys=True))}


# -- near-tie checks -------------------------------------------------------------------------------

def separated(scores, cuts) -> bool:
    """True when the best-first ``scores`` differ by more than TIE_GAP at every cut c (between
    positions c-1 and c) that exists."""
    s = np.asarray(scores, dtype=np.float64)
    return all(abs(s[c - 1] - s[c]) > TIE_GAP for c in cuts if 0 < c < s.shape[0])


def full_scores(store, q, tier: str) -> dict:
    """id -> score of every live document on one tier (one-stage, k = count)."""
    D, I = store.search(q, store.count, tier=tier)
    return dict(zip(I[0].tolist(), D[0].tolist()))


def ranked(scores: dict, ids, l2: bool) -> list:
    return sorted(ids, key=lambda i: scores[i] if l2 else -scores[i])


def two_stage_ok(coarse: dict, fine: dict, ids, want: int, f: float, l2: bool) -> bool:
    order = ranked(coarse, ids, l2)
    w = min(len(order), math.ceil(min(want, len(order)) * f))
    if not separated([coarse[i] for i in order], [w]):
        return False
    cand = ranked(fine, order[:w], l2)
    return separated([fine[i] for i in cand], range(1, K + 1))


# -- the stores ------------------------------------------------------------------------------------

def metric_stores(out: str, rng, expected: dict) -> None:
    base = (0.25 * rng.standard_normal((COUNT, DIM))).astype(np.float32)
    ids = (100_000 - 7 * np.arange(COUNT)).astype(np.int64)           # ids differ from rows, descending
    keys = [f"doc-{i:03d}" + ("-é" if i % 7 == 0 else "") for i in range(COUNT)]
    metadata = [{"row": i, "tag": "ü" if i % 2 else "a"} if i % 3 else None for i in range(COUNT)]
    queries = (0.25 * rng.standard_normal((200, DIM))).astype(np.float32)
    queries[:, 0] += 0.1                                                # not centred like the data
    stores = {}
    for metric in ("ip", "cosine", "l2"):
        path = os.path.join(out, f"{metric}.vs")
        vecstore.build(path, base, metric=metric, ids=ids, keys=None if metric == "l2" else keys,
                       metadata=metadata if metric == "cosine" else None, progress=False).close()
        with vecstore.open(path) as s:
            raw = np.array(s.tiers["raw"].codes)
        for tier in TIERS[metric]:
            params = tier_params(tier, raw, rng)
            vecstore.compress(path, tier, params=params, calibrate=False, progress=False).close()
        stores[metric] = path

    # queries: the first N_QUERIES candidates without a near-tie in any case of any metric store
    chosen = []
    for qi in range(queries.shape[0]):
        q = queries[qi:qi + 1]
        ok = True
        for metric, path in stores.items():
            with vecstore.open(path) as s:
                scores = {t: full_scores(s, q, t) for t in ["raw", *TIERS[metric]]}
            l2 = metric == "l2"
            for t in ["raw", *TIERS[metric]]:
                order = ranked(scores[t], list(scores[t]), l2)
                ok &= separated([scores[t][i] for i in order], range(1, K + 1))
            for coarse, fine, f in TWO_STAGE[metric]:
                ok &= two_stage_ok(scores[coarse], scores[fine], list(scores[coarse]), K, f, l2)
        if ok:
            chosen.append(qi)
        if len(chosen) == N_QUERIES:
            break
    qs = queries[chosen]
    expected["queries"] = {"file": "queries.json", "count": len(chosen)}
    with open(os.path.join(out, "queries.json"), "w", encoding="utf-8") as fh:
        json.dump({"dim": DIM, "vectors": [f32_list(q) for q in qs]}, fh)

    for metric, path in stores.items():
        name = os.path.basename(path)
        entry = {"metric": metric, "dim": DIM, "count": COUNT, "datasets": datasets_of(path), "tiers": {}}
        for tier in ["raw", *TIERS[metric]]:
            entry["tiers"][tier] = export_params(path, tier, os.path.join(out, f"{metric}.{file_name(tier)}.json"))
        expected["stores"][name] = entry
        with vecstore.open(path) as s:
            plans = [(t, None, None) for t in ["raw", *TIERS[metric]]] + TWO_STAGE[metric]
            for tier, rescore, f in plans:
                D, I = s.search(qs, K, tier=tier, rescore=rescore, oversample=f)
                for qi in range(qs.shape[0]):
                    expected["searches"].append({
                        "store": name, "query": qi, "k": K, "tier": tier, "rescore": rescore, "oversample": f,
                        "ids": I[qi].tolist(), "scores": f32_list(D[qi])})
            D, I = s.search(qs[:1], COUNT + 3, tier="raw")                # k > count: padding
            expected["searches"].append({"store": name, "query": 0, "k": COUNT + 3, "tier": "raw", "rescore": None,
                                         "oversample": None, "ids": I[0].tolist(),
                                         "scores": [None if not np.isfinite(v) else float(v) for v in D[0]],
                                         "note": "k > count: the last 3 are id -1 with -inf / +inf (null here)"})
            top = I[:, :3]
            expected["lookups"].append({"store": name, "ids": top.ravel().tolist(),
                                        "keys": s.keys(top.ravel()), "metadata": s.metadata(top.ravel())})


def segment_store(out: str, rng, expected: dict) -> None:
    """l2 store without store_id (derived identity), two appended segments, deletions in two parts."""
    path = os.path.join(out, "segments.vs")
    main = (0.25 * rng.standard_normal((160, DIM))).astype(np.float32)
    keys = [f"main-{i}" for i in range(160)]
    vecstore.build(path, main, metric="l2", keys=keys, progress=False).close()           # no metadata
    with vecstore.open(path) as s:
        raw = np.array(s.tiers["raw"].codes)
    for tier in ("pq8x4",):
        vecstore.compress(path, tier, params=tier_params(tier, raw, rng), calibrate=False, progress=False).close()
    with h5py.File(path, "r+") as f:                    # as written before store_id existed
        del f.attrs["store_id"]
        del f.attrs["store_xxh3_64"]  # (and its checksum, written since)
    seg1 = (0.25 * rng.standard_normal((40, DIM))).astype(np.float32)
    seg2 = (0.25 * rng.standard_normal((20, DIM))).astype(np.float32)
    # a query next to main row 0: its 25 nearest main documents get deleted, so the first pass of
    # the main part (k + 16 results) holds no live one and the part is searched again
    q0 = (main[0] + 0.01 * rng.standard_normal(DIM)).astype(np.float32)
    others = (0.25 * rng.standard_normal((200, DIM))).astype(np.float32)
    with vecstore.open(path, mode="a") as s:
        s.add(seg1, metadata=[{"part": "seg1", "i": i} if i % 2 else None for i in range(40)])  # no keys
        s.add(seg2, keys=[f"seg2-{i}" for i in range(20)])                                      # no metadata
        before = {t: full_scores(s, q0[None], t) for t in ("raw", "pq8x4")}
        near_main = [i for i in ranked(before["raw"], list(before["raw"]), True) if i < 160][:25]
        deleted = sorted(near_main + list(range(165, 175)))
        s.delete(deleted)
    datasets = datasets_of(path)
    identity = spec_identity(datasets)
    manifest = os.path.join(out, "segments.vs.segments", f"manifest-{identity}.json")
    if not os.path.exists(manifest):
        raise RuntimeError("vecstore keyed the manifest by another identity than docs/format.md defines")
    with open(manifest, encoding="utf-8") as fh:
        man = json.load(fh)
    entry = {"metric": "l2", "dim": DIM, "count": 160, "store_id": None, "identity": identity,
             "manifest": os.path.relpath(manifest, out), "live_count": 160 + 60 - len(deleted),
             "deleted": deleted, "datasets": datasets, "tiers": {},
             "segments": [{"file": e["file"], "count": e["count"],
                           "datasets": datasets_of(os.path.join(out, "segments.vs.segments", e["file"]))}
                          for e in man["segments"]]}
    for tier in ("raw", "pq8x4"):
        entry["tiers"][tier] = export_params(path, tier, os.path.join(out, f"segments.{file_name(tier)}.json"))
    expected["stores"]["segments.vs"] = entry

    candidates = np.concatenate([q0[None], others])
    plans = [("raw", None, None), ("pq8x4", None, None), ("pq8x4", "raw", 2.0), ("pq8x4", "raw", 1.5)]
    parts = [set(range(160)), set(range(160, 200)), set(range(200, 220))]
    dead = set(deleted)
    chosen = []
    with vecstore.open(path) as s:
        for ci in range(candidates.shape[0]):
            q = candidates[ci:ci + 1]
            # scores of every document, deleted ones included, from a copy without the deletions
            ok = True
            for tier, rescore, f in plans:
                live = full_scores(s, q, tier)
                ok &= separated(sorted(live.values()), range(1, K + 1))
            if ok:
                chosen.append(ci)
            if len(chosen) == 4:
                break
        qs = candidates[chosen]
        if chosen[0] != 0:
            raise RuntimeError("the query next to the deleted documents has a near-tie: change the seed")
        for tier, rescore, f in plans:
            D, I = s.search(qs, K, tier=tier, rescore=rescore, oversample=f)
            for qi in range(qs.shape[0]):
                expected["searches"].append({
                    "store": "segments.vs", "query": qi, "query_file": "segments.queries.json", "k": K,
                    "tier": tier, "rescore": rescore, "oversample": f,
                    "ids": I[qi].tolist(), "scores": f32_list(D[qi])})
        look = [0, 1, 159, 160, 161, 199, 200, 219, -1]
        look = [i for i in look if i not in dead]
        expected["lookups"].append({"store": "segments.vs", "ids": look, "keys": s.keys(look),
                                    "metadata": s.metadata(look)})
    with open(os.path.join(out, "segments.queries.json"), "w", encoding="utf-8") as fh:
        json.dump({"dim": DIM, "vectors": [f32_list(q) for q in qs]}, fh)
    # the two-stage cases depend on the per-part counts of docs/format.md "Searching segments";
    # their cuts are checked here on the scores of every document (deleted ones included)
    for tier, rescore, f in plans[2:]:
        for q in qs:
            for part in parts:
                live_n = len(part - dead)
                d = len(part & dead)
                want = min(K, live_n)
                for kk in ([K] if d == 0 else [min(len(part), want + min(d, max(want, 16))), min(len(part), want + d)]):
                    coarse = {i: v for i, v in before_scores(path, q, tier).items() if i in part}
                    order = ranked(coarse, list(coarse), True)
                    w = min(len(order), math.ceil(min(kk, len(order)) * f))
                    if not separated([coarse[i] for i in order], [w]):
                        raise RuntimeError(f"segments: a candidate cut is a near-tie ({tier}, {rescore}, {f})")


# -- filtered search -------------------------------------------------------------------------------

FILTER_TIERS = ["int8", "pq8x4"]
FILTER_PLANS = [("raw", None, None), ("pq8x4", None, None), ("pq8x4", "raw", 1.2), ("int8", "raw", 2.0)]
LANG_VALUES = ["en", "de", "fr", "\u00e9t", "\u65e5\u672c"]      # "ét" and "日本" sort after "fr"


def filter_docs(n: int) -> list:
    """Metadata with every field type and missing values of each kind (absent key, null, [])."""
    out = []
    for i in range(n):
        d = {"year": None if i % 13 == 0 else 1990 + (i * 7) % 30,
             "score": (i * 37 % 100) / 64,
             "tags": [t for t, every in (("red", 4), ("blue", 6), ("green", 10)) if i % every == 0]}
        if i % 11:
            d["lang"] = LANG_VALUES[i % 5]
        if i % 17 == 0:
            del d["score"]
        if i % 19:
            d["ok"] = i % 3 == 0
        out.append(d)
    return out


# (where, allow, what the case shows); allow ids not in the store are ignored (docs/filters.md)
FILTERS = [
    ("lang = 'en' and year >= 2000", None, "string and int, filtered-two-stage"),
    ("lang in ('de', 'fr') or tags has 'red'", None, "in, has, or"),
    ("not (lang = 'en') and score < 0.75", None, "not admits rows without a language; float"),
    ("lang != 'en' and year != 2004", None, "!= is false on a missing value"),
    ("year < 2010.5 and ok = true", None, "an int field against a fraction; bool"),
    ("lang > 'en' and lang <= '\u00e9t'", None, "string order by code point"),
    ("year not in (1997, 2004, 2011) and not ok = false", None, "not in, not"),
    ("tags has 'green' and ok = true", None, "6 rows: exact by the cost ratio on both two-stage plans"),
    ("tags has 'blue' and lang = 'de' and score > 0.4 and score < 1.2", None, "4 rows (fewer than k): exact, padded"),
    ("lang = 'zz'", None, "no row: all padding"),
    (None, [100000 - 7 * r for r in range(0, 200, 3)] + [5, -1], "allow= ids only (5 and -1 are not ids)"),
    ("lang = 'fr' or year >= 2015", [100000 - 7 * r for r in range(1, 200, 2)], "where= and allow= together"),
    ("score is missing or year is not missing and tags is missing", None,
     "is missing / is not missing (tags: no tags is missing)"),
]


def filter_store(out: str, rng, expected: dict) -> None:
    """An l2 store with filterable fields of every type: where= and allow= over one- and two-stage
    plans, including a 4-bit PQ tier (candidates by quantised score) and every strategy."""
    path = os.path.join(out, "filters.vs")
    base = (0.25 * rng.standard_normal((COUNT, DIM))).astype(np.float32)
    ids = (100_000 - 7 * np.arange(COUNT)).astype(np.int64)
    meta = filter_docs(COUNT)
    vecstore.build(path, base, metric="l2", ids=ids, metadata=meta, fields=["lang", "year", "score", "ok", "tags"],
                   progress=False).close()
    with vecstore.open(path) as s:
        raw = np.array(s.tiers["raw"].codes)
    for tier in FILTER_TIERS:
        vecstore.compress(path, tier, params=tier_params(tier, raw, rng), calibrate=False, progress=False).close()
    queries = (0.25 * rng.standard_normal((200, DIM))).astype(np.float32)
    with vecstore.open(path) as s:
        fields = s.fields
        admitted = []
        for where, allow, _ in FILTERS:
            D, I = s.search(np.zeros((1, DIM), np.float32), COUNT, where=where, allow=allow, tier="raw")
            admitted.append(sorted(i for i in I[0].tolist() if i >= 0))
        # queries without a near-tie among the admitted rows of any filter, on any plan
        chosen = []
        for qi in range(queries.shape[0]):
            q = queries[qi:qi + 1]
            scores = {t: full_scores(s, q, t) for t in ["raw", *FILTER_TIERS]}
            ok = True
            for rows in admitted:
                if not rows:
                    continue
                for coarse, fine, f in FILTER_PLANS:
                    if fine is None:
                        order = ranked(scores[coarse], rows, True)
                        ok &= separated([scores[coarse][i] for i in order], range(1, K + 1))
                    else:
                        ok &= two_stage_ok(scores[coarse], scores[fine], rows, K, f, True)
                        order = ranked(scores[fine], rows, True)           # the exact strategy
                        ok &= separated([scores[fine][i] for i in order], range(1, K + 1))
                        if coarse == "pq8x4":
                            # the candidates a 4-bit tier really gives (quantised scores, which a
                            # port reproduces exactly): a search of w results with oversample 1
                            w = min(len(rows), math.ceil(min(K, len(rows)) * f))
                            cand = s.search(q, w, tier=coarse, rescore=fine, oversample=1.0,
                                            allow=rows).ids[0]
                            ok &= separated(sorted(scores[fine][i] for i in cand if i >= 0), range(1, K + 1))
            if ok:
                chosen.append(qi)
            if len(chosen) == 3:
                break
        qs = queries[chosen]
        strategies = set()
        for (where, allow, note), rows in zip(FILTERS, admitted):
            expected["filters"].append({"store": "filters.vs", "where": where, "allow": allow, "note": note,
                                        "admitted": rows})
            for tier, rescore, f in FILTER_PLANS:
                result = s.search(qs, K, tier=tier, rescore=rescore, oversample=f, where=where, allow=allow)
                strategies.add(result.strategy)
                for qi in range(qs.shape[0]):
                    expected["searches"].append({
                        "store": "filters.vs", "query": qi, "query_file": "filters.queries.json", "k": K,
                        "tier": tier, "rescore": rescore, "oversample": f, "where": where, "allow": allow,
                        "strategy": result.strategy, "ids": result.ids[qi].tolist(),
                        "scores": [None if not np.isfinite(v) else float(v) for v in result.distances[qi]]})
        if strategies != {"none", "exact", "filtered-scan", "filtered-two-stage"}:
            raise RuntimeError(f"the filter cases no longer cover every strategy: {sorted(strategies)}")
    with open(os.path.join(out, "filters.queries.json"), "w", encoding="utf-8") as fh:
        json.dump({"dim": DIM, "vectors": [f32_list(q) for q in qs]}, fh)
    entry = {"metric": "l2", "dim": DIM, "count": COUNT, "fields": fields, "datasets": datasets_of(path), "tiers": {}}
    for tier in ["raw", *FILTER_TIERS]:
        entry["tiers"][tier] = export_params(path, tier, os.path.join(out, f"filters.{file_name(tier)}.json"))
    expected["stores"]["filters.vs"] = entry


_BEFORE: dict = {}


def before_scores(path: str, q: np.ndarray, tier: str) -> dict:
    """Scores of every document of the segmented store, deleted ones included: searched on the main
    file and each segment file opened alone."""
    key = (q.tobytes(), tier)
    if key not in _BEFORE:
        out = {}
        sidecar = path + ".segments"
        files = [path] + [os.path.join(sidecar, n) for n in sorted(os.listdir(sidecar)) if n.endswith(".vs")]
        with tempfile.TemporaryDirectory() as tmp:
            for f in files:
                alone = os.path.join(tmp, "alone.vs")
                shutil.copy(f, alone)           # a copy has no manifest: it opens as a single file
                with vecstore.open(alone) as s:
                    out.update(full_scores(s, q[None], tier))
        _BEFORE[key] = out
    return _BEFORE[key]


# -- encoders --------------------------------------------------------------------------------------

WORDS = ["the", "of", "a", "and", "small", "dog", "heat", "measuring", "instrument", "music", "sweet",
         "dessert", "ship", "sailing", "computer", "program", "error", "capital", "france", "fish",
         "don", "t", "panic", "hitch", "hiker", "s", "guide", "2nd", "ed", "snake", "case", "3", "14",
         "f2", "naïve", "café", "σοφος", "i\u0307stanbul", "हिन्दी", "भाषा", "Dog", "new_york"]
QUERY_TEXTS = [
    "small dog",
    "Don't PANIC: the Ｈｉｔｃｈ-hiker's guide, 2nd ed.",
    "nai\u0308ve cafe\u0301 music",
    "ΣΟΦΟΣ İstanbul",
    "हिन्दी भाषा music",
    "snake_case 3.14",
    "ﬁsh and Ｆ２",
    "xyzzy dog dog heat",
    "sweet dessert ship",
    "computer program error of the capital",
]
ELMAN_WORDS = ["the", "of", "a", "small", "dog", "cat", "runs", "sleeps", "big", "red", "ship", "sails",
               "heat", "rises", "music", "plays", "sweet", "dessert", "café", "σοφος", "2nd"]
ELMAN_TEXTS = ["the small dog runs", "the dog runs small", "big red ship sails", "Café music plays!",
               "ΣΟΦΟΣ sleeps", "heat rises, heat rises", "a cat sleeps xyzzy", "sweet dessert 2nd"]


def titles(rng, words: list[str], n: int) -> list[str]:
    usable = [w for w in words if tokenize(w) == [w]]
    out, seen = [], set()
    while len(out) < n:                 # distinct bags of words (equal bags would tie exactly)
        title = " ".join(rng.choice(usable, size=rng.integers(1, 5), replace=False))
        bag = tuple(sorted(tokenize(title)))
        if bag not in seen:
            seen.add(bag)
            out.append(title)
    return out + ["qqq zzz", "!!", "New_York"]                  # no known word: left out by build-text


def encoder_case(out: str, store_name: str, encoders: dict, texts: list[str], rng, expected: dict,
                 model: str, words: list[str]) -> None:
    """Build a text store with the first encoder (searched); the others only as JSON (encoded)."""
    from vecstore.encoders import dump_encoder_json

    path = os.path.join(out, store_name)
    first = next(iter(encoders))
    docs = titles(rng, words, 80)
    store, skipped = vecstore.build_text(path, docs, encoders[first], name=first, model=model, progress=False)
    store.close()
    entry = {"metric": "cosine", "dim": DIM, "skipped_titles": skipped, "datasets": datasets_of(path),
             "tiers": {"raw": export_params(path, "raw", os.path.join(out, f"{store_name[:-3]}.raw.json"))},
             "encoders": {}}
    with vecstore.open(path) as s:
        entry["count"] = s.count
        entry["model"] = s.model
        for name, given in encoders.items():
            enc_file = f"{store_name[:-3]}.{name}.encoder.json"
            if name == first:
                run_cli("export-encoder", path, os.path.join(out, enc_file), "--name", name)
                enc = s.encoder(name)
            else:
                dump_encoder_json(given, os.path.join(out, enc_file))
                enc = given
            text = json.dumps(enc.config(), sort_keys=True) + "\0" + "\0".join(enc.vocab)
            cases = []
            for t in texts:
                tokens = tokenize(t)
                vec, unknown = enc.encode([t], on_empty="zero")
                case = {"text": t, "tokens": tokens, "unknown": unknown[0], "vector": f32_list(vec[0])}
                if vec[0].any() and name == first:
                    D, I, _ = s.search_text(t, K, encoder=name)
                    full = full_scores(s, vec, "raw")
                    order = ranked(full, list(full), False)
                    if not separated([full[i] for i in order], range(1, K + 1)):
                        raise RuntimeError(f"text {t!r}: near-tie in its results {[full[i] for i in order[:K + 1]]}")
                    case.update({"k": K, "ids": I[0].tolist(), "scores": f32_list(D[0])})
                cases.append(case)
            entry["encoders"][name] = {"file": enc_file, "stored": name == first, "config": enc.config(),
                                       "fingerprint": spec_digest(enc.arrays(), text), "texts": cases}
        if s.model.get("fingerprint") != entry["encoders"][first]["fingerprint"]:
            raise RuntimeError("vecstore's encoder fingerprint differs from docs/format.md's definition")
    expected["stores"][store_name] = entry


def main(out: str) -> None:
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)
    expected = {"format": "vecstore-conformance", "version": 1, "vecstore_version": vecstore.__version__,
                "tolerance": {"score_abs": 1e-5, "vector_abs": 1e-6, "tie_gap": TIE_GAP},
                "stores": {}, "searches": [], "lookups": [], "filters": []}
    metric_stores(out, np.random.default_rng(20), expected)
    segment_store(out, np.random.default_rng(21), expected)
    filter_store(out, np.random.default_rng(24), expected)
    rng = np.random.default_rng(22)
    vocab = WORDS
    emb = (0.5 * rng.standard_normal((len(vocab), DIM))).astype(np.float32)
    idf = grid(1 + 3 * rng.random(len(vocab)))
    encoder_case(out, "wordvec.vs", {"text": WordVectorEncoder(vocab, emb, idf),
                                     "plain": WordVectorEncoder(vocab, emb)},
                 QUERY_TEXTS, rng, expected, "conformance-words@1", vocab)
    rng = np.random.default_rng(23)
    v = len(ELMAN_WORDS)
    e = (0.5 * rng.standard_normal((v, DIM))).astype(np.float32)
    w = (0.8 / math.sqrt(DIM) * rng.standard_normal((DIM, DIM))).astype(np.float32)
    b = (0.1 * rng.standard_normal(DIM)).astype(np.float32)
    encoder_case(out, "elman.vs", {"text": ElmanEncoder(ELMAN_WORDS, e, w, b, output="last"),
                                   "mean": ElmanEncoder(ELMAN_WORDS, e, w, b, output="mean")},
                 ELMAN_TEXTS, rng, expected, "conformance-elman@1", ELMAN_WORDS)
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as fh:
        json.dump(expected, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    pack(out)


def pack(out: str) -> None:
    """gzip every store file (HDF5 pads each object to 4096 bytes: ~10x smaller) and drop the
    writers' lock files. ``gunzip -r`` on a copy restores the files byte for byte."""
    for root, _, names in os.walk(out):
        for name in names:
            path = os.path.join(root, name)
            if name.endswith(".lock"):
                os.remove(path)
            elif name.endswith(".vs"):
                with open(path, "rb") as fh:
                    data = fh.read()
                with open(path + ".gz", "wb") as fh:
                    fh.write(gzip.compress(data, compresslevel=9, mtime=0))
                os.remove(path)


def unpack(src: str, dst: str) -> str:
    """Copy conformance files from ``src`` to ``dst`` with every store decompressed; returns dst."""
    for root, _, names in os.walk(src):
        target = os.path.join(dst, os.path.relpath(root, src))
        os.makedirs(target, exist_ok=True)
        for name in names:
            path = os.path.join(root, name)
            if name.endswith(".vs.gz"):
                with gzip.open(path, "rb") as fh, open(os.path.join(target, name[:-3]), "wb") as out_fh:
                    shutil.copyfileobj(fh, out_fh)
            else:
                shutil.copy(path, os.path.join(target, name))
    return dst


if __name__ == "__main__":
    main(os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "v1")))
