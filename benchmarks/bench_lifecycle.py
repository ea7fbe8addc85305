#!/usr/bin/env python
"""Store lifecycle: the figures of issue 9's closing note.

    python benchmarks/bench_lifecycle.py                         # 100,000 x 4096 (about 10 minutes)
    python benchmarks/bench_lifecycle.py --n 20000 --kills 4     # a quick check

On the seeded synthetic 4096-dim workload (``--data synthetic4096``, as bench_exact.py) with two
tiers, the raw float32 vectors and a coarse ``--codec`` tier (default pq128x4, calibrated, so the
default search is two-stage), it measures:

1. a full build of all n documents (``vecstore.build`` + ``vecstore.compress``), against appending
   the last 1,000 and then 10,000 of them to a store built from the others: time, ratio, bytes
   written, and whether the existing files were touched (they must not be);
2. recall@10 of the default search with appended documents as held-out queries, against documents
   of the main file (same queries-are-documents protocol, exact search as the truth);
3. a swap of a new model version under 4 reader threads paced to ``--qps`` single queries a second
   in total (each query on ``--kernel-threads`` numba threads), each reader on a store opened with
   ``auto_reload=True``: queries run, failed, mixing versions, latency percentiles, and when each
   reader moved over;
4. SIGKILLs during append (1,000 vectors) and delete (1,000 ids) of the big store, ``--kills`` each,
   in warm child processes: how many left the store as before, as after, or damaged (must be 0).

Results go to ``--out`` as lifecycle-<workload>-<n>.{json,md}; data and stores in ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

CHILD = r"""
import sys, time
import numpy as np
import vecstore
change, path, arg = sys.argv[1:4]
store = vecstore.open(path, mode="a")
print("ready", flush=True)
sys.stdin.readline()
start = time.perf_counter()
if change == "append":
    store.add(np.load(arg), progress=False)
else:
    store.delete(np.load(arg))
