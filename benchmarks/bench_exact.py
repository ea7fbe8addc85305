#!/usr/bin/env python
"""Exact search: the figures of issue 2's closing note, FAISS IndexFlatIP alongside.

    python benchmarks/bench_exact.py                          # 100,000 x 4096, 1,000 queries
    python benchmarks/bench_exact.py --n 5000 --nq 100        # a quick check

On the seeded synthetic 4096-dim workload (``--data synthetic4096``: the fc7-like lift of the real
WordNet embeddings when ../shared/data/wordnet-minilm-384.hdf5 is present, else the clustered
generator; the workload's name is printed with every figure) it measures:

1. ``vecstore build`` from the .npy, run as a subprocess: wall time, peak RSS (VmHWM, and the peak
   RssAnon / RssFile sampled every 20 ms), against a process that only imports vecstore;
2. the store's file size;
3. in a fresh subprocess, the RssAnon / RssFile that opening the store and running one query add
   beyond the imports (target: < 50 MB);
4. batch throughput (``--nq`` queries in one call) and single-query latency (median of ``--single``
   >= 50 calls) of vecstore's exact search and of FAISS IndexFlatIP on the same vectors, in this
   process, alternating the two, as ratios (targets: batch >= 0.8x FAISS, single query <= 1.0x);
5. recall of exact search against the shipped ground truth of the real 384-dim set(s), with a tie
   tolerance of 1e-5 on the scores (target: 1.0).

Every figure is printed with the machine, thread count, batch size and page-cache state. Results
go to ``--out`` (default benchmarks/results/) as exact-<workload>-<n>x<dim>.{json,md}; generated
data, stores and ground truth are cached in ``--workdir`` (default benchmarks/work/).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

import vecstore
from vecstore.bench import datasets, faiss_twins, metrics, script

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MiB = metrics.mib

TARGETS = {"open_query_rss_mb": 50.0, "batch_ratio": 0.8, "single_ratio": 1.0, "recall": 1.0}

PROBE = r"""
import json, sys, time
import numpy as np
from vecstore.bench.metrics import mapped_rss, memory
import vecstore
store_path, query_path, k = sys.argv[1], sys.argv[2], int(sys.argv[3])
xq = np.load(query_path)
m0 = memory()
t0 = time.perf_counter()
store = vecstore.open(store_path)
t1 = time.perf_counter()
m1 = memory()
store.search(xq[:1], k)
t2 = time.perf_counter()
m2 = memory()
store.search(xq[1:2], k)
t3 = time.perf_counter()
m3 = memory()
print(json.dumps({"imports": m0, "opened": m1, "first_query": m2, "second_query": m3,
                  "store_mapping_rss": mapped_rss(store_path),
                  "open_s": t1 - t0, "first_query_s": t2 - t1, "second_query_s": t3 - t2}))
"""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic4096",
                    help="synthetic4096 | fc7lift4096 | clustered4096 | an ann-benchmarks .hdf5 (default: %(default)s)")
    ap.add_argument("--n", type=int, default=None,
                    help="database vectors (default: 100,000 for a synthetic set, the whole train set of a file)")
    ap.add_argument("--dim", type=int, default=4096, help="dimension of a synthetic set (default: %(default)s)")
    ap.add_argument("--nq", type=int, default=None,
                    help="queries in the batch (default: 1,000 for a synthetic set, a file's test set)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--single", type=int, default=100,
                    help="single queries timed one at a time, >= 50 (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3, help="timed batch runs per system (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for numba, FAISS and BLAS (default: every usable cpu)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cold", action="store_true",
                    help="drop the .npy and the store from the page cache before the build and the open probe")
    ap.add_argument("--real", choices=["all", "small", "none"], default="all",
                    help="real 384-d sets for the recall check: the bundled small one, plus the 100K one "
                         "when present (default: %(default)s)")
    script.add_blas_core_option(ap)
    script.add_output_options(ap, HERE)
    args = ap.parse_args(argv)
    if args.single < 50:
        ap.error("--single must be >= 50 (the closing note asks for a median of at least 50)")
    return args


# Prefixed to every measured child: at exit it writes its own /proc/self/status (VmHWM there is the
# child's true peak; ru_maxrss from wait4 is not, Linux carries the parent's peak across fork + exec).
STATUS_HOOK = r"""
import atexit, os
def _vecstore_bench_status():
    with open("/proc/self/status") as src, open(os.environ["VECSTORE_BENCH_STATUS"], "w") as dst:
        dst.write(src.read())
