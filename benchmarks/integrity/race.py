"""Readers against cleanup: a store whose files are old, readers that open and search continuously in
other processes, one writer doing single-id deletes, small appends and compactions.

Before every write the writer sets the mtime of every file of the store back ``--age`` seconds: each
write then replaces files that look as if they had been live for that long (the situation the issue
describes: a store whose files are an hour old, one id deleted at a time).

Readers:
- ``per-query``: ``vecstore.open(path)`` + one search + ``ids`` for every query, then close;
- ``auto-reload``: one ``vecstore.open(path, auto_reload=True)``, then search + ``ids`` in a loop
  (reopened after an error).

Besides errors, each reader checks that what it sees is not older than what it was promised: the
writer deletes original ids in ascending order and, after each delete returns, publishes how many
it has deleted (``floor``); a reader reads ``floor`` before it opens/searches, so an answer or a live
id below ``floor`` is a stale view (a deleted document visible again), counted as ``stale``.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import time

import numpy as np

from . import common as C


def _read_floor(path: str) -> int:
    try:
        with open(path) as fh:
            return int(fh.read() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _write_floor(path: str, value: int) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        fh.write(str(value))
    os.replace(tmp, path)


def setup(path: str, n: int, seed: int) -> None:
    """Child entry: build the store (raw + pq4, one appended segment, one delete)."""
    import vecstore

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, C.DIM)).astype(np.float32)
    vecstore.build(path, x, metric="l2", overwrite=True, progress=False).close()
    vecstore.compress(path, C.TIER, calibrate=False, train_size=min(n, 5000), progress=False).close()
    with vecstore.open(path, mode="a") as store:
        store.add(rng.standard_normal((10, C.DIM)).astype(np.float32), progress=False)


def reader(path: str, mode: str, stop: str, floor_file: str, out: str, seed: int) -> None:
    """Child entry: open/search until ``stop`` exists; write counts to ``out``."""
    import vecstore

    q = np.random.default_rng(seed).standard_normal((4, C.DIM)).astype(np.float32)
    n_ok = stale = 0
    errors: collections.Counter = collections.Counter()
    examples: dict = {}
    store = None
    started = time.time()
    while not os.path.exists(stop):
        floor = _read_floor(floor_file)
        try:
            if mode == "per-query":
                with vecstore.open(path) as s:
                    ids_seen = np.asarray(s.search(q, 10).ids)
                    live = np.asarray(s.ids)
            else:
                if store is None:
                    store = vecstore.open(path, auto_reload=True)
                ids_seen = np.asarray(store.search(q, 10).ids)
                live = np.asarray(store.ids)
            n_ok += 1
            if ((live >= 0) & (live < floor)).any() or ((ids_seen >= 0) & (ids_seen < floor)).any():
                stale += 1
                key = "STALE: a deleted id (below the published floor) is live or returned"
                errors[key] += 1
                examples.setdefault(key, f"floor {floor}, min live id {int(live.min())}")
        except Exception as exc:  # noqa: BLE001
            key = f"{type(exc).__name__}: {C.normalise(str(exc))}"
            errors[key] += 1
            examples.setdefault(key, C.one_line(exc, 400))
            if store is not None:
                try:
                    store.close()
                except Exception:  # noqa: BLE001
                    pass
                store = None
    with open(out, "w") as fh:
        json.dump({"mode": mode, "ok": n_ok, "stale": stale, "errors": dict(errors), "examples": examples,
                   "seconds": time.time() - started}, fh)


def writer(path: str, ops: int, seconds: float, age: float, mix: str, floor_file: str, out: str,
           seed: int) -> None:
    """Child entry: single-id deletes (ascending ids), small appends, compactions."""
    import vecstore

    kinds, weights = zip(*[(k, float(w)) for k, w in (p.split(":") for p in mix.split(","))])
    p = np.asarray(weights) / sum(weights)
    rng = np.random.default_rng(seed)
    done: collections.Counter = collections.Counter()
    errors: collections.Counter = collections.Counter()
    next_delete, started, i = 0, time.time(), 0
    directory = os.path.dirname(path)
    while (ops and i < ops) or (not ops and time.time() - started < seconds):
        i += 1
        C.age_tree(directory, age)
        kind = kinds[rng.choice(len(kinds), p=p)]
        try:
            with vecstore.open(path, mode="a") as store:
                if kind == "delete":
                    store.delete([next_delete])
                    next_delete += 1
                    _write_floor(floor_file, next_delete)
                elif kind == "append":
                    store.add(rng.standard_normal((int(rng.integers(1, 4)), C.DIM)).astype(np.float32),
                              progress=False)
                else:
                    store.compact(progress=False)
            done[kind] += 1
        except Exception as exc:  # noqa: BLE001
            errors[f"{kind}: {C.one_line(exc)}"] += 1
    with open(out, "w") as fh:
        json.dump({"ops": dict(done), "errors": dict(errors), "seconds": time.time() - started}, fh)


def _entry(func: str, *args) -> subprocess.Popen:
    code = f"from benchmarks.integrity.race import {func}; {func}(*{list(args)!r})"
    return subprocess.Popen([C.PY, "-c", code], env=C.ENV, cwd=C.ROOT)


def run(args) -> dict:
    work = os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    store_dir = os.path.join(work, "store")
    os.makedirs(store_dir)
    path = os.path.join(store_dir, "s.vs")
    stop, floor_file = os.path.join(work, "STOP"), os.path.join(work, "floor")
    r = C.run([C.PY, "-c", f"from benchmarks.integrity.race import setup; setup({path!r}, {args.n}, {args.seed})"],
              timeout=600, cwd=C.ROOT)
    if r.returncode:
        raise SystemExit(r.stderr)
    C.age_tree(store_dir, args.age)
    print(f"cleanup-race: {args.n} x {C.DIM} store (raw + {C.TIER}), files aged {args.age:.0f} s before each "
          f"write; writer mix {args.mix}, {'%d ops' % args.ops if args.ops else '%.0f s' % args.seconds}; "
          f"readers per-query open and auto_reload", flush=True)
    outs = {m: os.path.join(work, f"reader-{m}.json") for m in ("per-query", "auto-reload")}
    readers = [_entry("reader", path, m, stop, floor_file, outs[m], args.seed + j) for j, m in enumerate(outs)]
    time.sleep(2.0)  # readers warm up (imports, kernels)
    wout = os.path.join(work, "writer.json")
    load_before = os.getloadavg()
    w = _entry("writer", path, args.ops, args.seconds, args.age, args.mix, floor_file, wout, args.seed)
    w.wait()
    open(stop, "w").close()
    for p in readers:
        p.wait(timeout=120)
    with open(wout) as fh:
        wres = json.load(fh)
    rres = {}
    for m, o in outs.items():
        with open(o) as fh:
            rres[m] = json.load(fh)
    rows = []
    for m, res in rres.items():
        n_err = sum(res["errors"].values())
        rows.append([m, res["ok"] + n_err - res["stale"], res["ok"], n_err - res["stale"], res["stale"]])
    err_rows = [[m, k, v, rres[m]["examples"].get(k, "")[:240]] for m in rres for k, v in
                sorted(rres[m]["errors"].items(), key=lambda x: -x[1])]
    wops = ", ".join(f"{v} {k}s" for k, v in sorted(wres["ops"].items()))
    md = (f"## cleanup-race\n\n`python benchmarks/bench_integrity.py cleanup-race"
          f"{' --ops %d' % args.ops if args.ops else ' --seconds %g' % args.seconds}`: a {args.n} x {C.DIM} l2 store "
          f"(raw + {C.TIER}, one appended segment); before every write all its files are set {args.age:.0f} s into "
          f"the past. Writer: {wops} in {wres['seconds']:.0f} s (writer errors: {sum(wres['errors'].values())}). "
          f"Two reader processes, one thread each; load average {load_before[0]:.1f} at the start.\n\n"
          + C.md_table(["reader", "attempts", "opens/searches ok", "errors", "stale views"], rows)
          + "\n\n" + (C.md_table(["reader", "error (normalised)", "count", "example"], err_rows) if err_rows
                      else "No reader errors.") + "\n")
    if wres["errors"]:
        md += "\n" + C.md_table(["writer error", "count"], list(wres["errors"].items())) + "\n"
    print(md)
    return {"data": {"writer": wres, "readers": rres, "args": {k: getattr(args, k) for k in
                                                                ("seconds", "ops", "n", "age", "mix", "seed")},
                     "machine": C.machine()}, "markdown": md}
