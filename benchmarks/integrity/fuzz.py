"""Fuzz a store with segments and deletions: seeded mutations of the main file, the manifest, the
segment files and the deleted-id file; each mutated copy is opened, searched, read (keys, metadata)
and verified in a child process with a timeout, and classified.

Outcomes (the issue's target: ``silent`` = 0 and ``crash`` = 0):

refused    a VecstoreError when opening or reading (search, keys, metadata)
identical  the same count, ids, keys, metadata, tiers and top-k (ids and distances) as the original
flagged    answers differ, and ``vecstore.verify`` raises (or returns a mismatch)
silent     answers differ and ``verify`` passes
crash      anything else: another exception type, a signal, a timeout (hang), memory over the limit

Children are forked from a forkserver that has imported vecstore but run no kernel, so a probe costs
a fork plus loading cached kernels, and a crash in libhdf5 kills only that probe.
"""

from __future__ import annotations

import collections
import json
import multiprocessing as mp
import os
import queue
import shutil
import signal
import threading
import time
import traceback

import numpy as np

from . import common as C

TARGETS = ("main", "manifest", "seg0", "seg1", "deleted")
JSON_VALUES = ["None", "[]", "{}", "''", "0", "-1", "1", "1.5", "True", "'x'", "2**63", "2**64", "-2**63",
               "'a'*40", "[[[]]]", "{'a': 1}"]
ATTR_VARIANTS = {
    "store_id": ["hexflip", "random", "other_file", "int", "empty", "upper", "short"],
    "count": ["plus1", "minus1", "zero", "huge", "str"],
    "dim": ["plus1", "zero", "str"],
    "metric": ["other", "empty", "int"],
    "format_version": ["plus1", "zero", "str"],
    "format": ["other", "int"],
    "xxh3_64": ["zeros", "empty", "int"],
    "codec": ["empty_obj", "garbage"],
    "codec_string": ["other"],
}


# -- the template store -----------------------------------------------------------------------------


def prepare(template: str, seed: int) -> None:
    """Child-process entry: build the template store, its queries and the reference answers."""
    import vecstore

    os.makedirs(os.path.join(template, "store"), exist_ok=True)
    path = os.path.join(template, "store", "s.vs")
    queries = C.make_store(path, seed=seed)
    np.save(os.path.join(template, "queries.npy"), queries)
    with vecstore.open(path) as store:
        ref = C.answers(store, queries)
    vecstore.verify(path)
    with open(os.path.join(template, "reference.json"), "w") as fh:
        json.dump(ref, fh)


def _h5_inventory(path: str) -> dict:
    """Objects and attributes of one HDF5 file: what h5py-level mutations choose from."""
    import h5py

    objects, attrs = [], []
    with h5py.File(path, "r") as f:
        attrs += [("/", a) for a in f.attrs]
        def visit(name, obj):
            objects.append(name)
            attrs.extend((name, a) for a in obj.attrs)
        f.visititems(visit)
    return {"objects": sorted(objects), "attrs": sorted(attrs)}


def _json_paths(doc, prefix=()) -> list[tuple]:
    out = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.append(prefix + (k,))
            out += _json_paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.append(prefix + (i,))
            out += _json_paths(v, prefix + (i,))
    return out