atexit.register(_vecstore_bench_status)
"""

CLI = r"""
import sys
sys.argv = ["vecstore"] + sys.argv[1:]
from vecstore.cli import main
main()
"""


def run_measured(code: str, args: list[str]) -> dict:
    """Run ``python -c code args``; return wall time, output, its final status and sampled peaks."""
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r", suffix=".status") as status:
        env = dict(os.environ, VECSTORE_BENCH_STATUS=status.name)
        cmd = [sys.executable, "-c", STATUS_HOOK + code, *args]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        peak = {"VmRSS": 0, "RssAnon": 0, "RssFile": 0}
        while proc.poll() is None:
            try:
                now = metrics.memory(proc.pid)
                for key in peak:
                    peak[key] = max(peak[key], now.get(key, 0))
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        out.seek(0)
        text = out.read().decode(errors="replace")
        if proc.returncode != 0:
            raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd[3:])}\n{text}")
        final = parse_status(status.read())
    return {"wall_s": wall, "output": text, "final": final, "VmHWM": final["VmHWM"], "sampled_peak": peak}


def parse_status(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if len(parts) == 2 and parts[1].lower() == "kb":
            out[name] = int(parts[0]) * 1024
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    script.pin_environment(args.threads, fix_blas_core=not args.keep_blas_core)
    t_start = time.perf_counter()
    threads, _, ds = script.start(args)
    run = prepare_run(args, ds, threads)
    warm_kernel_cache(run)
    machine = metrics.machine()
    print_header(run, machine)
    figures = Figures()
    measure_build(run, figures)
    measure_open(run, figures)
    measure_search(run, figures)
    if args.real != "none":
        measure_real_recall(run, figures)
    write_results(run, figures, machine, command=script.command_line(__file__, argv), t_start=t_start)


@dataclass
class Run:
    """What every phase measures: the settings, the workload, its files, and its label for the figures."""

    args: argparse.Namespace
    ds: datasets.Dataset
    threads: int
    xq: np.ndarray                  # (nq, d) queries
    npy: str                        # the database as .npy, what `vecstore build` reads
    store_path: str
    query_file: str                 # the first two queries, for the open probe
    workload: str                   # printed with every figure

    @property
    def nq(self) -> int:
        return self.xq.shape[0]


def prepare_run(args, ds, threads: int) -> Run:
    """The workload's files: the database as .npy (written once into --workdir if the dataset has
    none) and the probe's two queries."""
    xq = ds.get_queries()
    npy = ds.database_path()
    if npy is None or not npy.endswith(".npy"):
        npy = os.path.join(args.workdir, f"{ds.name}-n{ds.nb}.base.npy")
        if not os.path.exists(npy):
            xb = ds.get_database()
            datasets.write_npy(npy, xb.shape, (xb[i:i + 65536] for i in range(0, xb.shape[0], 65536)))
    run = Run(args, ds, threads, xq, npy, store_path=os.path.join(args.workdir, f"exact-{ds.name}-n{ds.nb}.vs"),
              query_file=os.path.join(args.workdir, f"exact-{ds.name}-probe-queries.npy"),
              workload=f"{ds.name} ({ds.nb} x {ds.d} float32, metric {ds.metric})")
    np.save(run.query_file, xq[:2])
    return run


def warm_kernel_cache(run: Run) -> None:
    """Search a tiny store once, so that numba's on-disk kernel cache is warm and no child process
    measures a compilation."""
    tiny = os.path.join(run.args.workdir, "exact-warmup.vs")
    with vecstore.build(tiny, run.xq[: max(2, min(run.nq, 64))], metric=run.ds.metric, overwrite=True) as s:
        s.search(run.xq[:1], 1)
        s.search(run.xq[: min(run.nq, 32)], 1)
    os.unlink(tiny)


def say(text: str = "") -> None:
    print(text, flush=True)


def print_header(run: Run, machine: dict) -> None:
    say("# vecstore exact search vs FAISS IndexFlatIP")
    say(f"machine : {metrics.describe_machine(machine)}")
    say(f"threads : {run.threads} (numba, FAISS OpenMP, BLAS)   OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}")
    say(f"workload: {run.workload}; {run.ds.describe().get('generator', run.ds.describe().get('source', ''))}")
    say()


