#!/usr/bin/env python
"""Two-stage search against the least memory FAISS needs for the same recall: issue 4's figures.

    python benchmarks/bench_twostage.py                          # real 100,000 x 384
    python benchmarks/bench_twostage.py --data synthetic4096     # 100,000 x 4096
    python benchmarks/bench_twostage.py --data data/wordnet-minilm-384-small.hdf5 --nq 200   # quick

vecstore: every coarse codec (default 384-d: pq8 pq12 pq24 pq96x4; 4096-d: pq64x4 pq128x4)
is added as a tier, held in RAM (``open(resident=[tier])``), and searched in two
stages (scan it for k x oversample candidates, rescore them from the memory-mapped raw tier) for
each ``--oversample``. Resident bytes per vector = code bytes + learned parameters / n (+4 for l2
norms); the raw tier stays mapped and is not counted as resident (it is page cache, shared and
reclaimable; RssFile shows how much of it a run touched).

FAISS: a list of index_factory strings (PQ, SQ, PCA+SQ, and refinement with RFlat or
Refine(SQfp16/SQ8) at several k_factor), everything in RAM as FAISS keeps it; its resident bytes per
vector is the serialized index size / n. For each recall target (0.95, 0.99) the table pairs the
smallest vecstore configuration reaching it with the smallest FAISS configuration reaching it, and
reports the memory ratio, single-query latency ratio and batch QPS ratio, same process, same
queries, same thread count. A subprocess then opens the chosen vecstore configuration alone and
reads RssAnon / RssFile from /proc/self/status after opening and after 1,000 single queries.

Writes twostage-<workload>.{json,md,png} to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

import vecstore
from vecstore.bench import datasets, faiss_twins, metrics, script

HERE = os.path.dirname(os.path.abspath(__file__))
# Defaults per dimension, sized so that each default run finishes within 15 minutes on 2 cores
# (issue 5). At 4096 dims every FAISS index that keeps codes wider than a PQ scans slowly (SQ8: ~20
# QPS), PCA and Refine(SQ8) take minutes to train, and the earlier, wider sweep took 25 minutes
# (its FAISS rows: SQ8 reached 0.996 at 4096 B; PCA256,SQ8 0.86 at 969 B; PQ32np,RFlat at most 0.88 at
# 16 KB; PQ64np,Refine(SQ8) 0.96 at 4202 B). The default keeps the configurations that decide the
# table: the smallest of each system reaching 0.95 and 0.99 and their neighbours, and times one
# batch run after the warm-up (an SQ8 batch of 1,000 queries takes 40 s at 4096 dims).
COARSE = {384: ["pq8", "pq12", "pq24", "pq96x4"], 4096: ["pq64x4", "pq128x4"]}
FAISS = {
    384: ["PQ24np", "PQ48np", "PQ96np", "SQ8", "SQfp16", "PCA128,SQ8", "PQ24np,RFlat", "PQ48np,RFlat",
          "PQ24np,Refine(SQfp16)", "PQ48np,Refine(SQ8)", "PQ96x4fs,Refine(SQ8)"],
    4096: ["PQ64np", "SQ8", "SQ4", "PQ64np,Refine(SQ8)"],
}
SWEEP = {384: {"oversample": "2 4 8 16 32 64 128 256", "k_factors": "1 2 4 8 16 32", "single": 100, "repeats": 3},
         4096: {"oversample": "4 8 16 32 64", "k_factors": "8 16", "single": 50, "repeats": 1}}
TARGETS = (0.95, 0.99)

PROBE = r"""
import json, sys, time, numpy as np, vecstore
from vecstore.store.file import process_memory
path, tier, rescore, oversample, queries = sys.argv[1:6]
xq = np.load(queries)
before = process_memory()
store = vecstore.open(path, resident=[tier])
opened = process_memory()
store.search(xq[:1], 10, tier=tier, rescore=rescore, oversample=float(oversample))
t = []
for i in range(1000):
    q = xq[i % xq.shape[0]: i % xq.shape[0] + 1]
    a = time.perf_counter(); store.search(q, 10, tier=tier, rescore=rescore, oversample=float(oversample))
    t.append(time.perf_counter() - a)
after = process_memory()
print(json.dumps({"imports": before, "opened": opened, "after_1000_queries": after,
                  "p50_ms": float(np.median(t) * 1e3), "store_memory": store.memory()["tiers"]}))