def plan_mutations(template: str, count: int, seed: int) -> list[dict]:
    """``count`` mutation descriptions, each a function of (seed, index) only."""
    path = os.path.join(template, "store", "s.vs")
    files = C.store_files(path)
    inv = {"main": _h5_inventory(files["main"]), "seg0": _h5_inventory(files["segments"][0]),
           "seg1": _h5_inventory(files["segments"][1])}
    with open(files["manifest"], encoding="utf-8") as fh:
        paths = _json_paths(json.load(fh))
    kinds = [("bitflip", 14), ("bytes", 8), ("zero", 4), ("truncate", 6), ("extend", 3),
             ("h5_del", 8), ("h5_del_attr", 7), ("h5_set_attr", 12),
             ("json_del", 8), ("json_set", 14), ("json_deep", 2), ("json_segments", 4), ("json_text", 3),
             ("file_delete", 2), ("file_swap", 2), ("file_copy_over", 2), ("file_special", 2),
             ("manifest_rename", 1)]
    names, weights = zip(*kinds)
    weights = np.asarray(weights, float) / sum(weights)
    plans = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        kind = names[rng.choice(len(names), p=weights)]
        m = {"index": i, "kind": kind}
        if kind in ("bitflip", "bytes", "zero", "truncate", "extend"):
            m["target"] = str(rng.choice(TARGETS, p=[0.3, 0.15, 0.2, 0.2, 0.15]))
            m["head"] = bool(rng.random() < 0.5)        # within the first 4 KiB (HDF5 metadata)
            m["u"] = float(rng.random())
            m["bit"] = int(rng.integers(8))
            m["n"] = int(rng.integers(1, 17) if kind != "zero" else rng.integers(16, 513))
            m["vseed"] = int(rng.integers(1 << 31))
            if kind == "truncate" and rng.random() < 0.1:
                m["u"] = 0.0
        elif kind.startswith("h5_"):
            m["target"] = str(rng.choice(("main", "seg0", "seg1"), p=[0.5, 0.25, 0.25]))
            info = inv[m["target"]]
            if kind == "h5_del":
                m["obj"] = str(rng.choice(info["objects"]))
            else:
                pool = info["attrs"]
                if kind == "h5_set_attr":
                    pool = [a for a in pool if a[1] in ATTR_VARIANTS]
                    # the identity is the attribute the issue names: choose it a third of the time
                    if rng.random() < 0.33:
                        pool = [a for a in pool if a[1] == "store_id"]
                obj, attr = pool[int(rng.integers(len(pool)))]
                m["obj"], m["attr"] = obj, attr
                if kind == "h5_set_attr":
                    m["variant"] = str(rng.choice(ATTR_VARIANTS[attr]))
                    m["vseed"] = int(rng.integers(1 << 31))
        elif kind in ("json_del", "json_set"):
            m["target"] = "manifest"
            m["path"] = list(paths[int(rng.integers(len(paths)))])
            if kind == "json_set":
                m["value"] = str(rng.choice(JSON_VALUES))
        elif kind == "json_deep":
            m["target"] = "manifest"
            m["depth"] = int(rng.choice([100, 1000, 10_000, 100_000]))
            m["where"] = str(rng.choice(["root", "segments", "deleted", "extra"]))
        elif kind == "json_segments":
            m["target"] = "manifest"
            m["op"] = str(rng.choice(["reverse", "duplicate", "drop0", "drop1", "swap_counts", "empty",
                                      "swap_ids", "deleted_null", "deleted_count"]))
        elif kind == "json_text":
            m["target"] = "manifest"
            m["op"] = str(rng.choice(["bom", "trailing", "dup_key", "compact", "nan", "empty", "latin1"]))
        elif kind == "file_delete":
            m["target"] = str(rng.choice([*TARGETS, "sidecar"]))
        elif kind in ("file_swap", "file_copy_over"):
            a, b = rng.choice(TARGETS, size=2, replace=False)
            m["target"], m["other"] = str(a), str(b)
        elif kind == "file_special":
            m["target"] = str(rng.choice(TARGETS))
            m["special"] = str(rng.choice(["dir", "empty", "devnull", "selfloop", "dangling"]))
        elif kind == "manifest_rename":
            m["target"] = "manifest"
            m["to"] = str(rng.choice(["seg0", "random"]))
            m["vseed"] = int(rng.integers(1 << 31))
        plans.append(m)
    return plans


# -- applying one mutation (in the probe child) -----------------------------------------------------


def _resolve(path: str) -> dict:
    f = C.store_files(path)
    return {"main": f["main"], "manifest": f["manifest"], "seg0": f["segments"][0], "seg1": f["segments"][1],
            "deleted": f["deleted"], "sidecar": C.sidecar(path)}