class Figures:
    """The run's figures by key, in the order measured; each is printed as soon as it is known, so
    a run cut short still shows what it measured."""

    def __init__(self) -> None:
        self.by_key: dict[str, dict] = {}

    def add(self, key, label, value, *, faiss=None, ratio=None, target=None, met=None, conditions="",
            **extra) -> None:
        self.by_key[key] = {"label": label, "value": value, "faiss": faiss, "ratio": ratio, "target": target,
                            "met": met, "conditions": conditions, **extra}
        parts = [f"{label}: {value}"]
        if faiss is not None:
            parts.append(f"FAISS {faiss}")
        if ratio is not None:
            parts.append(f"ratio {ratio}")
        if target is not None:
            parts.append(f"target {target} -> {'met' if met else 'MISSED'}")
        say("  " + "; ".join(parts) + (f"   [{conditions}]" if conditions else ""))


def measure_build(run: Run, figures: Figures) -> None:
    """1. `vecstore build` from the .npy in a subprocess: time, peak RSS, file size."""
    say("## build (CLI subprocess)")
    if run.args.cold:
        metrics.evict_page_cache(run.npy)
    npy_state = metrics.cache_state(run.npy)
    base = run_measured("import vecstore, vecstore.cli", [])
    build = run_measured(CLI, ["build", run.npy, run.store_path, "--metric", run.ds.metric, "--force", "--quiet"])
    m = re.search(r"in ([0-9.]+) s", build["output"])
    reported = float(m[1]) if m else None
    cond = f"{run.workload}; input {npy_state}; threads={run.threads}"
    figures.add("build_time", "build time `vecstore build X.npy S.vs`",
                f"{reported:.2f} s (CLI's own timer), {build['wall_s']:.2f} s wall incl. interpreter start",
                conditions=cond, seconds=reported, wall_seconds=build["wall_s"])
    peak_beyond = build["VmHWM"] - base["VmHWM"]
    figures.add("build_peak_rss", "build peak RSS (VmHWM)",
                f"{MiB(build['VmHWM']):.0f} MiB ({MiB(peak_beyond):+.0f} MiB beyond an import-only process of "
                f"{MiB(base['VmHWM']):.0f} MiB); sampled peak RssAnon {MiB(build['sampled_peak']['RssAnon']):.0f} MiB, "
                f"RssFile {MiB(build['sampled_peak']['RssFile']):.0f} MiB; input is {MiB(os.path.getsize(run.npy)):.0f} MiB",
                conditions=cond, vm_hwm=build["VmHWM"], import_only_vm_hwm=base["VmHWM"],
                sampled_peak=build["sampled_peak"], input_bytes=os.path.getsize(run.npy))
    size = os.path.getsize(run.store_path)
    figures.add("file_size", "file size", f"{size:,} bytes ({MiB(size):.1f} MiB; "
                f"{size / (run.ds.nb * run.ds.d * 4):.4f}x the float32 vectors)", conditions=run.workload, bytes=size)


def measure_open(run: Run, figures: Figures) -> None:
    """2. In a fresh process: the memory that opening the store and one query add beyond the imports."""
    say("## open + one query (fresh subprocess)")
    if run.args.cold:
        metrics.evict_page_cache(run.store_path)
    store_state = metrics.cache_state(run.store_path)
    probe = json.loads(run_measured(PROBE, [run.store_path, run.query_file, str(run.args.k)])["output"].strip().splitlines()[-1])
    d_open = metrics.memory_delta(probe["imports"], probe["opened"])
    d_query = metrics.memory_delta(probe["imports"], probe["first_query"])
    d_second = metrics.memory_delta(probe["imports"], probe["second_query"])
    cond = f"{run.workload}; store {store_state}; threads={run.threads}; k={run.args.k}; batch=1"
    figures.add("open_rss", "RSS added by vecstore.open()",
                f"RssAnon {MiB(d_open['RssAnon']):+.1f} MiB, RssFile {MiB(d_open['RssFile']):+.1f} MiB "
                f"(open took {probe['open_s'] * 1e3:.1f} ms)", conditions=cond, delta=d_open)
    anon = MiB(d_query["RssAnon"])
    figures.add("open_query_rss", "RSS added by open + first query",
                f"RssAnon {anon:+.1f} MiB, RssFile {MiB(d_query['RssFile']):+.1f} MiB (of which the store's mapped "
                f"pages {MiB(probe['store_mapping_rss']):.1f} MiB, shared and reclaimable; the rest library pages); after a 2nd query RssAnon {MiB(d_second['RssAnon']):+.1f} MiB; first query "
                f"{probe['first_query_s'] * 1e3:.0f} ms (loads cached kernels), second {probe['second_query_s'] * 1e3:.0f} ms",
                target=f"RssAnon < {TARGETS['open_query_rss_mb']:.0f} MB",
                met=d_query["RssAnon"] < TARGETS["open_query_rss_mb"] * 1e6, conditions=cond, delta=d_query,
                delta_second=d_second, probe=probe)


