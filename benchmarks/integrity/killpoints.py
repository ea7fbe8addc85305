"""Kill every writer at every file-system publication point, one point at a time.

A writer is a ``vecstore`` CLI command run in a child whose ``os.rename``, ``os.replace``, ``os.link``,
``os.unlink``, ``os.remove``, ``os.fsync`` and ``shutil.move`` are wrapped before vecstore is imported.
Calls made from vecstore's code (a frame under ``vecstore/`` on the stack) are counted; at the N-th the
child SIGKILLs itself *before* the call runs. A first run with N = 0 only lists the calls (and gives
the "new" reference); then N = 1 .. M. After each kill:

- the store must open, and answer exactly as the old version, the new one, or (for the writers that
  compact first: compress, add-encoder) the old one compacted;
- ``vecstore.verify`` must pass;
- swap: when CURRENT serves the new store, ``CURRENT.prev`` must exist and answer as the old one
  (docs/format.md "Swapping"; docs promise no rollback file for the other writers);
- the store's files are made old (mtime ``--age`` s back) before each run, so the writers' cleanup of
  files they replace (removed by age) is among the points;
- after the next write (an append of one vector), no temporary (``*.vecstore-tmp-*``) may be left.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np

from . import common as C

WRAPPED = [("os", "rename"), ("os", "replace"), ("os", "link"), ("os", "unlink"), ("os", "remove"),
           ("os", "fsync"), ("shutil", "move")]

BOOT = r"""
import json, os, shutil, signal, sys, traceback
N, LOG, PKG = int(sys.argv[1]), sys.argv[2], sys.argv[3]
count = [0]
def _describe(stack):
    mine = [f for f in stack if f.filename.startswith(PKG)]
    inner = stack[-1]
    where = " < ".join(f"{os.path.basename(f.filename)[:-3]}.{f.name}:{f.lineno}" for f in reversed(mine[-4:]))
    if not inner.filename.startswith(PKG):
        where = f"[{os.path.basename(inner.filename)}:{inner.name}] " + where
    return where
def _wrap(mod, modname, name):
    orig = getattr(mod, name)
    def wrapper(*args, **kwargs):
        stack = traceback.extract_stack()[:-1]
        if any(f.filename.startswith(PKG) for f in stack):
            count[0] += 1
            if N == 0 or count[0] == N:
                arg = " ".join(os.path.basename(str(a)) for a in args[:2] if not isinstance(a, int))
                with open(LOG, "a") as fh:
                    fh.write(json.dumps({"n": count[0], "call": f"{modname}.{name}", "args": arg,
                                         "stack": _describe(stack)}) + "\n")
            if count[0] == N:
                os.kill(os.getpid(), signal.SIGKILL)
        return orig(*args, **kwargs)
    setattr(mod, name, wrapper)
for modname, name in %r:
    _wrap(os if modname == "os" else shutil, modname, name)