def _set_json(doc, path, value, delete=False):
    node = doc
    for p in path[:-1]:
        node = node[p]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def apply_mutation(path: str, m: dict) -> str:
    """Mutate the store at ``path`` as ``m`` says; return a one-line description."""
    files = _resolve(path)
    target = files[m["target"]]
    kind = m["kind"]
    if kind in ("bitflip", "bytes", "zero", "truncate", "extend"):
        size = os.path.getsize(target)
        span = min(size, 4096) if m["head"] else size
        off = min(int(m["u"] * span), max(size - 1, 0))
        vrng = np.random.default_rng(m["vseed"])
        with open(target, "r+b") as fh:
            if kind == "bitflip":
                fh.seek(off)
                b = fh.read(1)
                fh.seek(off)
                fh.write(bytes([b[0] ^ (1 << m["bit"])]))
                return f"{m['target']}: flip bit {m['bit']} of byte {off}"
            if kind == "bytes":
                data = vrng.integers(0, 256, m["n"], dtype=np.uint8).tobytes()
                fh.seek(off)
                fh.write(data[:max(size - off, 0)])
                return f"{m['target']}: overwrite {min(m['n'], size - off)} bytes at {off}"
            if kind == "zero":
                n = min(m["n"], size - off)
                fh.seek(off)
                fh.write(b"\0" * n)
                return f"{m['target']}: zero {n} bytes at {off}"
            if kind == "truncate":
                new = int(m["u"] * size)
                fh.truncate(new)
                return f"{m['target']}: truncate {size} -> {new} bytes"
            fh.seek(0, 2)
            fh.write(vrng.integers(0, 256, m["n"] * 256, dtype=np.uint8).tobytes())
            return f"{m['target']}: append {m['n'] * 256} random bytes"
    if kind.startswith("h5_"):
        import h5py
        with h5py.File(target, "r+") as f:
            if kind == "h5_del":
                del f[m["obj"]]
                return f"{m['target']}: h5py del /{m['obj']}"
            obj = f[m["obj"]] if m["obj"] != "/" else f
            if kind == "h5_del_attr":
                del obj.attrs[m["attr"]]
                return f"{m['target']}: h5py del attr {m['attr']!r} of {m['obj']}"
            old = obj.attrs[m["attr"]]
            old = old.decode() if isinstance(old, bytes) else old
            v, vrng = m["variant"], np.random.default_rng(m["vseed"])
            if m["attr"] == "store_id":
                if v == "hexflip":
                    pos = int(vrng.integers(len(old)))
                    digit = "0123456789abcdef"[(int(old[pos], 16) ^ (1 << int(vrng.integers(4))))]
                    value = old[:pos] + digit + old[pos + 1:]
                elif v == "random":
                    value = "".join(vrng.choice(list("0123456789abcdef"), 32))
                elif v == "other_file":
                    other = files["seg1"] if m["target"] != "seg1" else files["main"]
                    with h5py.File(other, "r") as g:
                        value = g.attrs["store_id"]
                        value = value.decode() if isinstance(value, bytes) else str(value)
                else:
                    value = {"int": 5, "empty": "", "upper": str(old).upper(), "short": str(old)[:8]}[v]
            elif v in ("plus1", "minus1", "zero", "huge"):
                value = {"plus1": int(old) + 1, "minus1": int(old) - 1, "zero": 0, "huge": 1 << 62}[v]
            elif v == "str":
                value = str(old)
            elif v == "other":
                value = {"metric": "ip" if old != "ip" else "l2", "format": "vecstoreX",
                         "codec_string": "float16"}[m["attr"]]
            else:
                value = {"empty": "", "int": 7, "zeros": "0" * 16, "empty_obj": "{}", "garbage": "{[}"}[v]
            obj.attrs[m["attr"]] = value
            return f"{m['target']}: h5py set attr {m['attr']!r} of {m['obj']} = {value!r} ({v})"
    if kind in ("json_del", "json_set", "json_deep", "json_segments"):
        with open(target, encoding="utf-8") as fh:
            doc = json.load(fh)
        if kind == "json_del":
            _set_json(doc, m["path"], None, delete=True)
            what = f"remove {m['path']}"
        elif kind == "json_set":
            value = eval(m["value"])  # noqa: S307 (a fixed list of literals above)
            _set_json(doc, m["path"], value)
            what = f"set {m['path']} = {m['value']}"
        elif kind == "json_deep":
            nest = "<NEST>"
            if m["where"] == "root":
                text = _nested(m["depth"])
            else:
                doc[m["where"]] = nest
                text = json.dumps(doc).replace(json.dumps(nest), _nested(m["depth"]))
            with open(target, "w", encoding="utf-8") as fh:
                fh.write(text)
            return f"manifest: {m['where']} = list nested {m['depth']} deep"
        else:
            op, segs = m["op"], doc["segments"]
            if op == "reverse":
                segs.reverse()
            elif op == "duplicate":
                segs.append(dict(segs[0]))
            elif op in ("drop0", "drop1"):
                del segs[int(op[-1])]
            elif op == "swap_counts":
                segs[0]["count"], segs[1]["count"] = segs[1]["count"] + 1, segs[0]["count"]
            elif op == "empty":
                doc["segments"] = []
            elif op == "swap_ids":
                segs[0]["store_id"], segs[1]["store_id"] = segs[1]["store_id"], segs[0]["store_id"]
            elif op == "deleted_null":
                doc["deleted"] = None
            elif op == "deleted_count":
                doc["deleted"]["count"] -= 1
            what = f"segments op {op}"
        with open(target, "w", encoding="utf-8") as fh:
            json.dump(doc, fh, indent=1, sort_keys=True)
        return f"manifest: {what}"
    if kind == "json_text":
        with open(target, "rb") as fh:
            raw = fh.read()
        op = m["op"]
        new = {"bom": b"\xef\xbb\xbf" + raw, "trailing": raw + b"\n}garbage", "empty": b"",
               "dup_key": raw.replace(b'"base"', b'"base": "0000", "base"', 1),
               "compact": json.dumps(json.loads(raw), separators=(",", ":")).encode(),
               "nan": raw.replace(b'"generation": ', b'"generation": NaN, "x": ', 1),
               "latin1": raw.replace(b'"format"', b'"f\xe9rmat": 1, "format"', 1)}[op]
        with open(target, "wb") as fh:
            fh.write(new)
        return f"manifest: text {op}"
    if kind == "file_delete":
        if os.path.isdir(target):
            shutil.rmtree(target)
        else:
            os.unlink(target)
        return f"delete {m['target']}"
    if kind == "file_swap":
        other = files[m["other"]]
        tmp = target + ".swap"
        os.rename(target, tmp)
        os.rename(other, target)
        os.rename(tmp, other)
        return f"swap the contents of {m['target']} and {m['other']}"
    if kind == "file_copy_over":
        shutil.copyfile(files[m["other"]], target)
        return f"copy {m['other']} over {m['target']}"
    if kind == "file_special":
        os.unlink(target)
        sp = m["special"]
        if sp == "dir":
            os.mkdir(target)
        elif sp == "empty":
            open(target, "wb").close()
        elif sp == "devnull":
            os.symlink("/dev/null", target)
        elif sp == "selfloop":
            os.symlink(os.path.basename(target), target)
        else:
            os.symlink(target + ".missing", target)
        return f"{m['target']} replaced by {sp}"
    if kind == "manifest_rename":
        if m["to"] == "seg0":
            import h5py
            with h5py.File(files["seg0"], "r") as g:
                sid = g.attrs["store_id"]
                sid = sid.decode() if isinstance(sid, bytes) else str(sid)
        else:
            sid = "".join(np.random.default_rng(m["vseed"]).choice(list("0123456789abcdef"), 32))
        os.rename(target, os.path.join(os.path.dirname(target), f"manifest-{sid}.json"))
        return f"manifest renamed to the identity of {m['to']}"
    raise ValueError(kind)