def measure_search(run: Run, figures: Figures) -> None:
    """3. Throughput, latency and recall of vecstore's exact search against FAISS IndexFlatIP on the
    store's raw tier, in this process, alternating the two."""
    say("## search speed: vecstore exact vs FAISS IndexFlatIP (same process, alternating)")
    store = vecstore.open(run.store_path)
    index, _ = faiss_twins.build_twin("float32", store.tier().codes, metric=run.ds.metric)
    xq_f = script.faiss_queries(run.xq, run.ds.metric)
    state = time_batch(run, store, index, xq_f, figures)
    time_single(run, store, index, xq_f, state, figures)
    check_recall(run, store, index, xq_f, figures)
    del index
    store.close()


def time_batch(run: Run, store, index, xq_f: np.ndarray, figures: Figures) -> str:
    """All queries in one call, median of --repeats; returns the store's page-cache state after."""
    k, nq, xq = run.args.k, run.nq, run.xq
    batch = metrics.time_repeated_interleaved(
        {"vecstore": lambda: store.search(xq, k), "faiss": lambda: index.search(xq_f, k)},
        repeats=run.args.repeats, warmup=1)
    state = metrics.cache_state(run.store_path)
    cond = f"{run.workload}; threads={run.threads}; batch={nq} queries; k={k}; {run.args.repeats} runs after 1 warm-up, median; store {state}"
    qv, qf = nq / batch["vecstore"].median, nq / batch["faiss"].median
    figures.add("batch_qps", f"batch throughput ({nq} queries a call)", f"{qv:,.0f} queries/s",
                faiss=f"{qf:,.0f} queries/s", ratio=f"{qv / qf:.2f}x", target=f">= {TARGETS['batch_ratio']}x",
                met=qv / qf >= TARGETS["batch_ratio"], conditions=cond, vecstore_qps=qv, faiss_qps=qf,
                ratio_value=qv / qf, timings={n: t.summary() for n, t in batch.items()})
    return state


def time_single(run: Run, store, index, xq_f: np.ndarray, state: str, figures: Figures) -> None:
    """One query a call, p50 and p99 over --single calls."""
    k, xq = run.args.k, run.xq
    n_single = min(run.args.single, run.nq)
    items = [xq[i:i + 1] for i in range(n_single)]
    items_f = {id(a): b for a, b in zip(items, [xq_f[i:i + 1] for i in range(n_single)])}
    single = metrics.time_each_interleaved(
        {"vecstore": lambda q: store.search(q, k), "faiss": lambda q: index.search(items_f[id(q)], k)},
        items, warmup=5)
    sv, sf = single["vecstore"], single["faiss"]
    cond = f"{run.workload}; threads={run.threads}; batch=1; k={k}; {n_single} queries after 5 warm-up, alternating; store {state}"
    figures.add("single_latency", "single-query latency p50",
                f"{sv.p50 * 1e3:.2f} ms (p99 {sv.p99 * 1e3:.2f} ms)", faiss=f"{sf.p50 * 1e3:.2f} ms (p99 {sf.p99 * 1e3:.2f} ms)",
                ratio=f"{sv.p50 / sf.p50:.2f}x time", target=f"<= {TARGETS['single_ratio']}x",
                met=sv.p50 / sf.p50 <= TARGETS["single_ratio"], conditions=cond, ratio_value=sv.p50 / sf.p50,
                timings={"vecstore": sv.summary(), "faiss": sf.summary()})


