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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

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
    ap.add_argument("--keep-blas-core", action="store_true",
                    help="do not set OPENBLAS_CORETYPE (FAISS's OpenBLAS may then use Prescott kernels)")
    ap.add_argument("--workdir", default=os.path.join(HERE, "work"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="directory for the .json and .md")
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


def run_measured(code: str, args: list[str], metrics) -> dict:
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
    from vecstore.bench import script

    script.pin_environment(args.threads, fix_blas_core=not args.keep_blas_core)
    import numpy as np

    import vecstore
    from vecstore.bench import datasets, faiss_twins, metrics

    MiB = metrics.mib
    t_start = time.perf_counter()
    threads, _, ds = script.start(args)

    def say(text: str = "") -> None:
        print(text, flush=True)

    # -- the workload ------------------------------------------------------------------------------
    xq = ds.get_queries()
    nq = xq.shape[0]
    npy = ds.database_path()
    if npy is None or not npy.endswith(".npy"):
        npy = os.path.join(args.workdir, f"{ds.name}-n{ds.nb}.base.npy")
        if not os.path.exists(npy):
            xb = ds.get_database()
            datasets.write_npy(npy, xb.shape, (xb[i:i + 65536] for i in range(0, xb.shape[0], 65536)))
    metric = ds.metric
    workload = f"{ds.name} ({ds.nb} x {ds.d} float32, metric {metric})"
    store_path = os.path.join(args.workdir, f"exact-{ds.name}-n{ds.nb}.vs")
    query_file = os.path.join(args.workdir, f"exact-{ds.name}-probe-queries.npy")
    np.save(query_file, xq[:2])

    # warm numba's on-disk kernel cache, so that no child process measures a compilation
    tiny = os.path.join(args.workdir, "exact-warmup.vs")
    with vecstore.build(tiny, xq[: max(2, min(nq, 64))], metric=metric, overwrite=True) as s:
        s.search(xq[:1], 1)
        s.search(xq[: min(nq, 32)], 1)
    os.unlink(tiny)

    machine = metrics.machine()
    say(f"# vecstore exact search vs FAISS IndexFlatIP")
    say(f"machine : {metrics.describe_machine(machine)}")
    say(f"threads : {threads} (numba, FAISS OpenMP, BLAS)   OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '-')}")
    say(f"workload: {workload}; {ds.describe().get('generator', ds.describe().get('source', ''))}")
    say()
    figures: dict[str, dict] = {}
    rows: list[dict] = []

    def figure(key, label, value, *, faiss=None, ratio=None, target=None, met=None, conditions="",
               **extra):
        figures[key] = {"label": label, "value": value, "faiss": faiss, "ratio": ratio, "target": target,
                        "met": met, "conditions": conditions, **extra}
        rows.append(figures[key])
        parts = [f"{label}: {value}"]
        if faiss is not None:
            parts.append(f"FAISS {faiss}")
        if ratio is not None:
            parts.append(f"ratio {ratio}")
        if target is not None:
            parts.append(f"target {target} -> {'met' if met else 'MISSED'}")
        say("  " + "; ".join(parts) + (f"   [{conditions}]" if conditions else ""))

    # -- 1. build from the .npy, in a subprocess ---------------------------------------------------
    say("## build (CLI subprocess)")
    if args.cold:
        metrics.evict_page_cache(npy)
    npy_state = metrics.cache_state(npy)
    base = run_measured("import vecstore, vecstore.cli", [], metrics)
    build = run_measured(CLI, ["build", npy, store_path, "--metric", metric, "--force", "--quiet"], metrics)
    m = re.search(r"in ([0-9.]+) s", build["output"])
    reported = float(m[1]) if m else None
    cond = f"{workload}; input {npy_state}; threads={threads}"
    figure("build_time", "build time `vecstore build X.npy S.vs`",
           f"{reported:.2f} s (CLI's own timer), {build['wall_s']:.2f} s wall incl. interpreter start",
           conditions=cond, seconds=reported, wall_seconds=build["wall_s"])
    peak_beyond = build["VmHWM"] - base["VmHWM"]
    figure("build_peak_rss", "build peak RSS (VmHWM)",
           f"{MiB(build['VmHWM']):.0f} MiB ({MiB(peak_beyond):+.0f} MiB beyond an import-only process of "
           f"{MiB(base['VmHWM']):.0f} MiB); sampled peak RssAnon {MiB(build['sampled_peak']['RssAnon']):.0f} MiB, "
           f"RssFile {MiB(build['sampled_peak']['RssFile']):.0f} MiB; input is {MiB(os.path.getsize(npy)):.0f} MiB",
           conditions=cond, vm_hwm=build["VmHWM"], import_only_vm_hwm=base["VmHWM"],
           sampled_peak=build["sampled_peak"], input_bytes=os.path.getsize(npy))
    size = os.path.getsize(store_path)
    figure("file_size", "file size", f"{size:,} bytes ({MiB(size):.1f} MiB; "
           f"{size / (ds.nb * ds.d * 4):.4f}x the float32 vectors)", conditions=workload, bytes=size)

    # -- 2. open + one query in a fresh process ----------------------------------------------------
    say("## open + one query (fresh subprocess)")
    if args.cold:
        metrics.evict_page_cache(store_path)
    store_state = metrics.cache_state(store_path)
    probe = json.loads(run_measured(PROBE, [store_path, query_file, str(args.k)], metrics)["output"].strip().splitlines()[-1])
    d_open = metrics.memory_delta(probe["imports"], probe["opened"])
    d_query = metrics.memory_delta(probe["imports"], probe["first_query"])
    d_second = metrics.memory_delta(probe["imports"], probe["second_query"])
    cond = f"{workload}; store {store_state}; threads={threads}; k={args.k}; batch=1"
    figure("open_rss", "RSS added by vecstore.open()",
           f"RssAnon {MiB(d_open['RssAnon']):+.1f} MiB, RssFile {MiB(d_open['RssFile']):+.1f} MiB "
           f"(open took {probe['open_s'] * 1e3:.1f} ms)", conditions=cond, delta=d_open)
    anon = MiB(d_query["RssAnon"])
    figure("open_query_rss", "RSS added by open + first query",
           f"RssAnon {anon:+.1f} MiB, RssFile {MiB(d_query['RssFile']):+.1f} MiB (of which the store's mapped "
           f"pages {MiB(probe['store_mapping_rss']):.1f} MiB, shared and reclaimable; the rest library pages); after a 2nd query RssAnon {MiB(d_second['RssAnon']):+.1f} MiB; first query "
           f"{probe['first_query_s'] * 1e3:.0f} ms (loads cached kernels), second {probe['second_query_s'] * 1e3:.0f} ms",
           target=f"RssAnon < {TARGETS['open_query_rss_mb']:.0f} MB",
           met=d_query["RssAnon"] < TARGETS["open_query_rss_mb"] * 1e6, conditions=cond, delta=d_query,
           delta_second=d_second, probe=probe)

    # -- 3. throughput and latency against FAISS, same process --------------------------------------
    say("## search speed: vecstore exact vs FAISS IndexFlatIP (same process, alternating)")
    store = vecstore.open(store_path)
    raw = store.tier().codes
    index, info = faiss_twins.build_twin("float32", raw, metric=metric)
    xq_f = faiss_twins.normalize_rows(xq) if metric == "cosine" else np.ascontiguousarray(xq)
    k = args.k
    batch = metrics.time_repeated_interleaved(
        {"vecstore": lambda: store.search(xq, k), "faiss": lambda: index.search(xq_f, k)},
        repeats=args.repeats, warmup=1)
    state = metrics.cache_state(store_path)
    cond = f"{workload}; threads={threads}; batch={nq} queries; k={k}; {args.repeats} runs after 1 warm-up, median; store {state}"
    qv, qf = nq / batch["vecstore"].median, nq / batch["faiss"].median
    figure("batch_qps", f"batch throughput ({nq} queries a call)", f"{qv:,.0f} queries/s",
           faiss=f"{qf:,.0f} queries/s", ratio=f"{qv / qf:.2f}x", target=f">= {TARGETS['batch_ratio']}x",
           met=qv / qf >= TARGETS["batch_ratio"], conditions=cond, vecstore_qps=qv, faiss_qps=qf,
           ratio_value=qv / qf, timings={n: t.summary() for n, t in batch.items()})
    n_single = min(args.single, nq)
    items = [xq[i:i + 1] for i in range(n_single)]
    items_f = {id(a): b for a, b in zip(items, [xq_f[i:i + 1] for i in range(n_single)])}
    single = metrics.time_each_interleaved(
        {"vecstore": lambda q: store.search(q, k), "faiss": lambda q: index.search(items_f[id(q)], k)},
        items, warmup=5)
    sv, sf = single["vecstore"], single["faiss"]
    cond = f"{workload}; threads={threads}; batch=1; k={k}; {n_single} queries after 5 warm-up, alternating; store {state}"
    figure("single_latency", "single-query latency p50",
           f"{sv.p50 * 1e3:.2f} ms (p99 {sv.p99 * 1e3:.2f} ms)", faiss=f"{sf.p50 * 1e3:.2f} ms (p99 {sf.p99 * 1e3:.2f} ms)",
           ratio=f"{sv.p50 / sf.p50:.2f}x time", target=f"<= {TARGETS['single_ratio']}x",
           met=sv.p50 / sf.p50 <= TARGETS["single_ratio"], conditions=cond, ratio_value=sv.p50 / sf.p50,
           timings={"vecstore": sv.summary(), "faiss": sf.summary()})

    # agreement on the synthetic set: both exact, both against the float64 ground truth
    D_gt, I_gt = ds.get_groundtruth_with_scores(k)
    Dv, Iv = store.search(xq, k)
    Df, If = index.search(xq_f, k)
    rv = metrics.tie_report(Iv, I_gt, k, D=Dv, D_ref=D_gt, metric=metric)
    rf = metrics.tie_report(If, I_gt, k, D=Df, D_ref=D_gt, metric=metric)
    figure("synthetic_recall", f"recall@{k} of exact search vs float64 ground truth",
           f"{rv['recall_tie_tolerant']:.4f} tie-tolerant ({rv['recall']:.4f} strict)",
           faiss=f"{rf['recall_tie_tolerant']:.4f} ({rf['recall']:.4f} strict)",
           target=f"{TARGETS['recall']}", met=rv["recall_tie_tolerant"] >= TARGETS["recall"],
           conditions=f"{workload}; {nq} queries; tolerance 1e-5 on scores", vecstore=rv, faiss_report=rf)
    del index
    store.close()

    # -- 4. recall on the real 384-d set(s) against the shipped ground truth -----------------------
    if args.real != "none":
        say("## recall of exact search on the real WordNet / MiniLM set(s), shipped ground truth")
        files = [datasets.BUNDLED_SMALL] + ([datasets.DEFAULT_REAL] if args.real == "all" else [])
        for path in files:
            if not os.path.exists(path):
                say(f"  (skipped {path}: not present. {datasets.missing_real_data_message(path).splitlines()[0]})")
                continue
            real = datasets.AnnBenchmarksDataset(path)
            rpath = os.path.join(args.workdir, f"exact-{real.name}.vs")
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
            figure(f"real_recall_{real.name}", f"recall, {real.name}", text, target="1.0",
                   met=worst >= TARGETS["recall"],
                   conditions=f"{real.nb} x {real.d}, {real.nq} queries, metric {real.metric}, "
                              f"tolerance 1e-5 on cosine; threads={threads}", reports=reports)
            os.unlink(rpath)

    total = time.perf_counter() - t_start
    say()
    say(f"total time {total:.0f} s; load average now {os.getloadavg()[0]:.2f}")
    command = "python benchmarks/bench_exact.py " + " ".join(sys.argv[1:] if argv is None else argv)
    stem = os.path.join(args.out, f"exact-{ds.name}-{ds.nb}x{ds.d}")
    result = {"command": command.strip(), "machine": machine, "threads": threads, "dataset": ds.describe(),
              "batch_size": nq, "k": k, "targets": TARGETS, "figures": figures, "total_s": total,
              "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(stem + ".json", "w") as fh:
        json.dump(result, fh, indent=1, default=float)
    with open(stem + ".md", "w") as fh:
        fh.write(markdown(result, metrics))
    say(f"wrote {stem}.json and {stem}.md")


def markdown(result: dict, metrics) -> str:
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