"""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="wordnet384")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--codecs", default=None, help="coarse codec strings, ';'-separated")
    ap.add_argument("--oversample", default=None, help="oversampling factors to sweep (default: by dimension)")
    ap.add_argument("--faiss", default=None, help="FAISS index_factory strings, ';'-separated")
    ap.add_argument("--k-factors", default=None, help="k_factor values for FAISS refinement (default: by dimension)")
    ap.add_argument("--train-size", type=int, default=20_000)
    ap.add_argument("--single", type=int, default=None, help="single queries timed (default: by dimension)")
    ap.add_argument("--repeats", type=int, default=None, help="timed batch runs after a warm-up (default: by dimension)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    script.add_output_options(ap, HERE)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    script.pin_environment(args.threads)
    t_start = time.perf_counter()
    threads, log, ds = script.start(args)
    w = load_workload(args, ds, log)
    coarse = [c for c in (args.codecs or "").split(";") if c] or COARSE.get(ds.d, COARSE[384])
    apply_sweep_defaults(args, ds.d)
    path = os.path.join(args.workdir, f"twostage-{script.dataset_tag(ds)}.vs")
    machine = metrics.machine()
    train_s = build_store(w, path, coarse)
    store = vecstore.open(path, resident=coarse)
    raw = store.tier("raw").codes
    np.save(w.query_file, w.xq)
    rows = sweep_vecstore(w, store, coarse, train_s) + sweep_faiss(w, raw)
    comparisons = compare(rows, path, w.query_file)
    store.close()
    write_results(w, rows, comparisons, machine, threads, command=script.command_line(__file__, argv),
                  t_start=t_start)
    os.unlink(path)


@dataclass
class Workload:
    """The settings, the dataset, its queries and exact ids, which every configuration is measured on."""

    args: argparse.Namespace
    ds: datasets.Dataset
    log: Callable[[str], None]
    xq: np.ndarray                  # (nq, d) float32
    I_gt: np.ndarray                # (nq, k) exact ids
    query_file: str                 # xq saved for the memory probe

    @property
    def nq(self) -> int:
        return self.xq.shape[0]


def load_workload(args, ds, log) -> Workload:
    xq = np.ascontiguousarray(ds.get_queries(), dtype=np.float32)
    _, I_gt = ds.get_groundtruth_with_scores(args.k)
    return Workload(args, ds, log, xq, I_gt, os.path.join(args.workdir, "twostage-queries.npy"))


def apply_sweep_defaults(args, dim: int) -> None:
    """Fill --oversample, --k-factors, --single and --repeats left unset from SWEEP for ``dim``."""
    sweep = SWEEP.get(dim, SWEEP[384])
    args.oversample = args.oversample or sweep["oversample"]
    args.k_factors = args.k_factors or sweep["k_factors"]
    args.single = args.single or sweep["single"]
    args.repeats = args.repeats or sweep["repeats"]


def build_store(w: Workload, path: str, coarse: list[str]) -> dict[str, float]:
    """The store with its raw tier and every coarse tier; returns each tier's compress time."""
    args, ds = w.args, w.ds
    w.log(f"building {path} with tiers {coarse}")
    vecstore.build(path, ds.database_path() or ds.get_database(), metric=ds.metric, overwrite=True,
                   progress=True).close()
    train_s = {}
    for codec in coarse:
        t0 = time.perf_counter()
        vecstore.compress(path, codec, train_size=min(args.train_size, ds.nb), seed=args.seed,
                          progress=True).close()
        train_s[codec] = time.perf_counter() - t0
    return train_s


def measure(w: Workload, search_one, search_batch) -> dict:
    """Batch QPS (median of --repeats after a warm-up), single-query p50/p99 and recall@k of one
    configuration."""
    xq, nq, k = w.xq, w.nq, w.args.k
    batch = metrics.time_repeated(lambda: search_batch(xq), repeats=w.args.repeats, warmup=1)
    single = metrics.time_each(lambda q: search_one(q), [xq[i:i + 1] for i in range(min(w.args.single, nq))],
                               warmup=5)
    _, I = search_batch(xq)
    return {"recall_at_10": metrics.recall_at_k(I, w.I_gt, k), "qps": nq / batch.median,
            "p50_ms": single.p50 * 1e3, "p99_ms": single.p99 * 1e3}


def sweep_vecstore(w: Workload, store, coarse: list[str], train_s: dict[str, float]) -> list[dict]:
    """Each coarse tier alone, then rescored from the mapped raw tier at each --oversample."""
    k, log = w.args.k, w.log
    oversamples = [float(x) for x in w.args.oversample.split()]
    rows = []
    for codec in tqdm(coarse, desc="vecstore", file=sys.stderr):
        tier = store.tier(codec)
        resident = tier.codec.code_size + (4 if tier.sqnorms is not None else 0) + tier.param_bytes / w.ds.nb
        for factor in [None] + oversamples:
            kw = {"tier": codec} if factor is None else {"tier": codec, "rescore": "raw", "oversample": factor}
            r = measure(w, lambda q: store.search(q, k, **kw), lambda q: store.search(q, k, **kw))
            rows.append({"system": "vecstore", "config": codec if factor is None else f"{codec} + rescore raw x{factor:g}",
                         "codec": codec, "oversample": factor, "resident_bytes_per_vector": resident,
                         "code_bytes": tier.codec.code_size, "train_s": train_s[codec], **r})
            log(f"vecstore {rows[-1]['config']}: recall {r['recall_at_10']:.4f}, {resident:.1f} B/vec, "
                f"p50 {r['p50_ms']:.2f} ms, {r['qps']:.0f} QPS")
        calibration = tier.calibration
        rows[-1]["calibration"] = calibration
    return rows


