"""How well an inverted-file tier's calibration predicts its recall on held-out queries, by how many
stored documents it searches (issue 19: the lists must lose no recall against the flat tier).

    python benchmarks/ivf_calibration.py [--store PATH] [--real HDF5]

The store is the one ``python benchmarks/bench_ivf.py --parts real`` builds (flat tier pq96x4 and
ivf1024,pq96x4 over the 100K real set). For each (nprobe, oversample): recall@10 on the set's 1,000
held-out queries against the shipped neighbours, and the calibration's leave-one-out estimate on 200
and on 2,000 stored documents, and on the 2,000's documents outside / inside the sample the
centroids were trained on (compress's default: 40 x nlist rows, seed 0). Printed as a table.
"""

from __future__ import annotations

import argparse
import os

import h5py
import numpy as np

import vecstore
from vecstore.query import recall_at_k, without

HERE = os.path.dirname(os.path.abspath(__file__))
STORE = os.path.join(HERE, "work", "ivf-real-wordnet-minilm-384-n100000.vs")
REAL = os.path.join(HERE, "..", "..", "shared", "data", "wordnet-minilm-384.hdf5")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", default=STORE)
    ap.add_argument("--real", default=REAL)
    ap.add_argument("--flat", default="pq96x4")
    ap.add_argument("--ivf", default="ivf1024,pq96x4")
    a = ap.parse_args()
    if not os.path.exists(a.store):
        raise SystemExit(f"error: no store at {a.store}: run python benchmarks/bench_ivf.py --parts real first")
    with h5py.File(a.real, "r") as f:
        test = np.asarray(f["test"], dtype=np.float32)
        gt = np.asarray(f["neighbors"])[:, :10].astype(np.int64)
    store = vecstore.open(a.store, resident=[a.flat, a.ivf])
    ivf, flat, raw = store.tier(a.ivf), store.tier(a.flat), store.tier("raw")
    n = raw.count
    trained = np.zeros(n, dtype=bool)
    trained[np.random.default_rng(0).choice(n, size=min(n, 40 * ivf.nlist), replace=False)] = True

    def loo(own: np.ndarray, coarse, nprobe: int | None, os_: int) -> float:
        xq = np.ascontiguousarray(raw.codes[own], dtype=np.float32)
        truth = without(raw.scan(xq, 11)[1], own)[:, :10]
        _, cand = coarse.scan(xq, 10 * os_ + 1, candidates=True, nprobe=nprobe)
        found = raw.rescore(xq, np.ascontiguousarray(without(cand, own)[:, :10 * os_]), 10)[1]
        return float(recall_at_k(found, truth, 10).mean())

    def held(tier: str, nprobe: int | None, os_: int) -> float:
        kw = dict(tier=tier, rescore="raw", oversample=os_, **({"nprobe": nprobe} if nprobe else {}))
        return float(recall_at_k(store.search(test, 10, **kw).ids, gt, 10).mean())

    s200 = np.sort(np.random.default_rng(0).choice(n, 200, replace=False))
    s2000 = np.sort(np.random.default_rng(1).choice(n, 2000, replace=False))
    print(f"{a.store}: {n} documents; held-out = {test.shape[0]} queries of {a.real}\n")
    print("| tier | nprobe | oversample | held-out | 200 stored | 2,000 stored | untrained of them | trained of them |")
    print("|---|---|---|---|---|---|---|---|")
    rows = [(a.flat, None, f) for f in (2, 4, 8)]
    rows += [(a.ivf, p, f) for p in (32, 64, 128, 256) for f in (4, 8, 16)]
    for name, nprobe, f in rows:
        coarse = flat if nprobe is None else ivf
        cells = [held(name, nprobe, f), loo(s200, coarse, nprobe, f), loo(s2000, coarse, nprobe, f),
                 loo(s2000[~trained[s2000]], coarse, nprobe, f), loo(s2000[trained[s2000]], coarse, nprobe, f)]
        print(f"| `{name}` | {nprobe or 'all'} | {f} | " + " | ".join(f"{c:.4f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