# -- the probe (child) ------------------------------------------------------------------------------


def probe(path: str, queries: np.ndarray, reference: dict) -> dict:
    """Open, read everything the answers cover, verify; classify."""
    import vecstore

    stage = "open"
    try:
        store = vecstore.open(path)
        stage = "read"
        try:
            got = json.loads(json.dumps(C.answers(store, queries)))
        finally:
            store.close()
    except vecstore.VecstoreError as exc:
        return {"outcome": "refused", "stage": stage, "error": C.one_line(exc)}
    except BaseException as exc:  # noqa: BLE001
        return {"outcome": "crash", "stage": stage, "error": C.one_line(exc),
                "where": _where(exc)}
    stage = "verify"
    try:
        vecstore.verify(path)
        verified, verr = True, None
    except vecstore.VecstoreError as exc:
        verified, verr = False, C.one_line(exc)
    except BaseException as exc:  # noqa: BLE001
        return {"outcome": "crash", "stage": stage, "error": C.one_line(exc), "where": _where(exc)}
    diff = sorted(k for k in reference if got.get(k) != reference[k])
    if not diff:
        return {"outcome": "identical", "verify_flags": not verified, "error": verr}
    return {"outcome": "flagged" if not verified else "silent", "differs": diff, "error": verr,
            "count": got["count"], "ref_count": reference["count"]}


