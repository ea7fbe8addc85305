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
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import vecstore  # noqa: E402
from vecstore.bench import datasets, metrics, script  # noqa: E402

NEW_IDS = 10**7          # the new model version's ids start here, so a reader can tell the versions apart

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
    script.add_output_options(ap, HERE)
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
    script.pin_environment(args.threads)
    threads, log, ds = script.start(args)
    started = time.perf_counter()
    machine = metrics.machine()
    doc: dict = {"command": script.command_line(__file__, argv),
                 "machine": machine, "threads": threads, "workload": f"{ds.name} ({ds.nb} x {ds.d})",
                 "codec": args.codec, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    lc = prepare(args, ds, log)
    say_header(lc, doc, machine, threads)
    full_s, full = measure_full_build(lc, doc)
    params = build_main_part(lc, full)
    with vecstore.open(lc.path, mode="a") as store:
        measure_appends(lc, doc, store, full_s)
        measure_recall(lc, doc, store)
    measure_swap(lc, doc, params)
    measure_kills(lc, doc)
    write_results(lc, doc, started)


@dataclass
class Lifecycle:
    """The run's settings, the database, the folders and stores it works in, and the report it writes."""

    args: argparse.Namespace
    ds: datasets.Dataset
    log: Callable[[str], None]
    base: np.ndarray                # (n, dim) the database, memory-mapped
    work: str                       # everything below is deleted at the end
    lines: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.base.shape[0]

    @property
    def n_small(self) -> int:       # the first append
        return min(1000, self.n // 20)

    @property
    def n_big(self) -> int:         # the second append
        return min(10_000, self.n // 5)

    @property
    def n_main(self) -> int:        # the documents the appended store starts with
        return self.n - self.n_small - self.n_big

    @property
    def store_dir(self) -> str:
        return os.path.join(self.work, "store")

    @property
    def path(self) -> str:          # the store that is appended to, swapped and killed
        return os.path.join(self.store_dir, "s.vs")

    @cached_property
    def queries(self) -> np.ndarray:
        ds = self.ds
        return np.load(ds.queries_file) if hasattr(ds, "queries_file") else ds.get_queries()

    def say(self, text: str = "") -> None:
        """A line of the Markdown report, logged as it is written."""
        self.lines.append(text)
        self.log(text)


def prepare(args, ds, log) -> Lifecycle:
    work = os.path.join(args.workdir, "lifecycle")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    return Lifecycle(args, ds, log, np.load(ds.database_path(), mmap_mode="r"), work)


def say_header(lc: Lifecycle, doc: dict, machine: dict, threads: int) -> None:
    say = lc.say
    say(f"# Store lifecycle: {lc.ds.name}, {lc.n} x {lc.base.shape[1]}, metric {lc.ds.metric}, tiers raw + {lc.args.codec}")
    say("")
    say(f"`{doc['command']}` ({doc['date']})")
    say("")
    say(f"Machine: {metrics.describe_machine(machine)}. Threads: {threads}.")


def measure_full_build(lc: Lifecycle, doc: dict) -> tuple[float, str]:
    """1a. All n documents built and compressed at once, what an append is compared with.

    Returns its seconds and its path."""
    say, codec = lc.say, lc.args.codec
    full = os.path.join(lc.work, "full.vs")
    t0 = time.perf_counter()
    vecstore.build(full, lc.ds.database_path(), metric=lc.ds.metric, model="fc7-lift@1", progress=True).close()
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    vecstore.compress(full, codec, progress=True).close()
    t_compress = time.perf_counter() - t0
    full_bytes = os.path.getsize(full)
    full_s = t_build + t_compress
    say("")
    say("## Append against a full build")
    say("")
    say(f"Full build of {lc.n} documents: build {t_build:.1f} s + compress {codec} {t_compress:.1f} s "
        f"(training, encoding, calibration) = {full_s:.1f} s, {full_bytes / 2**20:.0f} MiB written.")
    doc["full_build"] = {"build_s": t_build, "compress_s": t_compress, "seconds": full_s, "bytes": full_bytes}
    return full_s, full


def build_main_part(lc: Lifecycle, full: str) -> dict:
    """The store the appends go to: the first n_main documents, encoded with the full build's codec
    parameters; returns those, which the new version reuses too."""
    os.makedirs(lc.store_dir)
    vecstore.build(lc.path, lc.base[:lc.n_main], metric=lc.ds.metric, model="fc7-lift@1", progress=True).close()
    with vecstore.open(full) as f:
        params = f.tier(lc.args.codec).codec.params()
    vecstore.compress(lc.path, lc.args.codec, params=params, progress=True).close()  # the same parameters
    return params


def measure_appends(lc: Lifecycle, doc: dict, store, full_s: float) -> None:
    """1b. Append the next n_small, then the last n_big documents: time, bytes written, and whether
    any existing file changed."""
    n, n_main, n_small, say = lc.n, lc.n_main, lc.n_small, lc.say
    rows = []
    for lo, hi in ((n_main, n_main + n_small), (n_main + n_small, n)):
        before = _files(lc.store_dir)
        t0 = time.perf_counter()
        store.add(np.ascontiguousarray(lc.base[lo:hi]), ids=np.arange(lo, hi), model="fc7-lift@1", progress=False)
        seconds = time.perf_counter() - t0
        written, touched = _written(before, _files(lc.store_dir))
        rows.append({"vectors": hi - lo, "seconds": seconds, "ratio_to_full_build": seconds / full_s,
                     "bytes_written": written, "existing_files_changed": touched})
    say("")
    say("| appended | time | vs full build | bytes written | existing files changed |")
    say("|---|---|---|---|---|")
    for r in rows:
        say(f"| {r['vectors']:,} | {r['seconds']:.2f} s | {100 * r['ratio_to_full_build']:.2f}% | "
            f"{r['bytes_written'] / 2**20:.1f} MiB | {', '.join(r['existing_files_changed']) or 'none'} |")
    doc["appends"] = rows


def measure_recall(lc: Lifecycle, doc: dict, store) -> None:
    """2. Recall@10 of the default search with appended documents as queries, against main-file ones."""
    from vecstore.store.quality import held_out_recall

    rng = np.random.default_rng(lc.args.seed)
    m = min(lc.args.recall_queries, lc.n_small + lc.n_big, lc.n_main)
    appended = np.sort(rng.choice(np.arange(lc.n_main, lc.n), m, replace=False))
    original = np.sort(rng.choice(np.arange(lc.n_main), m, replace=False))
    plan = store.default_plan()
    r_new = float(held_out_recall(store, appended, 10).mean())
    r_old = float(held_out_recall(store, original, 10).mean())
    doc["recall"] = {"plan": plan, "queries": m, "appended": r_new, "main_file": r_old}
    lc.say("")
    lc.say(f"Recall@10 of the default search ({plan[0]} rescored from {plan[1]} x{plan[2]:g}) with {m} held-out "
           f"documents as queries: appended {r_new:.4f}, main file {r_old:.4f} (difference {r_new - r_old:+.4f}).")


def measure_swap(lc: Lifecycle, doc: dict, params: dict) -> None:
    """3. Build a new model version beside the store and swap it in under paced readers."""
    say, args = lc.say, lc.args
    new = os.path.join(lc.store_dir, "new.vs")
    say("")
    say("## Swap of a new model version under readers")
    say("")
    t0 = time.perf_counter()
    vecstore.build(new, lc.ds.database_path(), metric=lc.ds.metric, ids=np.arange(lc.n) + NEW_IDS,
                   model="fc7-lift@2", progress=True).close()
    vecstore.compress(new, args.codec, params=params, progress=True).close()
    t_new = time.perf_counter() - t0
    readers = Readers(lc.path, lc.queries, args)
    report, t_swap, elapsed = swap_under(readers, new, lc.path, args.swap_seconds)
    stats = readers.stats
    lat = np.array(stats["latencies"]) * 1000
    doc["swap"] = {"new_store_build_s": t_new, "swap_s": t_swap, "check": report.get("check"),
                   "readers": args.readers, "target_qps": args.qps, "seconds": elapsed,
                   "queries": stats["queries"], "achieved_qps": stats["queries"] / elapsed,
                   "failed": stats["failed"], "mixed_versions": stats["mixed"],
                   "latency_ms": {"p50": float(np.percentile(lat, 50)), "p99": float(np.percentile(lat, 99)),
                                  "max": float(lat.max())},
                   "readers_moved_after_s": stats["moved_at"]}
    say_swap(lc, doc["swap"], report)


class Readers:
    """``--readers`` threads, each with its own store opened with ``auto_reload=True``, together
    paced to ``--qps`` single queries a second; they count failed queries, queries whose results mix
    the two versions, and when each first saw only the new version."""

    def __init__(self, path: str, queries: np.ndarray, args) -> None:
        self.path, self.queries, self.args = path, queries, args
        self.stats = {"queries": 0, "failed": 0, "mixed": 0, "latencies": [], "moved_at": []}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.swap_done = threading.Event()
        self.swap_at = 0.0
        self.period = args.readers / args.qps

    def reader(self, seed: int) -> None:
        import numba

        numba.set_num_threads(self.args.kernel_threads)  # per thread: 4 readers on 2 cores, no oversubscription
        store = vecstore.open(self.path, auto_reload=True)
        local_rng = np.random.default_rng(seed)
        next_time = time.perf_counter()
        moved = False
        while not self.stop.is_set():
            q = self.queries[local_rng.integers(self.queries.shape[0])]
            t = time.perf_counter()
            try:
                ids = store.search(q, 10).ids
                failed = False
            except Exception:  # every failure counts, whatever it is
                failed, ids = True, None
            dt = time.perf_counter() - t
            with self.lock:
                moved = self._count(failed, dt, ids, moved)
            next_time += self.period
            pause = next_time - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        store.close()

    def _count(self, failed: bool, dt: float, ids, moved: bool) -> bool:
        """Add one query to the stats (under the lock); returns whether this reader has moved over."""
        stats = self.stats
        stats["queries"] += 1
        stats["failed"] += failed
        stats["latencies"].append(dt)
        if ids is not None:
            new_ids = ids >= NEW_IDS
            stats["mixed"] += bool(new_ids.any() and not new_ids.all())
            if new_ids.all() and not moved:
                moved = True
                stats["moved_at"].append(time.perf_counter() - self.swap_at if self.swap_done.is_set() else -1)
        return moved


def swap_under(readers: Readers, new: str, path: str, swap_seconds: float) -> tuple[dict, float, float]:
    """Start the readers, swap ``new`` in after a third of ``swap_seconds``, stop them at the end.

    Returns swap's report, the seconds it took, and the readers' run time."""
    from vecstore.store.deploy import swap

    threads = [threading.Thread(target=readers.reader, args=(i,)) for i in range(readers.args.readers)]
    run_start = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(swap_seconds / 3)
    t0 = time.perf_counter()
    report = swap(new, path)
    readers.swap_at = time.perf_counter()
    readers.swap_done.set()
    t_swap = readers.swap_at - t0
    time.sleep(swap_seconds * 2 / 3)
    readers.stop.set()
    for t in threads:
        t.join()
    return report, t_swap, time.perf_counter() - run_start


def say_swap(lc: Lifecycle, s: dict, report: dict) -> None:
    say, args = lc.say, lc.args
    say(f"New version built beside the old in {s['new_store_build_s']:.1f} s (same codec parameters). `swap` took {s['swap_s']:.1f} s "
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


def measure_kills(lc: Lifecycle, doc: dict) -> None:
    """4. SIGKILL children during append (1,000 vectors) and delete (1,000 ids) of the big store."""
    say = lc.say
    say("")
    say("## SIGKILL during append and delete")
    say("")
    kill_inputs = {"append": os.path.join(lc.work, "append.npy"), "delete": os.path.join(lc.work, "delete.npy")}
    np.save(kill_inputs["append"], np.ascontiguousarray(lc.base[:1000]) * np.float32(0.5))
    np.save(kill_inputs["delete"], np.arange(NEW_IDS, NEW_IDS + 1000))
    probe = lc.queries[:5]
    before = _answers(lc.path, probe)
    kills = {}
    for change in ("append", "delete"):
        kills[change] = kill_outcomes(lc, change, kill_inputs[change], probe, before)
    doc["kills"] = kills
    say("| change | takes | SIGKILLs | left as before | left as after | damaged |")
    say("|---|---|---|---|---|---|")
    for change, o in kills.items():
        what = "append 1,000 vectors" if change == "append" else "delete 1,000 ids"
        say(f"| {what} | {o['change_ms']:.0f} ms | {o['kills']} | {o['before']} | {o['after']} | {o['damaged']} |")


def kill_outcomes(lc: Lifecycle, change: str, arg: str, probe: np.ndarray, before) -> dict:
    """Run ``change`` once to the end (its duration and the state after), then ``--kills`` times killed
    at a random moment within 1.2x that duration; count the states the store was left in."""
    p = _fresh_copy(lc.path, os.path.join(lc.work, f"kill-{change}-full"))
    proc = _start_child(change, p, arg)
    duration = float(proc.stdout.readline().split()[1])
    _reap(proc)
    after = _answers(p, probe)
    outcome = {"kills": 0, "before": 0, "after": 0, "damaged": 0, "change_ms": duration * 1000}
    krng = np.random.default_rng(lc.args.seed + len(change))
    for _ in range(lc.args.kills):
        p = _fresh_copy(lc.path, os.path.join(lc.work, f"kill-{change}"))
        proc = _start_child(change, p, arg)
        time.sleep(krng.uniform(0, 1.2 * duration))
        proc.send_signal(signal.SIGKILL)
        _reap(proc)
        outcome["kills"] += 1
        try:
            state = _answers(p, probe)
            vecstore.verify(p)
            with vecstore.open(p, mode="a") as st:  # the next write succeeds
                st.delete([int(st.ids[-1])])
            outcome["before" if state == before else "after" if state == after else "damaged"] += 1
        except Exception as exc:  # a store that fails to open or verify is damaged
            outcome["damaged"] += 1
            lc.log(f"damaged after a kill: {exc!r}")
    return outcome


def _answers(path: str, probe: np.ndarray):
    """What a reader would see: the count and the ids of a few queries."""
    with vecstore.open(path) as st:
        return st.count, st.search(probe, 10).ids.tolist()


def _fresh_copy(path: str, dst: str) -> str:
    shutil.rmtree(dst, ignore_errors=True)
    os.makedirs(dst)
    os.link(path, os.path.join(dst, "s.vs"))  # the main file is never written: a link is a copy
    if os.path.isdir(path + ".segments"):
        shutil.copytree(path + ".segments", os.path.join(dst, "s.vs.segments"))
    return os.path.join(dst, "s.vs")


def _start_child(change: str, path: str, arg: str) -> subprocess.Popen:
    """A warm child (store open, imports done) that has just been told to start ``change``."""
    proc = subprocess.Popen([sys.executable, "-c", CHILD, change, path, arg],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return proc


def _reap(proc: subprocess.Popen) -> None:
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()


def write_results(lc: Lifecycle, doc: dict, started: float) -> None:
    """lifecycle-<workload>-n<n>.json and .md in --out; the work folder is removed."""
    doc["seconds"] = time.perf_counter() - started
    doc["load_average_end"] = os.getloadavg()
    lc.say("")
    lc.say(f"Whole run: {doc['seconds']:.0f} s; load average at the end {doc['load_average_end'][0]:.2f}.")
    shutil.rmtree(lc.work, ignore_errors=True)
    stem = os.path.join(lc.args.out, f"lifecycle-{lc.ds.name}-n{lc.n}")
    script.write_results(stem, doc, "\n".join(lc.lines) + "\n")
    lc.log(f"wrote {stem}.md and .json")


if __name__ == "__main__":
    main()
