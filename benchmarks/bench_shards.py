#!/usr/bin/env python
"""Sharded collections on a Dask LocalCluster against one store of the same documents: issue 10's figures.

    python benchmarks/bench_shards.py                                   # 100,000 x 4096, 4 shards, 2 workers
    python benchmarks/bench_shards.py --n 20000 --nq 50 --single 10     # a quick check

On the seeded synthetic 4096-dim workload (``--data synthetic4096``: the fc7-like lift of the real
WordNet embeddings when ../shared/data/wordnet-minilm-384.hdf5 is present, else the clustered
generator) it measures, on this machine, with a LocalCluster of ``--workers`` worker processes
(one task thread each, ``threads / workers`` numba and BLAS threads each, so the cluster uses the
same cores as the single store):

1. build time: ``vecstore.build`` + ``vecstore.compress`` (one store, trained on ``--train-size``
   rows) against ``vecstore.shard_build(..., shards=4, client=...)`` (trained once on the same number
   of rows, 4 shards built as Dask tasks from the .npy), and the ratio;
2. search time for three plans (exact on raw; the coarse ``--codec`` tier alone; the coarse tier
   rescored from raw with ``--oversample`` per shard): a batch of ``--nq`` queries (median of
   ``--repeats`` after a warm-up) and single queries (p50 over ``--single``), for the single store,
   the sharded collection on the cluster, and the same shards searched from a thread pool in this
   process; the ratios to the single store; recall@k against the exact ground truth; whether the
   exact and coarse plans return the single store's ids;
3. the Dask round trip per batch: ``shards`` no-op tasks carrying the batch, submitted and gathered
   as a search does (for 1 query and for the batch), and the gap between the cluster's batch time
   and its compute (each shard's search timed alone in this process with the worker's thread count,
   summed per worker, the busiest worker counted);
4. bytes on disk per document, resident bytes per document of the coarse tier, each worker's RSS;
5. a projection, from the measured per-shard costs, of 100M documents on N machines.

Everything is printed with the machine, the load average (start and end) and every thread count,
and written to ``--out`` (default benchmarks/results/) as shards-<workload>-n<n>.{json,md}. Data and
stores live in ``--workdir`` (default benchmarks/work/); the stores are deleted at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import numba
import numpy as np

import vecstore
from vecstore.bench import datasets, metrics, script

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET_DOCS = 100_000_000
PROJECT_MACHINES = (1, 2, 4, 8, 16, 32, 64)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="synthetic4096")
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--nq", type=int, default=200, help="queries in a batch (default: %(default)s)")
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--codec", default="pq128x4", help="coarse tier (default: %(default)s)")
    ap.add_argument("--oversample", type=float, default=8.0, help="two-stage candidates per result, per shard")
    ap.add_argument("--train-size", type=int, default=10_000)
    ap.add_argument("--single", type=int, default=30, help="single queries timed (default: %(default)s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="threads in all (default: every usable cpu)")
    ap.add_argument("--project-cores", type=int, default=None,
                    help="cores per machine in the projection (default: this machine's)")
    ap.add_argument("--seed", type=int, default=0)
    script.add_output_options(ap, HERE)
    return ap.parse_args(argv)


def _noop(spec, xq):
    """A task as small as a shard search, minus the search: its argument is the query batch."""
    return xq.shape[0]


def main(argv=None) -> None:
    args = parse_args(argv)
    script.pin_environment(args.threads)
    t_start = time.perf_counter()
    load_start = list(os.getloadavg())
    threads, log, ds = script.start(args)
    run = prepare(args, ds, threads, log)
    log(f"machine: {metrics.describe_machine(run.machine)}; load {load_start}")
    single_build = build_single(run)
    cluster = measure_on_cluster(run)
    projection = project(run, cluster)
    write_results(run, single_build, cluster, projection, load_start=load_start,
                  command=script.command_line(__file__, argv), t_start=t_start)


@dataclass
class Run:
    """The settings, the workload (queries and exact ids), the thread split and the paths."""

    args: argparse.Namespace
    ds: datasets.Dataset
    threads: int
    log: Callable[[str], None]
    machine: dict
    xq: np.ndarray                  # (nq, d) float32
    I_gt: np.ndarray                # (nq, k) exact ids
    per_worker: int                 # numba and BLAS threads of each worker
    work: str                       # the stores, deleted at the end
    single_path: str
    shard_dir: str

    @property
    def nq(self) -> int:
        return self.xq.shape[0]

    @property
    def train(self) -> int:
        return min(self.args.train_size, self.ds.nb)


def prepare(args, ds, threads: int, log) -> Run:
    machine = metrics.machine()
    xq = np.ascontiguousarray(ds.get_queries()[:args.nq], dtype=np.float32)
    _, I_gt = ds.get_groundtruth_with_scores(args.k)
    work = os.path.join(args.workdir, f"shards-{ds.name}-n{ds.nb}")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    return Run(args, ds, threads, log, machine, xq, I_gt[:xq.shape[0]], max(1, threads // args.workers), work,
               os.path.join(work, "single.vs"), os.path.join(work, "shards"))


def build_single(run: Run) -> dict:
    """1a. One store: build + compress, in this process with every thread."""
    args = run.args
    t0 = time.perf_counter()
    vecstore.build(run.single_path, run.ds.database_path(), metric=run.ds.metric, progress=False).close()
    t1 = time.perf_counter()
    vecstore.compress(run.single_path, args.codec, train_size=run.train, seed=args.seed, calibrate=False,
                      progress=False).close()
    t2 = time.perf_counter()
    run.log(f"single store: build {t1 - t0:.1f} s, compress {args.codec} {t2 - t1:.1f} s")
    return {"build_s": t1 - t0, "compress_s": t2 - t1, "total_s": t2 - t0}


@dataclass
class ClusterFigures:
    """What was measured while the LocalCluster ran."""

    cluster_start_s: float
    worker_threads: dict            # numba threads and thread env seen on each worker
    sharded_build_s: float
    plans: dict[str, dict]          # label -> search options
    rows: list[dict]                # per plan: each system's batch, single-query and recall figures
    noop: dict                      # the round trip's Timing, for 1 query and for the batch
    compute: dict[str, dict]        # per plan: each shard's search alone, the busiest worker
    sizes: dict


def measure_on_cluster(run: Run) -> ClusterFigures:
    """Start a LocalCluster of --workers processes (one task thread, per_worker numba/BLAS threads
    each), measure everything that needs it, and close it."""
    from distributed import Client, LocalCluster

    env = {v: str(run.per_worker) for v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                             "MKL_NUM_THREADS")}
    t0 = time.perf_counter()
    cluster = LocalCluster(n_workers=run.args.workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           env=env)
    client = Client(cluster, set_as_default=False)
    cluster_start_s = time.perf_counter() - t0
    worker_threads = client.run(lambda: {"numba": __import__("numba").get_num_threads(),
                                         "env": {v: os.environ.get(v) for v in env}})
    try:
        return measure_with(run, client, cluster_start_s, worker_threads)
    finally:
        client.close()
        cluster.close()


def measure_with(run: Run, client, cluster_start_s: float, worker_threads: dict) -> ClusterFigures:
    """1b-4 on a running cluster: shard build, search, round trip, per-shard compute, bytes."""
    from vecstore.shards import open_sharded, shard_build
    from vecstore.shards.manifest import shard_specs

    args = run.args
    t0 = time.perf_counter()
    manifest = shard_build(run.ds.database_path(), run.shard_dir, shards=args.shards, codecs=[args.codec],
                           metric=run.ds.metric, train_size=run.train, seed=args.seed, calibrate=False,
                           client=client, progress=False)
    sharded_build_s = time.perf_counter() - t0
    run.log(f"{args.shards} shards on {args.workers} workers: {sharded_build_s:.1f} s")
    single = vecstore.open(run.single_path, resident=[args.codec])
    on_cluster = open_sharded(manifest.path, client=client, resident=[args.codec])
    local = open_sharded(manifest.path, resident=[args.codec], threads=run.threads)
    plans = {"exact (raw)": {"tier": "raw"}, f"coarse ({args.codec})": {"tier": args.codec},
             f"two-stage ({args.codec} + raw x{args.oversample:g})":
                 {"tier": args.codec, "rescore": "raw", "oversample": args.oversample}}
    systems = {"single store": single, "shards on Dask": on_cluster, "shards, thread pool": local}
    rows = [search_plan(run, label, plan, systems) for label, plan in plans.items()]
    specs = shard_specs(manifest)
    placement = dict(on_cluster._backend.placement)
    noop = time_round_trip(run, client, specs, placement)
    compute = time_shard_compute(run, specs, placement, plans, rows)
    sizes = measure_sizes(run, client, manifest, single)
    single.close()
    on_cluster.close()
    local.close()
    return ClusterFigures(cluster_start_s=cluster_start_s, worker_threads=worker_threads,
                          sharded_build_s=sharded_build_s, plans=plans, rows=rows, noop=noop, compute=compute,
                          sizes=sizes)


def search_plan(run: Run, label: str, plan: dict, systems: dict) -> dict:
    """2. One plan on every system, alternating: batch, single queries, recall, agreement with the
    single store."""
    xq, k, nq = run.xq, run.args.k, run.nq
    batch = metrics.time_repeated_interleaved(
        {name: (lambda s=s: s.search(xq, k, **plan)) for name, s in systems.items()},
        repeats=run.args.repeats, warmup=1)
    singles = metrics.time_each_interleaved(
        {name: (lambda q, s=s: s.search(q, k, **plan)) for name, s in systems.items()},
        [xq[i:i + 1] for i in range(min(run.args.single, nq))], warmup=3)
    results = {name: s.search(xq, k, **plan) for name, s in systems.items()}
    ref = results["single store"]
    row = {"plan": label, "options": plan, "systems": {}}
    for name in systems:
        r = results[name]
        row["systems"][name] = {
            "batch_s": batch[name].median, "batch_runs_s": batch[name].seconds, "qps": nq / batch[name].median,
            "p50_ms": singles[name].p50 * 1e3, "p99_ms": singles[name].p99 * 1e3,
            "recall_at_k": metrics.recall_at_k(r.ids, run.I_gt, k),
            "same_ids_as_single": float(np.mean(r.ids == ref.ids)),
            "max_score_diff": float(np.max(np.abs(r.distances - ref.distances))),
        }
    for name in ("shards on Dask", "shards, thread pool"):
        s, one = row["systems"][name], row["systems"]["single store"]
        s["batch_ratio"] = s["batch_s"] / one["batch_s"]
        s["p50_ratio"] = s["p50_ms"] / one["p50_ms"]
    run.log(f"{label}: " + "; ".join(f"{name} batch {v['batch_s'] * 1e3:.1f} ms p50 {v['p50_ms']:.2f} ms "
                                     f"recall {v['recall_at_k']:.3f}" for name, v in row["systems"].items()))
    return row


def time_round_trip(run: Run, client, specs, placement: dict) -> dict:
    """3a. The Dask round trip: one no-op task per shard carrying the batch, submitted to the shard's
    worker and gathered, for 1 query and for the batch."""
    xq, repeats = run.xq, run.args.repeats

    def round_trip(batch):
        futures = [client.submit(_noop, spec, batch, workers=[placement[i]], allow_other_workers=True, pure=False)
                   for i, spec in enumerate(specs)]
        client.gather(futures)

    return {"1 query": metrics.time_repeated(lambda: round_trip(xq[:1]), repeats=max(5, repeats), warmup=2),
            f"{run.nq} queries": metrics.time_repeated(lambda: round_trip(xq), repeats=max(5, repeats), warmup=2)}


def time_shard_compute(run: Run, specs, placement: dict, plans: dict, rows: list[dict]) -> dict:
    """3b. Each shard's compute alone, in this process, with a worker's thread count; the busiest
    worker's sum, and the gap to the cluster's time (Dask's overhead)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(min(run.per_worker, previous))
    compute = {}
    try:
        for label, plan in plans.items():
            per_shard_batch, per_shard_single = time_each_shard(run, specs, plan)
            busiest_batch = max(sum(per_shard_batch[i] for i in placement if placement[i] == w)
                                for w in set(placement.values()))
            busiest_single = max(sum(per_shard_single[i] for i in placement if placement[i] == w)
                                 for w in set(placement.values()))
            dask_row = next(r for r in rows if r["plan"] == label)["systems"]["shards on Dask"]
            compute[label] = {
                "per_shard_batch_s": per_shard_batch, "per_shard_single_s": per_shard_single,
                "busiest_worker_batch_s": busiest_batch, "busiest_worker_single_s": busiest_single,
                "dask_overhead_batch_s": dask_row["batch_s"] - busiest_batch,
                "dask_overhead_single_s": dask_row["p50_ms"] / 1e3 - busiest_single,
            }
    finally:
        numba.set_num_threads(previous)
    return compute


def time_each_shard(run: Run, specs, plan: dict) -> tuple[list[float], list[float]]:
    """Each shard's batch time (median) and single-query p50, opened alone in this process."""
    xq, k = run.xq, run.args.k
    per_shard_batch, per_shard_single = [], []
    for spec in specs:
        with vecstore.open(spec.path, resident=[run.args.codec]) as shard:
            per_shard_batch.append(metrics.time_repeated(lambda: shard.search(xq, k, **plan),
                                                         repeats=run.args.repeats, warmup=1).median)
            per_shard_single.append(metrics.time_each(
                lambda q: shard.search(q, k, **plan),
                [xq[i:i + 1] for i in range(min(run.args.single, run.nq))], warmup=3).p50)
    return per_shard_batch, per_shard_single


def measure_sizes(run: Run, client, manifest, single) -> dict:
    """4. Bytes on disk and resident per document, and each worker's memory after the runs."""
    shard_bytes = [os.path.getsize(manifest.shard_path(s)) for s in manifest.shards]
    return {"single_file_bytes": os.path.getsize(run.single_path), "shard_file_bytes": shard_bytes,
            "disk_bytes_per_doc": sum(shard_bytes) / run.ds.nb,
            "coarse_bytes_per_doc": single.tier(run.args.codec).bytes_per_vector,
            "coarse_param_bytes": single.tier(run.args.codec).param_bytes, "raw_bytes_per_doc": 4 * run.ds.d,
            "worker_memory": client.run(metrics.memory)}


def project(run: Run, c: ClusterFigures) -> list[dict]:
    """5. 100M documents on N machines, from the measured per-shard costs (see the report's caveats)."""
    cores = run.args.project_cores or run.machine["usable_cpus"]
    sizes, nq = c.sizes, run.nq
    overhead_1 = c.noop["1 query"].median
    shard_docs = run.ds.nb / run.args.shards
    projection = []
    for label in c.plans:
        per_doc_single = float(np.median(c.compute[label]["per_shard_single_s"])) / shard_docs / run.per_worker
        per_doc_batch = float(np.median(c.compute[label]["per_shard_batch_s"])) / shard_docs / run.per_worker
        for machines in PROJECT_MACHINES:
            docs = TARGET_DOCS / machines
            projection.append({
                "plan": label, "machines": machines, "cores_per_machine": cores, "docs_per_machine": docs,
                "disk_gib_per_machine": docs * sizes["disk_bytes_per_doc"] / 2**30,
                "resident_gib_per_machine": (docs * sizes["coarse_bytes_per_doc"] + sizes["coarse_param_bytes"]) / 2**30,
                "raw_page_cache_gib_per_machine": docs * sizes["raw_bytes_per_doc"] / 2**30,
                "single_query_ms": (per_doc_single * docs / cores + overhead_1) * 1e3,
                "batch_s": per_doc_batch * docs / cores + c.noop[f"{nq} queries"].median,
            })
    return projection


def write_results(run: Run, single_build: dict, c: ClusterFigures, projection: list[dict], *,
                  load_start: list[float], command: str, t_start: float) -> None:
    """Print the report and write shards-<workload>-n<n>.json and .md to --out; delete the stores."""
    args, ds = run.args, run.ds
    result = {
        "command": command,
        "machine": run.machine, "load_average_start": load_start, "load_average_end": list(os.getloadavg()),
        "threads": run.threads, "workers": args.workers,
        "threads_per_worker": {"dask": 1, "numba_blas": run.per_worker},
        "worker_threads_seen": c.worker_threads, "dataset": ds.describe(), "n": ds.nb, "dim": ds.d,
        "metric": ds.metric, "k": args.k, "batch_size": run.nq, "single_queries": min(args.single, run.nq),
        "shards": args.shards, "codec": args.codec, "train_size": run.train, "oversample": args.oversample,
        "build": {"single": single_build, "sharded_s": c.sharded_build_s,
                  "ratio": c.sharded_build_s / single_build["total_s"], "cluster_start_s": c.cluster_start_s},
        "search": c.rows, "round_trip": {name: t.as_dict() if hasattr(t, "as_dict") else t.seconds
                                         for name, t in c.noop.items()},
        "round_trip_median_s": {name: t.median for name, t in c.noop.items()}, "compute": c.compute,
        "sizes": c.sizes, "projection": projection, "total_s": time.perf_counter() - t_start,
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    report = markdown(result)
    print(report)
    stem = os.path.join(args.out, f"shards-{ds.name}-n{ds.nb}")
    script.write_results(stem, result, report)
    shutil.rmtree(run.work, ignore_errors=True)
    print(f"wrote {stem}.json and .md in {result['total_s']:.0f} s")


def markdown(r: dict) -> str:
    """The report: the conditions, then one section per phase."""
    lines = (_conditions(r) + _build_section(r) + _search_section(r) + _round_trip_section(r) + _bytes_section(r)
             + _projection_section(r))
    return "\n".join(lines) + "\n"


def _conditions(r: dict) -> list[str]:
    ds = r["dataset"]
    return [
        f"# Sharded search on Dask: {ds['name']}, {r['n']} x {r['dim']}, metric {r['metric']}", "",
        f"`{r['command']}` ({r['finished']}, {r['total_s']:.0f} s)", "",
        f"Machine: {metrics.describe_machine(r['machine'])}. Load average at start "
        f"{', '.join(f'{x:.2f}' for x in r['load_average_start'])}, at end "
        f"{', '.join(f'{x:.2f}' for x in r['load_average_end'])}.", "",
        f"Threads: single store and thread pool {r['threads']} (numba, BLAS). LocalCluster: {r['workers']} worker "
        f"processes x 1 task thread, {r['threads_per_worker']['numba_blas']} numba/BLAS thread(s) each (seen on the "
        f"workers: {sorted(set(v['numba'] for v in r['worker_threads_seen'].values()))}). {r['shards']} shards of "
        f"~{r['n'] // r['shards']:,} documents; coarse tier `{r['codec']}` trained on {r['train_size']:,} rows; "
        f"k = {r['k']}; batch = {r['batch_size']} queries (median of runs after a warm-up); single queries: p50 of "
        f"{r['single_queries']}; page cache warm; coarse tier resident in RAM, raw tier mapped.", ""]


def _build_section(r: dict) -> list[str]:
    b = r["build"]
    return [
        "## Build", "",
        "| system | time | ratio |", "|---|---|---|",
        f"| one store: `vecstore.build` + `compress {r['codec']}` | {b['single']['total_s']:.1f} s "
        f"({b['single']['build_s']:.1f} + {b['single']['compress_s']:.1f}) | 1.00x |",
        f"| {r['shards']} shards on the cluster: `shard_build(..., client=)` | {b['sharded_s']:.1f} s | {b['ratio']:.2f}x |",
        "", f"One store: built and encoded in this process with {r['threads']} threads. Shards: the codec trained "
        f"once in this process, then the shards built and encoded as tasks on the workers "
        f"({r['threads_per_worker']['numba_blas']} thread each). Starting the LocalCluster took "
        f"{b['cluster_start_s']:.1f} s more, not counted.", ""]


def _search_section(r: dict) -> list[str]:
    lines = ["## Search", "",
             "| plan | system | batch ms | batch ratio | QPS | p50 ms | p99 ms | p50 ratio | recall@k | ids = one store |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["search"]:
        for name, s in row["systems"].items():
            lines.append(f"| {row['plan']} | {name} | {s['batch_s'] * 1e3:.1f} | "
                         f"{s.get('batch_ratio', 1.0):.2f}x | {s['qps']:,.0f} | {s['p50_ms']:.2f} | {s['p99_ms']:.2f} | "
                         f"{s.get('p50_ratio', 1.0):.2f}x | {s['recall_at_k']:.4f} | {s['same_ids_as_single']:.4f} |")
    return lines + ["", "Ratios are the system's time over the single store's (below 1: faster). `ids = one store`: "
                    "share of result ids equal to the single store's, position by position.", ""]


def _round_trip_section(r: dict) -> list[str]:
    lines = ["## The Dask round trip per batch", "",
             f"No-op tasks, one per shard, carrying the batch, submitted to the shards' workers and gathered "
             f"(median): 1 query {r['round_trip_median_s']['1 query'] * 1e3:.2f} ms; {r['batch_size']} queries "
             f"{r['round_trip_median_s'][str(r['batch_size']) + ' queries'] * 1e3:.2f} ms.", "",
             "| plan | busiest worker's compute, batch | cluster batch | gap (overhead) | busiest worker's "
             "compute, 1 query | cluster p50 | gap (overhead) |", "|---|---|---|---|---|---|---|"]
    for row in r["search"]:
        c = r["compute"][row["plan"]]
        d = row["systems"]["shards on Dask"]
        lines.append(f"| {row['plan']} | {c['busiest_worker_batch_s'] * 1e3:.1f} ms | {d['batch_s'] * 1e3:.1f} ms | "
                     f"{c['dask_overhead_batch_s'] * 1e3:.1f} ms | {c['busiest_worker_single_s'] * 1e3:.2f} ms | "
                     f"{d['p50_ms']:.2f} ms | {c['dask_overhead_single_s'] * 1e3:.2f} ms |")
    return lines + ["", "Compute: each shard's search timed alone in this process with a worker's thread count, "
                    "summed over the shards of the busiest worker. The gap includes the round trip, the merge, "
                    "and the two workers competing for the 2 cores with each other and with this process.", ""]


def _bytes_section(r: dict) -> list[str]:
    s = r["sizes"]
    mem = "; ".join(f"{w.rsplit(':', 1)[-1]}: RssAnon {m.get('RssAnon', 0) / 2**20:.0f} MiB, RssFile "
                    f"{m.get('RssFile', 0) / 2**20:.0f} MiB" for w, m in s["worker_memory"].items())
    return ["## Bytes", "",
            f"- on disk: {s['disk_bytes_per_doc']:.0f} B/document over the shards "
            f"({sum(s['shard_file_bytes']) / 2**30:.2f} GiB), one store {s['single_file_bytes'] / 2**30:.2f} GiB",
            f"- resident coarse tier: {s['coarse_bytes_per_doc']} B/document + {s['coarse_param_bytes'] / 2**10:.0f} KiB "
            f"of parameters per shard; raw tier {s['raw_bytes_per_doc']} B/document, mapped (page cache)",
            f"- workers after the runs: {mem}", ""]


def _projection_section(r: dict) -> list[str]:
    lines = [f"## Projection: 100M documents on N machines of {r['projection'][0]['cores_per_machine']} cores", "",
             "From the per-shard costs above, assuming one shard per core, search time linear in the documents "
             "a core scans (true of the scans; the rescoring step is not, so the two-stage figures are an "
             "upper bound), the page cache holding what the plan reads, and the no-op round trip measured "
             "here as the cluster's overhead (a real network adds its latency).", "",
             "| plan | N | docs/machine | disk GiB/machine | resident GiB/machine | raw in page cache GiB/machine "
             "| single query ms | batch s |", "|---|---|---|---|---|---|---|---|"]
    for p in r["projection"]:
        lines.append(f"| {p['plan']} | {p['machines']} | {p['docs_per_machine'] / 1e6:.1f}M | "
                     f"{p['disk_gib_per_machine']:.0f} | {p['resident_gib_per_machine']:.1f} | "
                     f"{p['raw_page_cache_gib_per_machine']:.0f} | {p['single_query_ms']:.0f} | {p['batch_s']:.1f} |")
    return lines + ["", "Exact search reads the whole raw tier every query, so unless it fits in the page cache it "
                    "runs at disk speed; the coarse and two-stage plans need only the coarse tier in RAM and k x "
                    "oversample raw rows per shard and query (random reads when not cached)."]


if __name__ == "__main__":
    main()
