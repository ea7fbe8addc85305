#!/usr/bin/env python
"""Seeded clustered 384-d data for the inverted-file benchmark (issue 19), with exact ground truth.

    python benchmarks/ivf_data.py --n 1000000                  # base, queries, ground truth in benchmarks/work
    python benchmarks/ivf_data.py --n 10000000 --nq 1000       # 15.4 GB .npy, written block by block
    python benchmarks/ivf_data.py --stats --n 100000           # compare its statistics with the real set

What it is: a two-level Gaussian mixture meant to look like sentence embeddings (all-MiniLM-L6-v2,
384-d, unit rows). ``TOPICS`` topics, each with ``CLUSTERS // TOPICS`` clusters; a cluster's centre is
its topic's centre plus an offset, both drawn anisotropically (variance along a seeded random
rotation, decaying as ``(i + 1) ** -ALPHA`` over the 384 directions), plus a common offset shared by
every row (real embeddings have a non-zero mean, so random pairs have a slightly positive cosine).
Cluster weights are log-normal (sizes vary ~30x between the 5th and 95th percentile) and each
cluster has its own log-normal spread. A row is ``centre + spread * noise`` (noise drawn with the same
anisotropic spectrum), L2-normalized. The constants were chosen so that, at 100,000 rows and 1,000
queries, the mean cosine of the 1st / 10th / 100th neighbour, of random pairs, the norm of the mean
and the variance captured by the leading principal directions are near those of the real 100K
WordNet / MiniLM set (``--stats`` prints both; the figures are in benchmarks/README.md).

Rows are generated in blocks of ``BLOCK``; block b depends only on (seed, stream, b), so row i is the
same for every ``--n`` and the 1M set is the first 1M rows of the 10M set. The database (stream 1) is
written with ``np.lib.format.open_memmap`` one block at a time (never in RAM at once), to a temporary
name then renamed; queries are stream 2 (held out: never in the database). Ground truth: the exact
top ``--k`` (100) by inner product, a chunked ``faiss.IndexFlatIP`` scan over the mapped file (float32
scores; ties are broken by FAISS's result heap), cached beside the data and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

DIM = 384
BLOCK = 65536
TOPICS = 256
CLUSTERS = 16384
ALPHA = 0.35        # decay of the per-direction standard deviation
TOPIC_SCALE = 1.0   # spread of topic centres
CLUSTER_SCALE = 0.7  # spread of a cluster centre around its topic
COMMON = 0.45       # the shared offset (norm, before normalization)
SPREAD = 1.2        # median within-cluster spread
SPREAD_SIGMA = 0.45  # log-normal sigma of the per-cluster spread
WEIGHT_SIGMA = 1.0  # log-normal sigma of the cluster weights
VERSION = 1         # bump when anything above changes: cached files carry it in their names


def model(seed: int = 0, dim: int = DIM) -> dict:
    """Everything drawn once: the rotation, topic and cluster centres, weights and spreads."""
    rng = np.random.default_rng([seed, 0])
    q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    scales = (1.0 + np.arange(dim)) ** -ALPHA
    scales /= np.sqrt((scales ** 2).sum())            # total variance 1
    basis = (scales[:, None] * q.T).astype(np.float32)  # row i: direction i times its deviation
    common = rng.standard_normal(dim)
    common *= COMMON / np.linalg.norm(common)
    topics = common + TOPIC_SCALE * rng.standard_normal((TOPICS, dim)) @ basis
    topic_of = rng.integers(0, TOPICS, CLUSTERS)
    centres = topics[topic_of] + CLUSTER_SCALE * rng.standard_normal((CLUSTERS, dim)) @ basis
    weights = rng.lognormal(0.0, WEIGHT_SIGMA, CLUSTERS)
    spreads = SPREAD * rng.lognormal(0.0, SPREAD_SIGMA, CLUSTERS)
    return {"seed": seed, "basis": basis, "centres": centres.astype(np.float32),
            "cdf": np.cumsum(weights / weights.sum()), "spreads": spreads.astype(np.float32)}


def block(m: dict, stream: int, b: int) -> np.ndarray:
    """Rows [b * BLOCK, (b + 1) * BLOCK) of ``stream`` (1: database, 2: queries), float32, unit rows."""
    rng = np.random.default_rng([m["seed"], stream, b])
    c = np.minimum(np.searchsorted(m["cdf"], rng.random(BLOCK)), CLUSTERS - 1)
    g = rng.standard_normal((BLOCK, m["basis"].shape[0]), dtype=np.float32)
    x = g @ m["basis"]
    x *= m["spreads"][c, None]
    x += m["centres"][c]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def rows(m: dict, stream: int, n: int):
    """Blocks of the first ``n`` rows of ``stream``."""
    for b, start in enumerate(range(0, n, BLOCK)):
        yield block(m, stream, b)[: n - start]


def stem(workdir: str, seed: int) -> str:
    return os.path.join(workdir, f"ivfclustered384-v{VERSION}-s{seed}")


def paths(workdir: str, n: int, nq: int, k: int, seed: int) -> dict:
    s = stem(workdir, seed)
    return {"base": f"{s}-n{n}.npy", "queries": f"{s}-queries-nq{nq}.npy",
            "gt_ids": f"{s}-n{n}-gt-nq{nq}-k{k}-ids.npy", "gt_scores": f"{s}-n{n}-gt-nq{nq}-k{k}-scores.npy"}


def write(path: str, m: dict, stream: int, n: int, *, log=None) -> float:
    """Write ``n`` rows of ``stream`` to ``path`` block by block; returns seconds (0 if it existed)."""
    if os.path.exists(path):
        return 0.0
    t0 = time.perf_counter()
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, DIM))
        start = 0
        for x in rows(m, stream, n):
            out[start:start + x.shape[0]] = x
            start += x.shape[0]
            if log and (start // BLOCK) % 16 == 0:
                out.flush()
                log(f"  {path}: {start:,} / {n:,} rows, {time.perf_counter() - t0:.0f} s")
        out.flush()
        del out
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return time.perf_counter() - t0


def ground_truth(base_path: str, xq: np.ndarray, k: int, *, chunk: int = 262144, log=None):
    """Exact top ``k`` by inner product: FAISS IndexFlatIP over chunks of the mapped file, merged."""
    import faiss

    xb = np.load(base_path, mmap_mode="r")
    heap = faiss.ResultHeap(xq.shape[0], k, keep_max=True)
    t0 = time.perf_counter()
    for start in range(0, xb.shape[0], chunk):
        index = faiss.IndexFlatIP(xb.shape[1])
        index.add(np.ascontiguousarray(xb[start:start + chunk]))
        D, I = index.search(xq, k)
        heap.add_result(D, np.where(I >= 0, I + start, -1))
        if log and (start // chunk) % 8 == 7:
            log(f"  ground truth: {start + chunk:,} / {xb.shape[0]:,} rows, {time.perf_counter() - t0:.0f} s")
    heap.finalize()
    return heap.I.copy(), heap.D.copy()


def ensure(workdir: str, n: int, nq: int, k: int = 100, seed: int = 0, *, log=None, base: bool = True) -> dict:
    """Base, queries and ground truth in ``workdir`` (each made once); returns paths and seconds.
    ``base=False``: the base is not made when the ground truth exists (a run that only searches a
    store built earlier: 10M rows are 15 GB of disk)."""
    os.makedirs(workdir, exist_ok=True)
    p = paths(workdir, n, nq, k, seed)
    m = model(seed)
    have_truth = os.path.exists(p["gt_ids"]) and os.path.exists(p["gt_scores"])
    t = {"generate_base_s": write(p["base"], m, 1, n, log=log) if base or not have_truth else 0.0,
         "generate_queries_s": write(p["queries"], m, 2, nq)}
    t0 = time.perf_counter()
    if not (os.path.exists(p["gt_ids"]) and os.path.exists(p["gt_scores"])):
        xq = np.load(p["queries"])
        I, D = ground_truth(p["base"], xq, k, log=log)
        np.save(p["gt_scores"], D)
        np.save(p["gt_ids"], I)
        t["ground_truth_s"] = time.perf_counter() - t0
    else:
        t["ground_truth_s"] = 0.0
    return {**p, **t, "n": n, "nq": nq, "k": k, "seed": seed, "description": describe(seed)}


def describe(seed: int = 0) -> dict:
    return {"name": f"ivfclustered384-v{VERSION}", "seed": seed, "dim": DIM, "metric": "ip (unit rows)",
            "what": "two-level Gaussian mixture like sentence embeddings (benchmarks/ivf_data.py)",
            "topics": TOPICS, "clusters": CLUSTERS, "alpha": ALPHA, "topic_scale": TOPIC_SCALE,
            "cluster_scale": CLUSTER_SCALE, "common": COMMON, "spread": SPREAD,
            "spread_sigma": SPREAD_SIGMA, "weight_sigma": WEIGHT_SIGMA, "block": BLOCK}


def stats(xb: np.ndarray, xq: np.ndarray) -> dict:
    """Neighbour cosines, random-pair cosines, norm of the mean, variance in leading directions."""
    import faiss

    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(np.ascontiguousarray(xb, dtype=np.float32))
    D, _ = index.search(np.ascontiguousarray(xq, dtype=np.float32), 100)
    rng = np.random.default_rng(0)
    a, b = xb[rng.integers(0, len(xb), 5000)], xb[rng.integers(0, len(xb), 5000)]
    pair = (a * b).sum(1)
    sub = xb[:20000] - xb.mean(0)
    s = np.linalg.svd(sub, compute_uv=False) ** 2
    c = np.cumsum(s / s.sum())
    return {"top1": float(D[:, 0].mean()), "top10": float(D[:, 9].mean()), "top100": float(D[:, 99].mean()),
            "pair_mean": float(pair.mean()), "pair_std": float(pair.std()),
            "mean_norm": float(np.linalg.norm(xb.mean(0))),
            "var_10_32_64_128": [round(float(c[i - 1]), 3) for i in (10, 32, 64, 128)]}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "work"))
    ap.add_argument("--stats", action="store_true",
                    help="print the statistics of the first --n rows (in RAM: keep --n small) beside the real set's")
    ap.add_argument("--real", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                   "shared", "data", "wordnet-minilm-384.hdf5"))
    a = ap.parse_args(argv)

    def log(t):
        print(f"[{time.strftime('%H:%M:%S')}] {t}", file=sys.stderr, flush=True)

    if a.stats:
        m = model(a.seed)
        xb = np.concatenate(list(rows(m, 1, a.n)))
        xq = np.concatenate(list(rows(m, 2, a.nq)))
        print("generated", json.dumps(stats(xb, xq)))
        if os.path.exists(a.real):
            import h5py

            with h5py.File(a.real, "r") as f:
                rb, rq = f["train"][: a.n].astype(np.float32), f["test"][: a.nq].astype(np.float32)
            rb /= np.linalg.norm(rb, axis=1, keepdims=True)
            rq /= np.linalg.norm(rq, axis=1, keepdims=True)
            print("real     ", json.dumps(stats(rb, rq)))
        return
    info = ensure(a.workdir, a.n, a.nq, a.k, a.seed, log=log)
    print(json.dumps({k: v for k, v in info.items() if k != "description"}, indent=1))


if __name__ == "__main__":
    main()