def check_recall(run: Run, store, index, xq_f: np.ndarray, figures: Figures) -> None:
    """Agreement on the generated set: both exact searches against its float64 ground truth."""
    k, metric = run.args.k, run.ds.metric
    D_gt, I_gt = run.ds.get_groundtruth_with_scores(k)
    Dv, Iv = store.search(run.xq, k)
    Df, If = index.search(xq_f, k)
    rv = metrics.tie_report(Iv, I_gt, k, D=Dv, D_ref=D_gt, metric=metric)
    rf = metrics.tie_report(If, I_gt, k, D=Df, D_ref=D_gt, metric=metric)
    figures.add("synthetic_recall", f"recall@{k} of exact search vs float64 ground truth",
                f"{rv['recall_tie_tolerant']:.4f} tie-tolerant ({rv['recall']:.4f} strict)",
                faiss=f"{rf['recall_tie_tolerant']:.4f} ({rf['recall']:.4f} strict)",
                target=f"{TARGETS['recall']}", met=rv["recall_tie_tolerant"] >= TARGETS["recall"],
                conditions=f"{run.workload}; {run.nq} queries; tolerance 1e-5 on scores", vecstore=rv, faiss_report=rf)


def measure_real_recall(run: Run, figures: Figures) -> None:
    """4. Recall of exact search on the real 384-d set(s) against their shipped ground truth."""
    say("## recall of exact search on the real WordNet / MiniLM set(s), shipped ground truth")
    files = [datasets.BUNDLED_SMALL] + ([datasets.DEFAULT_REAL] if run.args.real == "all" else [])
    for path in files:
        if not os.path.exists(path):
            say(f"  (skipped {path}: not present. {datasets.missing_real_data_message(path).splitlines()[0]})")
            continue
        real = datasets.AnnBenchmarksDataset(path)
        rpath = os.path.join(run.args.workdir, f"exact-{real.name}.vs")
        vecstore.build(rpath, f"{path}:/train", metric=real.metric, overwrite=True).close()
        kk = min(100, real.shipped_k)
        D_ref, I_ref = real.get_groundtruth_with_scores(kk)
        with vecstore.open(rpath) as rs:
            D, I = rs.search(real.get_queries(), kk)
        reports = {kx: metrics.tie_report(I, I_ref, kx, D=D, D_ref=D_ref, metric=real.metric)
                   for kx in (1, 10, kk)}
        text = ", ".join(f"@{kx} {r['recall_tie_tolerant']:.4f} ({r['recall']:.4f} strict; "
                         f"{r['explained_by_ties']} tie swaps)" for kx, r in reports.items())
        worst = min(r["recall_tie_tolerant"] for r in reports.values())
        figures.add(f"real_recall_{real.name}", f"recall, {real.name}", text, target="1.0",
                    met=worst >= TARGETS["recall"],
                    conditions=f"{real.nb} x {real.d}, {real.nq} queries, metric {real.metric}, "
                               f"tolerance 1e-5 on cosine; threads={run.threads}", reports=reports)
        os.unlink(rpath)


def write_results(run: Run, figures: Figures, machine: dict, *, command: str, t_start: float) -> None:
    """exact-<workload>-<n>x<dim>.json and .md in --out."""
    total = time.perf_counter() - t_start
    say()
    say(f"total time {total:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    ds = run.ds
    stem = os.path.join(run.args.out, f"exact-{ds.name}-{ds.nb}x{ds.d}")
    result = {"command": command.strip(), "machine": machine, "threads": run.threads, "dataset": ds.describe(),
              "batch_size": run.nq, "k": run.args.k, "targets": TARGETS, "figures": figures.by_key, "total_s": total,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    script.write_results(stem, result, markdown(result))
    say(f"wrote {stem}.json and {stem}.md")


def markdown(result: dict) -> str:
    lines = [f"# Exact search: {result['dataset']['name']}, {result['dataset']['nb']} x {result['dataset']['d']}",
             "",
             f"`{result['command']}` ({result['finished']}, {result['total_s']:.0f} s)",
             "",
             f"Machine: {metrics.describe_machine(result['machine'])}. Threads: {result['threads']}. "
             f"Batch: {result['batch_size']} queries, k = {result['k']}.",
             "",
             "| figure | vecstore | FAISS IndexFlatIP | ratio | target | met | conditions |",
             "|---|---|---|---|---|---|---|"]
    for f in result["figures"].values():
        met = "" if f["met"] is None else ("yes" if f["met"] else "**no**")
        cells = [f["label"], f["value"], f["faiss"] or "", f["ratio"] or "", f["target"] or "", met,
                 f["conditions"]]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