def sweep_faiss(w: Workload, raw: np.ndarray) -> list[dict]:
    """Each FAISS index_factory string trained on a sample of the raw tier, held in RAM; refining
    indexes at each --k-factors."""
    import faiss

    args, ds, k, metric, log = w.args, w.ds, w.args.k, w.ds.metric, w.log
    xq_f = script.faiss_queries(w.xq, metric)
    rng = np.random.default_rng(args.seed)
    sample = np.ascontiguousarray(raw[np.sort(rng.choice(ds.nb, min(args.train_size, ds.nb), replace=False))])
    faiss_strings = [c for c in (args.faiss or "").split(";") if c] or FAISS.get(ds.d, FAISS[384])
    k_factors = [int(x) for x in args.k_factors.split()]
    fmetric = faiss.METRIC_L2 if metric == "l2" else faiss.METRIC_INNER_PRODUCT
    rows = []
    for spec in tqdm(faiss_strings, desc="faiss", file=sys.stderr):
        t0 = time.perf_counter()
        index = faiss.index_factory(ds.d, spec, fmetric)
        index.train(sample)
        index.add(np.ascontiguousarray(raw, dtype=np.float32))
        build_s = time.perf_counter() - t0
        resident = faiss.serialize_index(index).size / ds.nb
        refine = "Refine" in spec or "RFlat" in spec
        for kf in (k_factors if refine else [None]):
            if kf is not None:
                faiss.downcast_index(index).k_factor = kf
            r = measure(w, lambda q, index=index: index.search(faiss_twins.normalize_rows(q) if metric == "cosine" else q, k),
                        lambda q, index=index: index.search(xq_f, k))
            rows.append({"system": "faiss", "config": spec if kf is None else f"{spec} k_factor={kf}",
                         "codec": spec, "oversample": kf, "resident_bytes_per_vector": resident,
                         "train_s": build_s, **r})
            log(f"faiss {rows[-1]['config']}: recall {r['recall_at_10']:.4f}, {resident:.1f} B/vec, "
                f"p50 {r['p50_ms']:.2f} ms, {r['qps']:.0f} QPS")
        del index
    return rows


def compare(rows: list[dict], path: str, query_file: str) -> list[dict]:
    """For each recall target, the least resident memory of each system reaching it, their ratios,
    and vecstore's process memory measured in a fresh process."""
    comparisons = []
    for target in TARGETS:
        ours = _smallest(rows, "vecstore", target)
        theirs = _smallest(rows, "faiss", target)
        entry = {"target": target, "vecstore": ours, "faiss": theirs}
        if ours and theirs:
            entry["memory_ratio"] = theirs["resident_bytes_per_vector"] / ours["resident_bytes_per_vector"]
            entry["latency_ratio"] = ours["p50_ms"] / theirs["p50_ms"]
            entry["qps_ratio"] = ours["qps"] / theirs["qps"]
        if ours:
            entry["memory_probe"] = probe_memory(path, ours, query_file)
        comparisons.append(entry)
    return comparisons


def probe_memory(path: str, row: dict, query_file: str) -> dict:
    """RssAnon / RssFile of a fresh process after opening ``row``'s configuration and after 1,000 queries."""
    probe = subprocess.run([sys.executable, "-c", PROBE, path, row["codec"], "raw",
                            str(row["oversample"]), query_file],
                           capture_output=True, text=True, check=True)
    return json.loads(probe.stdout.strip().splitlines()[-1])


def write_results(w: Workload, rows: list[dict], comparisons: list[dict], machine: dict, threads: int, *,
                  command: str, t_start: float) -> None:
    """Print the report and write twostage-<workload>.json, .md and .png to --out."""
    total = time.perf_counter() - t_start
    result = {"command": command,
              "machine": machine, "threads": threads, "dataset": w.ds.describe(), "k": w.args.k, "batch_size": w.nq,
              "single_queries": min(w.args.single, w.nq), "cache": "warm", "rows": rows, "comparisons": comparisons,
              "total_s": total, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
              "load_average_end": list(os.getloadavg())}
    report = markdown(result)
    print(report)
    stem = os.path.join(w.args.out, f"twostage-{script.dataset_tag(w.ds)}")
    script.write_results(stem, result, report)
    plot(result, stem + ".png")
    print(f"wrote {stem}.json, .md and .png in {total:.0f} s")