sys.argv = ["vecstore", *sys.argv[4:]]
import runpy
runpy.run_module("vecstore", run_name="__main__", alter_sys=True)
""" % (WRAPPED,)


def prepare(template: str) -> None:
    """Child entry: the stores and inputs every writer needs."""
    import h5py

    import vecstore

    store = os.path.join(template, "store")
    os.makedirs(store, exist_ok=True)
    os.makedirs(os.path.join(template, "inputs"), exist_ok=True)
    q = C.make_store(os.path.join(store, "s.vs"), seed=0)
    C.make_store(os.path.join(store, "new.vs"), seed=1, appends=(20,), deletes=2)
    np.save(os.path.join(template, "queries.npy"), q)
    rng = np.random.default_rng(2)
    np.save(os.path.join(template, "inputs", "x_new.npy"), rng.standard_normal((300, C.DIM)).astype(np.float32))
    np.save(os.path.join(template, "inputs", "add.npy"), rng.standard_normal((30, C.DIM)).astype(np.float32))
    with h5py.File(os.path.join(template, "inputs", "enc.h5"), "w") as f:
        f["vocab"] = np.array([f"word{i}" for i in range(50)], dtype=h5py.string_dtype())
        f["embedding"] = rng.standard_normal((50, C.DIM)).astype(np.float32)
    # the state after one swap, for swap-back (a rollback: swap CURRENT.prev CURRENT)
    swapped = os.path.join(template, "swapped")
    shutil.copytree(store, swapped)
    r = C.cli("swap", os.path.join(swapped, "new.vs"), os.path.join(swapped, "s.vs"), "--min-recall", "0")
    assert r.returncode == 0, r.stderr
    # the old store compacted: the intermediate state of writers that compact before rewriting
    compacted = os.path.join(template, "compacted")
    shutil.copytree(store, compacted)
    vecstore.open(os.path.join(compacted, "s.vs"), mode="a").compact(progress=False)


def writers(template: str) -> dict:
    i = os.path.join(template, "inputs")
    return {
        "build-over": ("store", ["build", os.path.join(i, "x_new.npy"), "{S}", "--metric", "l2", "--force", "--quiet"]),
        "compress": ("store", ["compress", "{S}", "--codec", "int8", "--no-calibrate", "--quiet"]),
        "append": ("store", ["append", "{S}", os.path.join(i, "add.npy"), "--quiet"]),
        "delete": ("store", ["delete", "{S}", "--ids", "3,7,11"]),
        "compact": ("store", ["compact", "{S}", "--quiet"]),
        "swap": ("store", ["swap", "{D}/new.vs", "{S}", "--min-recall", "0"]),
        "swap-back": ("swapped", ["swap", "{S}.prev", "{S}", "--min-recall", "0"]),
        "add-encoder": ("store", ["add-encoder", "{S}", os.path.join(i, "enc.h5")]),
    }


def _answers(path: str, queries) -> dict | str:
    import vecstore
    try:
        with vecstore.open(path) as store:
            return json.loads(json.dumps(C.answers(store, queries)))
    except Exception as exc:  # noqa: BLE001
        return C.one_line(exc)


def _run_writer(work: str, src: str, argv: list[str], n: int, log: str, age: float, timeout: float = 300):
    if os.path.exists(work):
        shutil.rmtree(work)
    shutil.copytree(src, work)
    if age:  # old files: the writer's cleanup (collect_garbage) then removes what it replaces
        C.age_tree(work, age)
    s = os.path.join(work, "s.vs")
    argv = [a.replace("{S}", s).replace("{D}", work) for a in argv]
    if os.path.exists(log):
        os.unlink(log)
    pkg = os.path.join(C.ROOT, "vecstore") + os.sep
    t0 = time.time()
    r = C.run([C.PY, "-c", BOOT, str(n), log, pkg, *argv], timeout=timeout, cwd=work)
    points = []
    if os.path.exists(log):
        with open(log) as fh:
            points = [json.loads(line) for line in fh]
    return r, points, time.time() - t0


def run(args) -> dict:
    import vecstore

    work = os.path.abspath(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    template = os.path.join(work, "template")
    os.makedirs(template)
    r = C.run([C.PY, "-c", f"from benchmarks.integrity.killpoints import prepare; prepare({template!r})"],
              timeout=600, cwd=C.ROOT)
    if r.returncode:
        raise SystemExit(r.stderr)
    queries = np.load(os.path.join(template, "queries.npy"))
    ref_old = {"store": _answers(os.path.join(template, "store", "s.vs"), queries),
               "swapped": _answers(os.path.join(template, "swapped", "s.vs"), queries)}
    ref_compacted = _answers(os.path.join(template, "compacted", "s.vs"), queries)
    chosen = [w.strip() for w in args.writers.split(",") if w.strip()]
    table, summary, listing = [], [], {}
    started = time.time()
    one = np.random.default_rng(9).standard_normal((1, C.DIM)).astype(np.float32)
    for name in chosen:
        src_name, argv = writers(template)[name]
        src = os.path.join(template, src_name)
        runw = os.path.join(work, "run")
        log = os.path.join(work, "points.jsonl")
        r, points, secs = _run_writer(runw, src, argv, 0, log, args.age)
        if r.returncode != 0:
            summary.append([name, "writer failed", r.stderr.strip().splitlines()[-1:] , "", "", ""])
            continue
        ref_new = _answers(os.path.join(runw, "s.vs"), queries)
        old = ref_old[src_name]
        listing[name] = points
        m = len(points) if not args.max_points else min(len(points), args.max_points)
        print(f"kill-points: {name}: {len(points)} points ({secs:.1f} s a run)", flush=True)
        bad = 0
        for n in range(1, m + 1):
            r, pts, _ = _run_writer(runw, src, argv, n, log, args.age)
            point = pts[-1] if pts else {"call": "?", "stack": "?", "args": ""}
            s = os.path.join(runw, "s.vs")
            row = {"writer": name, "n": n, "call": point["call"], "args": point.get("args", ""),
                   "stack": point["stack"], "killed": r.returncode == -9}
            if r.returncode != -9:
                row["note"] = f"writer exited {r.returncode} before point {n}"
            got = _answers(s, queries)
            if isinstance(got, str):
                row["state"] = f"does not open: {got[:160]}"
            else:
                states = [lab for lab, ref in (("old", old), ("new", ref_new)) if got == ref]
                if not states and src_name == "store" and got == ref_compacted:
                    states = ["old compacted"]  # compress / add-encoder compact first, then rewrite
                row["state"] = "=".join(states) if states else "OTHER (neither old nor new)"
            try:
                vecstore.verify(s)
                row["verify"] = "ok"
            except Exception as exc:  # noqa: BLE001
                row["verify"] = C.one_line(exc, 160)
            if name.startswith("swap"):
                prev = s + ".prev"
                if "new" in row["state"].split("=") and "old" not in row["state"].split("="):
                    pa = _answers(prev, queries) if os.path.exists(prev) else "missing"
                    row["rollback"] = "ok" if pa == old else f"LOST ({'no CURRENT.prev' if pa == 'missing' else 'CURRENT.prev is not the old store'})"
                else:
                    row["rollback"] = "n/a (old served)"
                    src_new = os.path.join(runw, "new.vs") if name == "swap" else prev
                    if not os.path.exists(src_new):
                        row["rollback"] += "; NEW is gone"
            tmp_kill = C.temporaries(runw)
            row["tmp_after_kill"] = tmp_kill
            try:
                with vecstore.open(s, mode="a") as st:
                    st.add(one, progress=False)
                row["next_write"] = "ok"
            except Exception as exc:  # noqa: BLE001
                row["next_write"] = C.one_line(exc, 160)
            row["tmp_after_next_write"] = C.temporaries(runw)
            ok = (row["state"] in ("old", "new", "old compacted", "old=new")
                  and row["verify"] == "ok" and not row.get("rollback", "").startswith("LOST")
                  and not row["tmp_after_next_write"] and row["next_write"] == "ok")
            row["ok"] = ok
            bad += not ok
            table.append(row)
        summary.append([name, m, m - bad, bad, f"{secs:.1f}"])
    elapsed = time.time() - started

    def fmt_tmp(t):
        return ", ".join(f"{p.split('.vecstore-tmp-')[0]}… ({size // 1024} KiB)" for p, size in t) or "-"
    rows = [[w["writer"], w["n"], f"{w['call']}({w['args']})", w["stack"], w["state"], w["verify"],
             w.get("rollback", ""), fmt_tmp(w["tmp_after_kill"]), fmt_tmp(w["tmp_after_next_write"]),
             "ok" if w["ok"] else "**FAIL**"] for w in table]
    md = (f"## kill-points\n\n`python benchmarks/bench_integrity.py kill-points`: each writer (the `vecstore` "
          f"CLI in a child) SIGKILLed before its N-th call of {', '.join(f'{a}.{b}' for a, b in WRAPPED)} made "
          f"from vecstore's code, for every N; store: 300 + 2 x 40 appended vectors x {C.DIM} dims, raw + "
          f"{C.TIER}, 6 deleted ids, every file set {args.age:.0f} s into the past before the writer runs (so its "
          f"cleanup of replaced files runs too); next write = append of one vector. {elapsed:.0f} s in all.\n\n"
          + C.md_table(["writer", "kill points", "ok", "failed", "s a run"], summary) + "\n\n"
          + C.md_table(["writer", "N", "killed before", "stack (innermost first)", "store answers",
                        "verify", "rollback", "temporaries after kill", "after next write", "outcome"], rows) + "\n")
    print(md)
    return {"data": {"summary": summary, "points": table, "listing": listing, "elapsed_s": elapsed,
                     "machine": C.machine()}, "markdown": md}
