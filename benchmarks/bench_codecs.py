#!/usr/bin/env python
"""Codec tiers against their FAISS twins: issue 3's closing-note table.

    python benchmarks/bench_codecs.py                                  # real 100,000 x 384
    python benchmarks/bench_codecs.py --data synthetic4096             # synthetic 100,000 x 4096
    python benchmarks/bench_codecs.py --data data/wordnet-minilm-384-small.hdf5 --nq 100   # quick

For each codec string (default, 384-d: float16 int8 pca128,int8 pq48 pq96 pca192,pq48 pq96x4;
4096-d: float16 int8 pca512,int8 pq64 pq256 pca512,pq64 pq128x4) it trains the codec on
``--train-size`` rows sampled as ``vecstore compress`` samples them, adds it as a tier, and measures
bytes per vector, recall@10 against exact ground truth, batch QPS (``--nq`` queries a call),
single-query latency (p50, p99 over ``--single`` calls) and training time. In the same run it builds
the FAISS twin at equal bytes (SQfp16, SQ8, PCA+SQ8, PQm, PCA+PQm, PQmx4fs; see
vecstore/bench/faiss_twins.py for the exact index_factory strings) from the same training
sample with the same thread count, measures the same figures alternating with vecstore, and reports
the ratios against the targets: recall no more than 0.005 below the twin, batch QPS >= 1.0x,
single-query time <= 1.0x.

Progress goes to stderr, the table to stdout, JSON + Markdown to ``--out`` (default
benchmarks/results/) as codecs-<workload>-n<n>.{json,md}; data and stores live in ``--workdir``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

import vecstore
from vecstore.bench import datasets, faiss_twins, metrics, script

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = {"recall_diff": -0.005, "qps_ratio": 1.0, "latency_ratio": 1.0}
# Fast tiers' batches are timed as many rounds as fit in this budget (at most 15, at least --repeats):
# a median of one 100 ms run on a shared 2-core machine is mostly noise.
BATCH_BUDGET_S = 10.0
DEFAULT_CODECS = {
    384: ["float16", "int8", "pca128,int8", "pq48", "pq96", "pca192,pq48", "pq96x4"],
    4096: ["float16", "int8", "pca512,int8", "pq64", "pq256", "pca512,pq64", "pq128x4"],
}
TOLERANCE = 1e-5  # scores within this of the k-th true score count as ties


def default_codecs(dim: int) -> list[str]:
    """The issue's tier list, sized for ``dim`` (a generic rule for dimensions other than 384/4096)."""
    if dim in DEFAULT_CODECS:
        return DEFAULT_CODECS[dim]

    def divisor_near(target: int) -> int:
        return min((m for m in range(1, dim + 1) if dim % m == 0), key=lambda m: (abs(m - target), m))

    p = max(8, (dim // 3) // 8 * 8)
    small, big = divisor_near(max(1, dim // 8)), divisor_near(max(1, dim // 4))
    ppq = min(p // 4, small) if p >= 4 else 1
    ppq = max(m for m in range(1, ppq + 1) if p % m == 0)
    return ["float16", "int8", f"pca{p},int8", f"pq{small}", f"pq{big}", f"pca{p},pq{ppq}",
            f"pq{big}x4" if big % 2 == 0 else f"pq{small}x4"]


def parse_codecs(text: str | None) -> list[str] | None:
    """Codec strings separated by spaces or semicolons (commas belong to the strings)."""
    if not text:
        return None
    return [c for c in text.replace(";", " ").split() if c]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="wordnet384",
                    help="an ann-benchmarks .hdf5, 'wordnet384' (../shared/data/wordnet-minilm-384.hdf5), "
                         "'synthetic4096', 'fc7lift4096' or 'clustered4096' (default: %(default)s)")
    ap.add_argument("--n", type=int, default=None,
                    help="database vectors (default: the file's train set; 100,000 for synthetic sets)")
    ap.add_argument("--nq", type=int, default=None, help="queries (default: the file's, at most 1,000)")
    ap.add_argument("--dim", type=int, default=4096, help="dimension of a synthetic set")
    ap.add_argument("--train-size", type=int, default=50_000, help="training sample (default: %(default)s)")
    ap.add_argument("--codecs", default=None,
                    help="codec strings separated by spaces or ';' (default: the issue's list for the dim); "
                         "'raw' adds exact search against IndexFlat")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--single", type=int, default=300, help="single queries timed (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timed batch runs per system (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None, help="threads for numba, FAISS and BLAS (default: all)")
    ap.add_argument("--seed", type=int, default=0, help="training-sample and k-means seed")
    script.add_blas_core_option(ap)
    script.add_output_options(ap, HERE)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    script.pin_environment(args.threads, fix_blas_core=not args.keep_blas_core)
    t_start = time.perf_counter()
    threads, log, ds = load_dataset(args)
    codecs = parse_codecs(args.codecs) or default_codecs(ds.d)
    bench = prepare(args, ds, log)
    machine = metrics.machine()
    print_header(bench, threads, machine)
    results = run_all(codecs, bench)
    bench.base_store.close()
    os.unlink(bench.base)
    write_results(bench, results, machine, threads, command=script.command_line(__file__, argv), t_start=t_start)


def load_dataset(args):
    """script.start, with at most 1,000 of a file's queries unless --nq says otherwise."""
    threads, log, ds = script.start(args)
    if args.nq is None and ds.nq > 1000:
        args.nq = 1000
        ds = script.start(args)[2]
    return threads, log, ds


@dataclass
class Bench:
    """What every codec's run shares: the settings, the workload and its exact ground truth, the base
    store with its raw tier, and the training sample both systems fit on."""

    args: argparse.Namespace
    ds: datasets.Dataset
    log: Callable[[str], None]      # to stderr, above the progress bar
    xq: np.ndarray                  # (nq, d) queries, as the store gets them
    xq_f: np.ndarray                # (nq, d) the same, as FAISS gets them
    D_gt: np.ndarray                # (nq, k) exact scores and ids
    I_gt: np.ndarray
    base: str                       # the base store's path
    base_store: vecstore.Store
    raw: np.ndarray                 # (n, d) its raw tier: unit rows for cosine, FAISS gets exactly these
    train_size: int
    sample: np.ndarray              # (train_size, d) the rows `vecstore compress` would sample


def prepare(args, ds, log) -> Bench:
    """Build the store with its raw tier once (every codec tier is added to a hard link of it) and
    draw the training sample from it."""
    xq = ds.get_queries()
    D_gt, I_gt = ds.get_groundtruth_with_scores(args.k)
    base = os.path.join(args.workdir, f"codecs-{script.dataset_tag(ds)}.vs")
    log(f"building {base}")
    source = ds.database_path() or ds.get_database()
    vecstore.build(base, source, metric=ds.metric, overwrite=True, progress=True).close()
    base_store = vecstore.open(base)
    raw = base_store.tier().codes
    xq_f = script.faiss_queries(xq, ds.metric)
    train_size = min(args.train_size, ds.nb)
    rows = faiss_twins.training_rows(ds.nb, train_size, args.seed)
    sample = np.ascontiguousarray(raw[rows], dtype=np.float32)
    return Bench(args, ds, log, xq, xq_f, D_gt, I_gt, base, base_store, raw, train_size, sample)


def print_header(bench: Bench, threads: int, machine: dict) -> None:
    args, ds, nq = bench.args, bench.ds, bench.xq.shape[0]
    workload = f"{ds.name} ({ds.nb} x {ds.d}, {nq} queries, metric {ds.metric})"
    print("# vecstore codec tiers vs their FAISS twins", flush=True)
    print(f"machine : {metrics.describe_machine(machine)}")
    print(f"threads : {threads} (numba, FAISS OpenMP, BLAS)   OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}"
          f"   OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '-')}")
    print(f"workload: {workload}")
    print(f"settings: k={args.k}; batch={nq} queries a call, median of >= {args.repeats} after 1 warm-up; single-query "
          f"p50 over {min(args.single, nq)} calls after 5 warm-up; vecstore and FAISS alternate; "
          f"train sample {bench.train_size} rows (seed {args.seed}); page cache warm (each store is read by a "
          f"warm-up first; the measured state is logged per tier and kept in the JSON)\n",
          flush=True)


def run_all(codecs: list[str], bench: Bench) -> list[dict]:
    """Every codec in turn, under a progress bar."""
    results = []
    bar = tqdm(codecs, desc="codecs", file=sys.stderr, dynamic_ncols=True)
    for codec in bar:
        bar.set_postfix_str(codec)
        try:
            results.append(run_codec(codec, bench))
        except Exception as exc:  # one failing codec must not lose the others' figures
            bench.log(f"{codec}: FAILED: {exc}\n{traceback.format_exc()}")
            results.append({"codec": codec, "error": f"{type(exc).__name__}: {exc}"})
    bar.close()
    return results


def write_results(bench: Bench, results: list[dict], machine: dict, threads: int, *, command: str,
                  t_start: float) -> None:
    """Print the table and write codecs-<workload>-n<n>.json and .md to --out."""
    args, nq = bench.args, bench.xq.shape[0]
    total = time.perf_counter() - t_start
    result = {"command": command.strip(), "machine": machine, "threads": threads, "dataset": bench.ds.describe(),
              "k": args.k, "batch_size": nq, "single_queries": min(args.single, nq), "repeats": args.repeats,
              "train_size": bench.train_size, "seed": args.seed, "targets": TARGETS, "tolerance": TOLERANCE,
              "cache": "warm", "results": results, "total_s": total,
              "load_average_end": list(os.getloadavg()), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    table = markdown_table(result)
    print(table)
    print(f"total time {total:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    stem = os.path.join(args.out, f"codecs-{script.dataset_tag(bench.ds)}")
    script.write_results(stem, result, markdown_report(result, table))
    print(f"wrote {stem}.json and {stem}.md")


def run_codec(codec: str, bench: Bench) -> dict:
    """One tier and its FAISS twin at equal bytes: build both, time them alternating, score both."""
    k = bench.args.k
    out: dict = {"codec": codec, "twin": faiss_twins.twin_factory_string(codec)}
    store, tier, cpath, out["vecstore"] = vecstore_tier(codec, bench)
    bench.log(f"{codec}: vecstore trained in {out['vecstore']['train_s']:.1f} s; building FAISS {out['twin']}")
    index, info = faiss_twins.build_twin(codec if codec != "raw" else "float32", bench.raw, metric=bench.ds.metric,
                                         train=bench.sample if faiss_twins.needs_training(codec) else None)
    out["faiss"] = {"train_s": info["train_s"], "add_s": info["add_s"], "bytes_per_vector": info["code_size"]}

    def vs_search(q):
        return store.search(q, k, tier=tier)

    batch, single = time_both(bench, vs_search, index)
    out["cache"] = metrics.cache_state(cpath or bench.base)
    ids = {"vecstore": vs_search(bench.xq)[1], "faiss": index.search(bench.xq_f, k)[1]}
    for name in ("vecstore", "faiss"):
        out[name].update(accuracy_and_speed(bench, ids[name], batch[name], single[name]))
    out["ratios"], out["met"] = compare(out["vecstore"], out["faiss"])
    v, f = out["vecstore"], out["faiss"]
    bench.log(f"{codec}: recall {v['recall']:.4f} vs {f['recall']:.4f}; QPS {v['qps']:.0f} vs {f['qps']:.0f}; "
              f"p50 {v['p50_ms']:.2f} vs {f['p50_ms']:.2f} ms; store {out['cache']}")
    del index
    if cpath is not None:
        store.close()
        os.unlink(cpath)
    return out


def vecstore_tier(codec: str, bench: Bench) -> tuple[vecstore.Store, str, str | None, dict]:
    """The store and tier to search: the base store's raw tier, or the codec fitted on the sample (what
    compress's training does) and added to a hard link of the base store, which compress replaces.

    Returns (store, tier name, the link's path or None, train and build figures).
    """
    if codec in ("raw", "float32"):
        store = bench.base_store
        return store, "raw", None, {"train_s": 0.0, "tier_build_s": 0.0,
                                    "bytes_per_vector": store.tier("raw").bytes_per_vector}
    pipeline = vecstore.get_codec(codec, bench.ds.d)
    tier = str(pipeline)
    t0 = time.perf_counter()
    pipeline.fit(bench.sample, seed=bench.args.seed)        # what compress's training does
    train_s = time.perf_counter() - t0
    cpath = bench.base[:-3] + f"-{tier.replace(',', '_')}.vs"
    if os.path.exists(cpath):
        os.unlink(cpath)
    os.link(bench.base, cpath)                               # compress replaces the link, not base
    t0 = time.perf_counter()
    vecstore.compress(cpath, codec, params=pipeline.params(), seed=bench.args.seed, progress=False).close()
    tier_s = time.perf_counter() - t0
    store = vecstore.open(cpath)
    described = store.tier(tier).describe()
    return store, tier, cpath, {"train_s": train_s, "tier_build_s": tier_s,
                                "bytes_per_vector": described["bytes_per_vector"],
                                "param_bytes": described["param_bytes"]}


def time_both(bench: Bench, vs_search, index) -> tuple[dict, dict]:
    """Batch and single-query timings of vecstore and the twin, alternating; a fast tier's batch gets
    as many rounds as fit in BATCH_BUDGET_S."""
    xq, xq_f, k = bench.xq, bench.xq_f, bench.args.k
    batch = metrics.time_repeated_interleaved(
        {"vecstore": lambda: vs_search(xq), "faiss": lambda: index.search(xq_f, k)},
        repeats=bench.args.repeats, warmup=1, budget_s=BATCH_BUDGET_S)
    n_single = min(bench.args.single, xq.shape[0])
    pairs = [(xq[i:i + 1], xq_f[i:i + 1]) for i in range(n_single)]
    single = metrics.time_each_interleaved(
        {"vecstore": lambda p: vs_search(p[0]), "faiss": lambda p: index.search(p[1], k)}, pairs, warmup=5)
    return batch, single


def accuracy_and_speed(bench: Bench, I: np.ndarray, t_batch, t_single) -> dict:
    """Strict and tie-tolerant recall of one system's ids (nq, k), its QPS and single-query latency."""
    k, metric, nq = bench.args.k, bench.ds.metric, bench.xq.shape[0]
    exact_metric = "ip" if metric == "cosine" else metric       # raw rows and xq_f are unit for cosine
    true_scores = datasets.exact_scores(bench.xq_f, bench.raw, I, exact_metric)
    return dict(
        recall=metrics.recall_at_k(I, bench.I_gt, k),
        recall_tie_tolerant=metrics.recall_at_k(I, bench.I_gt, k, D=true_scores, D_ref=bench.D_gt, metric=metric,
                                                atol=TOLERANCE),
        qps=nq / t_batch.median, batch=t_batch.summary(),
        p50_ms=t_single.p50 * 1e3, p99_ms=t_single.p99 * 1e3, single=t_single.summary())


def compare(v: dict, f: dict) -> tuple[dict, dict]:
    """vecstore's figures against the twin's, and which TARGETS they meet."""
    ratios = {"recall_diff": v["recall"] - f["recall"], "qps_ratio": v["qps"] / f["qps"],
              "latency_ratio": v["p50_ms"] / f["p50_ms"],
              "equal_bytes": v["bytes_per_vector"] == f["bytes_per_vector"]}
    met = {"recall": ratios["recall_diff"] >= TARGETS["recall_diff"],
           "qps": ratios["qps_ratio"] >= TARGETS["qps_ratio"],
           "latency": ratios["latency_ratio"] <= TARGETS["latency_ratio"]}
    return ratios, met


def markdown_table(result: dict) -> str:
    head = ["codec", "B/vec", "recall@%d" % result["k"], "QPS", "p50 ms", "p99 ms", "train s",
            "FAISS twin", "B/vec", "recall@%d" % result["k"], "QPS", "p50 ms", "p99 ms", "train s",
            "Δ recall", "QPS ratio", "latency ratio", "targets missed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in result["results"]:
        if "error" in r:
            lines.append(f"| {r['codec']} | failed: {r['error']} |" + " |" * (len(head) - 2))
            continue
        v, f, q = r["vecstore"], r["faiss"], r["ratios"]
        missed = [name for name, ok in r["met"].items() if not ok]
        if not q["equal_bytes"]:
            missed.append("(bytes differ)")
        lines.append("| " + " | ".join([
            f"`{r['codec']}`", str(v["bytes_per_vector"]), f"{v['recall']:.4f}", f"{v['qps']:,.0f}",
            f"{v['p50_ms']:.2f}", f"{v['p99_ms']:.2f}", f"{v['train_s']:.1f}",
            f"`{r['twin']}`", str(f["bytes_per_vector"]), f"{f['recall']:.4f}", f"{f['qps']:,.0f}",
            f"{f['p50_ms']:.2f}", f"{f['p99_ms']:.2f}", f"{f['train_s']:.1f}",
            f"{q['recall_diff']:+.4f}", f"{q['qps_ratio']:.2f}x", f"{q['latency_ratio']:.2f}x",
            ", ".join(missed) or "none"]) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(result: dict, table: str) -> str:
    ds = result["dataset"]
    return "\n".join([
        f"# Codec tiers vs FAISS twins: {ds['name']}, {ds['nb']} x {ds['d']}",
        "",
        f"`{result['command']}` ({result['finished']}, {result['total_s']:.0f} s)",
        "",
        f"Machine: {metrics.describe_machine(result['machine'])}. Threads: {result['threads']} for numba, "
        f"FAISS and BLAS; OMP_WAIT_POLICY={result['machine']['env'].get('OMP_WAIT_POLICY', 'unset')} (idle OpenMP "
        f"threads do not spin into the other library's next call). Workload: {ds.get('generator') or ds.get('source')}; metric {ds['metric']}; "
        f"ground truth {ds.get('groundtruth')}.",
        "",
        f"Batch: {result['batch_size']} queries a call, k = {result['k']}, median of {result['repeats']} runs "
        f"after one warm-up, or of more for fast tiers (as many vecstore/FAISS rounds as fit in {BATCH_BUDGET_S:.0f} s, "
        f"at most 15: the JSON's batch.n). Single query: p50/p99 over {result['single_queries']} calls. vecstore and FAISS "
        f"alternate. Page cache warm. Training sample: {result['train_size']} rows, seed {result['seed']}, the "
        f"same rows for both. B/vec: code bytes per vector (vecstore adds 4 for l2 stores' norms).",
        "",
        table,
        f"Targets against the twin at equal bytes: recall no more than {-TARGETS['recall_diff']} below, "
        f"batch QPS >= {TARGETS['qps_ratio']}x, single-query time <= {TARGETS['latency_ratio']}x.",
        "vecstore's train time is the codec's fit on the sample (FAISS: index.train). Recall is strict "
        "(ids); the JSON also has a tie-tolerant recall (true scores within 1e-5 of the k-th count).",
        "FAISS's PCA pre-transform centres queries and documents alike, so with inner product it ranks by "
        "(q - m).(x - m); vecstore's PCA tiers keep q.x (the mean is folded into the score).",
        "",
    ])


if __name__ == "__main__":
    main()