def _where(exc: BaseException) -> str:
    tb = traceback.extract_tb(exc.__traceback__)
    return " < ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(tb[-4:]))


def _child(m: dict, template: str, workdir: str, conn, mem_limit: int) -> None:
    import resource

    if mem_limit:
        resource.setrlimit(resource.RLIMIT_AS, (mem_limit, mem_limit))
    d = os.path.join(workdir, f"m{m['index']:05d}")
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(os.path.join(template, "store"), d, symlinks=True)
    path = os.path.join(d, "s.vs")
    queries = np.load(os.path.join(template, "queries.npy"))
    with open(os.path.join(template, "reference.json")) as fh:
        reference = json.load(fh)
    try:
        desc = apply_mutation(path, m)
    except Exception as exc:  # noqa: BLE001
        conn.send({"outcome": "not-applied", "error": C.one_line(exc)})
        return
    conn.send({"desc": desc})
    conn.send(probe(path, queries, reference))


# -- the runner ---------------------------------------------------------------------------------------


def run(args) -> dict:
    workdir = os.path.abspath(args.workdir)
    template = os.path.join(workdir, "template")
    probes = os.path.join(workdir, "probes")
    keep = os.path.join(workdir, "examples")
    for d in (template, probes, keep):
        shutil.rmtree(d, ignore_errors=True)
    os.makedirs(probes)
    os.makedirs(keep)
    started = time.time()
    r = C.run([C.PY, "-c", f"from benchmarks.integrity.fuzz import prepare; prepare({template!r}, {args.seed})"],
              timeout=600, cwd=C.ROOT)
    if r.returncode:
        raise SystemExit(f"building the template store failed:\n{r.stderr}")
    plans = plan_mutations(template, args.mutations, args.seed)
    print(f"fuzz: {len(plans)} mutations of a store of 300 + 2 x 40 appended vectors x {C.DIM} dims, "
          f"tier {C.TIER}, 6 deleted ids; {args.workers} workers, timeout {args.timeout} s a probe, "
          f"template {template}", flush=True)

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["vecstore", "h5py", "benchmarks.integrity.fuzz"])
    todo: queue.Queue = queue.Queue()
    for m in plans:
        todo.put(m)
    results: list[dict] = []
    lock = threading.Lock()
    kept = collections.Counter()

    def worker():
        while True:
            try:
                m = todo.get_nowait()
            except queue.Empty:
                return
            parent, child = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_child, args=(m, template, probes, child, args.mem_limit))
            t0 = time.time()
            proc.start()
            child.close()
            msgs, deadline = [], t0 + args.timeout
            while True:
                left = deadline - time.time()
                if left <= 0 or not parent.poll(min(left, 1.0)):
                    if left <= 0 or not proc.is_alive():
                        if parent.poll(0):
                            continue
                        break
                    continue
                try:
                    msgs.append(parent.recv())
                except EOFError:
                    break
                if "outcome" in msgs[-1]:
                    break
            if final_seen(msgs):
                proc.join(10)  # let it exit by itself (a kill mid-exit leaks its semaphores)
            if proc.is_alive():
                timed_out = time.time() >= deadline
                proc.kill()  # no error when it has just exited
                proc.join()
            else:
                proc.join()
                timed_out = False
            rec = {**m, "desc": next((x["desc"] for x in msgs if "desc" in x), None), "seconds": time.time() - t0}
            final = next((x for x in msgs if "outcome" in x), None)
            if final is not None:
                rec.update(final)
            elif timed_out:
                rec.update(outcome="crash", error=f"timeout after {args.timeout} s (hung)")
            else:
                rec.update(outcome="crash", error=f"child died: exit code {proc.exitcode}"
                           + (f" (signal {signal.Signals(-proc.exitcode).name})" if proc.exitcode and proc.exitcode < 0 else ""))
            d = os.path.join(probes, f"m{m['index']:05d}")
            with lock:
                results.append(rec)
                bucket = (rec["outcome"], rec["kind"])
                if rec["outcome"] in ("silent", "crash") and kept[bucket] < 2 and os.path.isdir(d):
                    kept[bucket] += 1
                    shutil.move(d, os.path.join(keep, os.path.basename(d)))
                if len(results) % 250 == 0:
                    print(f"  {len(results)}/{len(plans)} probes, {time.time() - started:.0f} s", flush=True)
            shutil.rmtree(d, ignore_errors=True)

    threads = [threading.Thread(target=worker) for _ in range(args.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.sort(key=lambda r: r["index"])
    elapsed = time.time() - started
    return summarise(results, elapsed, args, template, keep)


def final_seen(msgs) -> bool:
    return any("outcome" in x for x in msgs)


OUTCOMES = ("refused", "identical", "flagged", "silent", "crash", "not-applied")


def summarise(results: list[dict], elapsed: float, args, template: str, keep: str) -> dict:
    total = collections.Counter(r["outcome"] for r in results)
    by_target = collections.defaultdict(collections.Counter)
    by_kind = collections.defaultdict(collections.Counter)
    for r in results:
        by_target[r["target"]][r["outcome"]] += 1
        by_kind[r["kind"]][r["outcome"]] += 1
    id_flagged = sum(1 for r in results if r["outcome"] == "identical" and r.get("verify_flags"))
    silent = [r for r in results if r["outcome"] == "silent"]
    crash = [r for r in results if r["outcome"] == "crash"]
    # group silent and crash cases by what was done (kind + description without offsets/values)
    def cause(r):
        import re
        d = r.get("desc") or r["kind"]
        return re.sub(r"\b\d+\b", "N", re.sub(r"= '[0-9a-f]+'", "= 'HEX'", d))
    silent_groups = collections.Counter(cause(r) for r in silent)
    crash_groups = collections.Counter(f"{r['kind']}: {C.normalise(r.get('error') or '')[:160]}" for r in crash)
    header = ["", *OUTCOMES, "total"]
    rows = [["all", *[total.get(o, 0) for o in OUTCOMES], len(results)]]
    rows += [[t, *[by_target[t].get(o, 0) for o in OUTCOMES], sum(by_target[t].values())] for t in sorted(by_target)]
    rows_k = [[k, *[by_kind[k].get(o, 0) for o in OUTCOMES], sum(by_kind[k].values())] for k in sorted(by_kind)]
    table = C.md_table(header, rows)
    table_k = C.md_table(["kind", *OUTCOMES, "total"], rows_k)
    sg = C.md_table(["silently different: mutation", "cases"], sorted(silent_groups.items(), key=lambda x: -x[1]))
    cg = C.md_table(["crash / hang: mutation and error", "cases"], sorted(crash_groups.items(), key=lambda x: -x[1]))
    na = total.get("not-applied", 0)
    not_applied = collections.Counter(f"{r['kind']}: {C.normalise(r.get('error') or '')[:120]}"
                                      for r in results if r["outcome"] == "not-applied")
    md = (f"## fuzz\n\n`python benchmarks/bench_integrity.py fuzz --mutations {args.mutations} --seed {args.seed}`: "
          f"{len(results)} seeded mutations of a store (300 + 2 appended segments of 40 vectors x {C.DIM} dims, "
          f"l2, tiers raw + {C.TIER}, keys, metadata in the main file, 6 deleted ids) in {elapsed:.0f} s, "
          f"{args.workers} workers, 1 thread each, timeout {args.timeout} s a probe. "
          f"{id_flagged} of the 'identical' ones were also flagged by verify. "
          f"{na} mutations could not be applied (not-applied: {dict(not_applied)}).\n\n{table}\n\nBy mutation kind:\n\n{table_k}\n\n{sg}\n\n{cg}\n")
    print(md)
    data = {"elapsed_s": elapsed, "counts": dict(total), "by_target": {k: dict(v) for k, v in by_target.items()},
            "by_kind": {k: dict(v) for k, v in by_kind.items()}, "identical_but_verify_flags": id_flagged,
            "silent_groups": dict(silent_groups), "crash_groups": dict(crash_groups),
            "silent_cases": silent, "crash_cases": crash, "examples_kept_in": keep, "template": template,
            "args": {"mutations": args.mutations, "seed": args.seed, "workers": args.workers,
                     "timeout": args.timeout}, "machine": C.machine()}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"results": results, **data}, fh, indent=1, default=str)
    return {"data": data, "markdown": md}