print(f"done {time.perf_counter() - start}", flush=True)
"""


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="synthetic4096", help="synthetic4096 | clustered4096 | an ann-benchmarks .hdf5")
    ap.add_argument("--n", type=int, default=100_000, help="documents in the full store (default: %(default)s)")
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--codec", default="pq128x4", help="the coarse tier (default: %(default)s)")
    ap.add_argument("--qps", type=float, default=1000.0, help="reader load during the swap, all threads together")
    ap.add_argument("--readers", type=int, default=4)
    ap.add_argument("--kernel-threads", type=int, default=1, help="numba threads of each reader's queries")
    ap.add_argument("--swap-seconds", type=float, default=12.0, help="how long the readers run around the swap")
    ap.add_argument("--kills", type=int, default=10, help="SIGKILLs per change (append, delete)")
    ap.add_argument("--recall-queries", type=int, default=500)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=os.path.join(HERE, "work"))
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    return ap.parse_args(argv)


def _files(directory: str) -> dict[str, tuple]:
    out = {}
    for root, _, names in os.walk(directory):
        for name in names:
            st = os.stat(os.path.join(root, name))
            out[os.path.relpath(os.path.join(root, name), directory)] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _written(before: dict, after: dict) -> tuple[int, list[str]]:
    """Bytes of files new or changed since ``before``, and the names of changed pre-existing files."""
    new = sum(after[n][1] for n in after if n not in before or after[n] != before[n])
    touched = [n for n in before if n in after and after[n] != before[n] and not n.endswith(".json")]
    return new, touched


def main(argv=None) -> None:
    args = parse_args(argv)
    from vecstore.bench import script

    script.pin_environment(args.threads)
    threads, log, ds = script.start(args)
    import vecstore
    from vecstore.bench import metrics
    from vecstore.store.quality import held_out_recall
    from vecstore.store.deploy import swap

    started = time.perf_counter()
    machine = metrics.machine()
    doc: dict = {"command": "python benchmarks/bench_lifecycle.py " + " ".join(sys.argv[1:] if argv is None else argv),
                 "machine": machine, "threads": threads, "workload": f"{ds.name} ({ds.nb} x {ds.d})",
                 "codec": args.codec, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    lines: list[str] = []

    def say(text: str = "") -> None:
        lines.append(text)
        log(text)

    base = np.load(ds.database_path(), mmap_mode="r")
    n, dim = base.shape
    metric = ds.metric
    work = os.path.join(args.workdir, "lifecycle")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    say(f"# Store lifecycle: {ds.name}, {n} x {dim}, metric {metric}, tiers raw + {args.codec}")
    say("")
    say(f"`{doc['command']}` ({doc['date']})")
    say("")
    say(f"Machine: {metrics.describe_machine(machine)}. Threads: {threads}.")

    # -- 1. full build vs appends ------------------------------------------------------------------
    full = os.path.join(work, "full.vs")
    t0 = time.perf_counter()
    vecstore.build(full, ds.database_path(), metric=metric, model="fc7-lift@1", progress=True).close()
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    vecstore.compress(full, args.codec, progress=True).close()
    t_compress = time.perf_counter() - t0
    full_bytes = os.path.getsize(full)
    full_s = t_build + t_compress
    say("")
    say("## Append against a full build")
    say("")
    say(f"Full build of {n} documents: build {t_build:.1f} s + compress {args.codec} {t_compress:.1f} s "
        f"(training, encoding, calibration) = {full_s:.1f} s, {full_bytes / 2**20:.0f} MiB written.")
    n_small, n_big = min(1000, n // 20), min(10_000, n // 5)
    n_main = n - n_small - n_big
    store_dir = os.path.join(work, "store")
    os.makedirs(store_dir)
    path = os.path.join(store_dir, "s.vs")
    vecstore.build(path, base[:n_main], metric=metric, model="fc7-lift@1", progress=True).close()
    with vecstore.open(full) as f:
        params = f.tier(args.codec).codec.params()
    vecstore.compress(path, args.codec, params=params, progress=True).close()  # the same parameters
    rows = []
    with vecstore.open(path, mode="a") as store:
        for label, lo, hi in (("1,000", n_main, n_main + n_small), ("10,000", n_main + n_small, n)):
            before = _files(store_dir)
            t0 = time.perf_counter()
            store.add(np.ascontiguousarray(base[lo:hi]), ids=np.arange(lo, hi), model="fc7-lift@1", progress=False)
            seconds = time.perf_counter() - t0
            written, touched = _written(before, _files(store_dir))
            rows.append({"vectors": hi - lo, "seconds": seconds, "ratio_to_full_build": seconds / full_s,
                         "bytes_written": written, "existing_files_changed": touched})
        say("")
        say("| appended | time | vs full build | bytes written | existing files changed |")
        say("|---|---|---|---|---|")
        for r in rows:
            say(f"| {r['vectors']:,} | {r['seconds']:.2f} s | {100 * r['ratio_to_full_build']:.2f}% | "
                f"{r['bytes_written'] / 2**20:.1f} MiB | {', '.join(r['existing_files_changed']) or 'none'} |")
        doc["full_build"] = {"build_s": t_build, "compress_s": t_compress, "seconds": full_s, "bytes": full_bytes}
        doc["appends"] = rows

        # -- 2. recall of appended documents vs the rest ---------------------------------------------
        rng = np.random.default_rng(args.seed)
        m = min(args.recall_queries, n_small + n_big, n_main)
        appended = np.sort(rng.choice(np.arange(n_main, n), m, replace=False))
        original = np.sort(rng.choice(np.arange(n_main), m, replace=False))
        plan = store.default_plan()
        r_new = float(held_out_recall(store, appended, 10).mean())
        r_old = float(held_out_recall(store, original, 10).mean())
        doc["recall"] = {"plan": plan, "queries": m, "appended": r_new, "main_file": r_old}
        say("")
        say(f"Recall@10 of the default search ({plan[0]} rescored from {plan[1]} x{plan[2]:g}) with {m} held-out "
            f"documents as queries: appended {r_new:.4f}, main file {r_old:.4f} (difference {r_new - r_old:+.4f}).")

    # -- 3. swap under readers ---------------------------------------------------------------------
    new = os.path.join(store_dir, "new.vs")
    say("")
    say("## Swap of a new model version under readers")
    say("")
    t0 = time.perf_counter()
    vecstore.build(new, ds.database_path(), metric=metric, ids=np.arange(n) + 10**7, model="fc7-lift@2",
                   progress=True).close()
    vecstore.compress(new, args.codec, params=params, progress=True).close()
    t_new = time.perf_counter() - t0
    queries = np.load(ds.queries_file) if hasattr(ds, "queries_file") else ds.get_queries()
    stats = {"queries": 0, "failed": 0, "mixed": 0, "latencies": [], "moved_at": []}
    lock = threading.Lock()
    stop = threading.Event()
    swap_done = threading.Event()
    swap_at = [0.0]
    period = args.readers / args.qps

    def reader(seed: int) -> None:
        import numba

        numba.set_num_threads(args.kernel_threads)  # per thread: 4 readers on 2 cores, no oversubscription
        store = vecstore.open(path, auto_reload=True)
        local_rng = np.random.default_rng(seed)
        next_time = time.perf_counter()
        moved = False
        while not stop.is_set():
            q = queries[local_rng.integers(queries.shape[0])]
            t = time.perf_counter()
            try:
                ids = store.search(q, 10).ids
                failed = False
            except Exception:  # every failure counts, whatever it is
                failed, ids = True, None
            dt = time.perf_counter() - t
            with lock:
                stats["queries"] += 1
                stats["failed"] += failed
                stats["latencies"].append(dt)
                if ids is not None:
                    new_ids = ids >= 10**7
                    stats["mixed"] += bool(new_ids.any() and not new_ids.all())
                    if new_ids.all() and not moved:
                        moved = True
                        stats["moved_at"].append(time.perf_counter() - swap_at[0] if swap_done.is_set() else -1)
            next_time += period
            pause = next_time - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        store.close()

    readers = [threading.Thread(target=reader, args=(i,)) for i in range(args.readers)]
    run_start = time.perf_counter()
    for t in readers:
        t.start()
    time.sleep(args.swap_seconds / 3)
    t0 = time.perf_counter()
    report = swap(new, path)
    swap_at[0] = time.perf_counter()
    swap_done.set()
    t_swap = swap_at[0] - t0
    time.sleep(args.swap_seconds * 2 / 3)
    stop.set()
    for t in readers:
        t.join()
    elapsed = time.perf_counter() - run_start
    lat = np.array(stats["latencies"]) * 1000
    doc["swap"] = {"new_store_build_s": t_new, "swap_s": t_swap, "check": report.get("check"),
                   "readers": args.readers, "target_qps": args.qps, "seconds": elapsed,
                   "queries": stats["queries"], "achieved_qps": stats["queries"] / elapsed,
                   "failed": stats["failed"], "mixed_versions": stats["mixed"],
                   "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                                  "max": float(lat.max())},
                   "readers_moved_after_s": stats["moved_at"]}
    s = doc["swap"]
    say(f"New version built beside the old in {t_new:.1f} s (same codec parameters). `swap` took {t_swap:.1f} s "
        f"(verify every checksum + recall self-check {report['check']['recall']:.3f} on "
        f"{report['check']['queries']} held-out documents, then one rename).")
    say("")
    say(f"Each reader: single queries, k = 10, default search, {args.kernel_threads} numba thread(s) per query; "
        "the swap's checks run meanwhile in the main thread.")
    say("")
    say("| readers | target QPS | achieved QPS | queries | failed | mixed versions | p50 ms | p99 ms | max ms | readers moved over after |")
    say("|---|---|---|---|---|---|---|---|---|---|")
    moved = ", ".join(f"{x * 1000:.0f} ms" for x in sorted(s["readers_moved_after_s"])) or "never"
    say(f"| {args.readers} | {args.qps:.0f} | {s['achieved_qps']:.0f} | {s['queries']:,} | {s['failed']} | "
        f"{s['mixed_versions']} | {s['latency_ms']['p50']:.2f} | {s['latency_ms']['p99']:.2f} | "
        f"{s['latency_ms']['max']:.1f} | {moved} |")

    # -- 4. SIGKILLs during append and delete of the big store ------------------------------------
    say("")
    say("## SIGKILL during append and delete")
    say("")
    kill_inputs = {"append": os.path.join(work, "append.npy"), "delete": os.path.join(work, "delete.npy")}
    np.save(kill_inputs["append"], np.ascontiguousarray(base[:1000]) * np.float32(0.5))
    np.save(kill_inputs["delete"], np.arange(10**7, 10**7 + 1000))
    probe = queries[:5]

    def answers(p):
        with vecstore.open(p) as st:
            return st.count, st.search(probe, 10).ids.tolist()

    def fresh_copy(dst):
        shutil.rmtree(dst, ignore_errors=True)
        os.makedirs(dst)
        os.link(path, os.path.join(dst, "s.vs"))  # the main file is never written: a link is a copy
        if os.path.isdir(path + ".segments"):
            shutil.copytree(path + ".segments", os.path.join(dst, "s.vs.segments"))
        return os.path.join(dst, "s.vs")

    def child(change, p):
        proc = subprocess.Popen([sys.executable, "-c", CHILD, change, p, kill_inputs[change]],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        proc.stdin.write("go\n")
        proc.stdin.flush()
        return proc

    before = answers(path)
    kills = {}
    for change in ("append", "delete"):
        p = fresh_copy(os.path.join(work, f"kill-{change}-full"))
        proc = child(change, p)
        duration = float(proc.stdout.readline().split()[1])
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()
        after = answers(p)
        outcome = {"kills": 0, "before": 0, "after": 0, "damaged": 0, "change_ms": duration * 1000}
        krng = np.random.default_rng(args.seed + len(change))
        for _ in range(args.kills):
            p = fresh_copy(os.path.join(work, f"kill-{change}"))
            proc = child(change, p)
            time.sleep(krng.uniform(0, 1.2 * duration))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()
            outcome["kills"] += 1
            try:
                state = answers(p)
                vecstore.verify(p)
                with vecstore.open(p, mode="a") as st:  # the next write succeeds
                    st.delete([int(st.ids[-1])])
                outcome["before" if state == before else "after" if state == after else "damaged"] += 1
            except Exception as exc:  # a store that fails to open or verify is damaged
                outcome["damaged"] += 1
                log(f"damaged after a kill: {exc!r}")
        kills[change] = outcome
    doc["kills"] = kills
    say("| change | takes | SIGKILLs | left as before | left as after | damaged |")
    say("|---|---|---|---|---|---|")
    for change, o in kills.items():
        what = "append 1,000 vectors" if change == "append" else "delete 1,000 ids"
        say(f"| {what} | {o['change_ms']:.0f} ms | {o['kills']} | {o['before']} | {o['after']} | {o['damaged']} |")
    doc["seconds"] = time.perf_counter() - started
    doc["load_average_end"] = os.getloadavg()
    say("")
    say(f"Whole run: {doc['seconds']:.0f} s; load average at the end {doc['load_average_end'][0]:.2f}.")
    shutil.rmtree(work, ignore_errors=True)
    stem = os.path.join(args.out, f"lifecycle-{ds.name}-n{n}")
    with open(stem + ".json", "w") as fh:
        json.dump(doc, fh, indent=1, default=float)
    with open(stem + ".md", "w") as fh:
        fh.write("\n".join(lines) + "\n")
    log(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