def _smallest(rows, system, target):
    ok = [r for r in rows if r["system"] == system and r["recall_at_10"] >= target]
    return min(ok, key=lambda r: (r["resident_bytes_per_vector"], r["p50_ms"])) if ok else None


def markdown(result) -> str:
    ds = result["dataset"]
    lines = [f"# Two-stage search vs FAISS: {ds['name']}, {ds['nb']} x {ds['d']}, metric {ds['metric']}", "",
             f"`{result['command']}` ({result['finished']}, {result['total_s']:.0f} s)", "",
             f"Machine: {metrics.describe_machine(result['machine'])}. Threads: {result['threads']} (numba, FAISS, "
             f"BLAS). Batch: {result['batch_size']} queries a call (median of runs after a warm-up); single "
             f"query p50/p99 over {result['single_queries']} calls; page cache warm; k = {result['k']}.", "",
             "## Least resident memory reaching each recall@10 target", "",
             "| target | vecstore config | B/vec | recall | p50 ms | QPS | FAISS config | B/vec | recall | p50 ms "
             "| QPS | memory ratio (FAISS/vecstore) | latency ratio | QPS ratio |", "|" + "---|" * 14]
    for c in result["comparisons"]:
        v, f = c["vecstore"], c["faiss"]
        fmt = lambda r: ([f"`{r['config']}`", f"{r['resident_bytes_per_vector']:.1f}", f"{r['recall_at_10']:.4f}",  # noqa: E731
                          f"{r['p50_ms']:.2f}", f"{r['qps']:,.0f}"] if r else ["none reaches it", "", "", "", ""])
        ratios = ([f"{c['memory_ratio']:.1f}x", f"{c['latency_ratio']:.2f}x", f"{c['qps_ratio']:.2f}x"]
                  if "memory_ratio" in c else ["", "", ""])
        lines.append("| " + " | ".join([f"{c['target']}"] + fmt(v) + fmt(f) + ratios) + " |")
    lines += ["", "Resident bytes per vector: vecstore = coarse codes (+4 for l2) + learned parameters / n, the "
              "raw tier mapped, not resident; FAISS = serialized index size / n (all in RAM).", "",
              "## Process memory of the chosen vecstore configurations (fresh process, /proc/self/status)", "",
              "| target | config | RssAnon after imports | after open | after 1,000 queries | RssFile after imports "
              "| after open | after 1,000 queries | p50 ms |", "|" + "---|" * 9]
    mib = lambda b: f"{b / 2**20:.1f} MiB"  # noqa: E731
    for c in result["comparisons"]:
        p = c.get("memory_probe")
        if p:
            lines.append("| " + " | ".join([str(c["target"]), f"`{c['vecstore']['config']}`",
                                            mib(p["imports"]["RssAnon"]), mib(p["opened"]["RssAnon"]),
                                            mib(p["after_1000_queries"]["RssAnon"]), mib(p["imports"]["RssFile"]),
                                            mib(p["opened"]["RssFile"]), mib(p["after_1000_queries"]["RssFile"]),
                                            f"{p['p50_ms']:.2f}"]) + " |")
    lines += ["", "## Every configuration", "", "| system | config | resident B/vec | recall@10 | p50 ms | p99 ms | QPS |",
              "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['system']} | `{r['config']}` | {r['resident_bytes_per_vector']:.1f} | "
                     f"{r['recall_at_10']:.4f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['qps']:,.0f} |")
    return "\n".join(lines) + "\n"


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for system, marker in (("vecstore", "o"), ("faiss", "s")):
        rows = [r for r in result["rows"] if r["system"] == system]
        ax.scatter([r["resident_bytes_per_vector"] for r in rows], [r["recall_at_10"] for r in rows],
                   marker=marker, label=system, alpha=0.7)
        front, best = [], -1.0
        for r in sorted(rows, key=lambda r: r["resident_bytes_per_vector"]):
            if r["recall_at_10"] > best:
                best = r["recall_at_10"]
                front.append(r)
        ax.plot([r["resident_bytes_per_vector"] for r in front], [r["recall_at_10"] for r in front], alpha=0.5)
    for target in TARGETS:
        ax.axhline(target, color="grey", lw=0.5, ls="--")
    ds = result["dataset"]
    ax.set_xscale("log")
    ax.set_xlabel("resident bytes per vector (log)")
    ax.set_ylabel("recall@10")
    ax.set_title(f"{ds['name']} {ds['nb']} x {ds['d']}: two-stage vecstore vs FAISS ({result['threads']} threads)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
