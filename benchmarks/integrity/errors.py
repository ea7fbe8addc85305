"""Errors that escape as something else, and the silent cases of issue 16, as scripted cases.

Each case runs the CLI (``python -m vecstore ...``) or a few lines of the library in a child and
records what happens now: exit code, whether a traceback was printed, the exception type and its
message. Verdict ``ok`` means: a VecstoreError subclass (library) / one line on stderr and a non-zero
exit (CLI). Disk full is a real tmpfs when this process may mount one (root), else simulated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np

from . import common as C

LIB = r"""
import json, sys, traceback
out = {"raised": None}
try:
    import numpy as np
    import vecstore
    ns = {"np": np, "vecstore": vecstore, "out": out}
    exec(compile(sys.argv[1], "<case>", "exec"), ns)
except BaseException as exc:
    out["raised"] = type(exc).__name__
    out["mro"] = [c.__name__ for c in type(exc).__mro__][:4]
    out["vecstore_error"] = "vecstore" in sys.modules and isinstance(exc, sys.modules["vecstore"].VecstoreError)
    out["message"] = str(exc)[:300]
    out["errno"] = getattr(exc, "errno", None)
    tb = traceback.extract_tb(exc.__traceback__)
    out["where"] = " < ".join(f"{f.filename.rsplit('/', 1)[-1]}:{f.name}:{f.lineno}" for f in reversed(tb[-3:]))
print("\nRESULT " + json.dumps(out, default=str))
"""


def lib(code: str, cwd: str, timeout: float = 60) -> dict:
    try:
        r = C.run([C.PY, "-c", LIB, code], timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        return {"raised": "TIMEOUT", "message": f"hung: no answer in {timeout:.0f} s", "ok": False}
    line = next((x for x in r.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        return {"raised": f"child died (exit {r.returncode})", "message": r.stderr.strip()[-300:], "ok": False}
    out = json.loads(line[7:])
    out["ok"] = bool(out.get("vecstore_error"))
    return out


def cli(args: list[str], cwd: str, timeout: float = 60) -> dict:
    try:
        r = C.run([C.PY, "-m", "vecstore", *args], timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        return {"exit": None, "traceback": False, "last": f"hung: no answer in {timeout:.0f} s", "ok": False}
    err = r.stderr.strip().splitlines()
    tb = any(line.startswith("Traceback") for line in err)
    last = err[-1] if err else (r.stdout.strip().splitlines() or [""])[-1]
    if tb:  # the exception line: the first unindented line after the last frame
        frames = [i for i, line in enumerate(err) if line.startswith("  File ")]
        after = [line for line in err[frames[-1] + 1:] if line and not line.startswith(" ")] if frames else []
        last = " ".join([after[0]] + err[err.index(after[0]) + 1:])[:300] if after else last
    return {"exit": r.returncode, "traceback": tb, "last": last[:300], "ok": r.returncode != 0 and not tb}


def _fill(directory: str, leave: int) -> None:
    """Fill the filesystem of ``directory`` until about ``leave`` bytes are free."""
    filler = os.path.join(directory, "filler")
    st = os.statvfs(directory)
    free = st.f_bavail * st.f_frsize
    with open(filler, "ab") as fh:
        try:
            fh.write(b"\0" * max(free - leave, 0))
            fh.flush()
            os.fsync(fh.fileno())
        except OSError:
            pass


def _small_store(path: str) -> None:
    r = C.run([C.PY, "-c", f"from benchmarks.integrity.common import make_store; make_store({path!r})"],
              cwd=C.ROOT, timeout=300)
    assert r.returncode == 0, r.stderr


ENOSPC_SIM = r"""
import errno, builtins, os
_open = builtins.open
class _Full:
    def __init__(self, fh): self._fh = fh
    def write(self, *a): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    def __getattr__(self, n): return getattr(self._fh, n)
    def __enter__(self): return self
    def __exit__(self, *a): self._fh.close()
def fake_open(file, mode="r", *a, **k):
    fh = _open(file, mode, *a, **k)
    return _Full(fh) if any(c in mode for c in "wax+") and ".segments" in str(file) else fh
builtins.open = fake_open
"""


def run(args) -> dict:
    work = os.path.abspath(args.workdir)
    for d in os.listdir(work) if os.path.isdir(work) else []:
        if os.path.ismount(os.path.join(work, d)):
            subprocess.run(["umount", os.path.join(work, d)], check=False)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    s = os.path.join(work, "s.vs")
    _small_store(s)
    rng = np.random.default_rng(0)
    np.save(os.path.join(work, "big.npy"), rng.standard_normal((60_000, C.DIM)).astype(np.float32))
    np.save(os.path.join(work, "add.npy"), rng.standard_normal((20_000, C.DIM)).astype(np.float32))
    cases: list[dict] = []

    def case(name, kind, what, result, repro, expect="a VecstoreError / one line, exit != 0"):
        result.update(name=name, kind=kind, what=what, repro=repro, expect=expect)
        cases.append(result)

    # -- disk full ------------------------------------------------------------------------------------
    mnt = os.path.join(work, "full")
    os.makedirs(mnt)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={args.tmpfs_size}", "tmpfs", mnt],
                             capture_output=True).returncode == 0
    how = f"real tmpfs of {args.tmpfs_size}" if mounted else "simulated ENOSPC (open() of files in STORE.segments fails on write)"
    try:
        if mounted:
            case("disk full: build", "cli", how,
                 cli(["build", os.path.join(work, "big.npy"), os.path.join(mnt, "b.vs"), "--quiet"], work),
                 f"mount -t tmpfs -o size={args.tmpfs_size} tmpfs MNT; vecstore build big.npy MNT/b.vs (60,000 x 16 float32)")
            case("disk full: build (library)", "lib", how,
                 lib(f"vecstore.build({os.path.join(mnt, 'b2.vs')!r}, np.load('big.npy'), progress=False)", work),
                 "vecstore.build('MNT/b2.vs', np.load('big.npy'))")
            for leftover in os.listdir(mnt):
                p = os.path.join(mnt, leftover)
                shutil.rmtree(p) if os.path.isdir(p) else os.unlink(p)
            fs = os.path.join(mnt, "s.vs")
            _small_store(fs)
            _fill(mnt, 64 << 10)
            case("disk full: append", "cli", how, cli(["append", fs, os.path.join(work, "add.npy"), "--quiet"], work),
                 "small store on the tmpfs, filled to 64 KiB free; vecstore append MNT/s.vs add.npy (20,000 x 16)")
            _fill(mnt, 0)
            case("disk full: delete", "cli", how, cli(["delete", fs, "--ids", "3"], work),
                 "the same store, tmpfs filled to 0 bytes free; vecstore delete MNT/s.vs --ids 3")
            case("disk full: compact", "cli", how, cli(["compact", fs, "--quiet"], work),
                 "the same, full; vecstore compact MNT/s.vs")
            case("disk full: compress", "cli", how, cli(["compress", fs, "--codec", "int8", "--no-calibrate", "--quiet"], work),
                 "the same, full; vecstore compress MNT/s.vs --codec int8")
            tmps = C.temporaries(mnt)
            cases[-1]["temporaries_left"] = tmps
        else:
            for name, argv in (("append", ["append", s, os.path.join(work, "add.npy"), "--quiet"]),
                               ("delete", ["delete", s, "--ids", "3"])):
                code = ENOSPC_SIM + f"import sys, runpy; sys.argv = ['vecstore', *{argv!r}]; runpy.run_module('vecstore', run_name='__main__')"
                case(f"disk full: {name} (simulated)", "lib", how, lib(code, work), f"ENOSPC on every write in .segments; vecstore {name}")
    finally:
        if mounted:
            subprocess.run(["umount", mnt], check=False)

    # -- odd store paths -------------------------------------------------------------------------------
    loop = os.path.join(work, "loop.vs")
    os.symlink("loop.vs", loop)
    case("symlink loop: info", "cli", "STORE is a symlink to itself", cli(["info", loop], work),
         "ln -s loop.vs loop.vs; vecstore info loop.vs")
    case("symlink loop: open", "lib", "STORE is a symlink to itself", lib(f"vecstore.open({loop!r})", work),
         "vecstore.open('loop.vs')")
    case("special file: /dev/zero", "cli", "STORE is a character device", cli(["info", "/dev/zero"], work),
         "vecstore info /dev/zero")
    case("special file: /dev/zero (open)", "lib", "STORE is a character device", lib("vecstore.open('/dev/zero')", work),
         "vecstore.open('/dev/zero')")
    fifo = os.path.join(work, "fifo.vs")
    os.mkfifo(fifo)
    case("special file: FIFO", "cli", "STORE is a named pipe nobody writes", cli(["info", fifo], work, timeout=20),
         "mkfifo fifo.vs; vecstore info fifo.vs")
    case("directory as store", "cli", "STORE is a directory", cli(["info", work], work), "vecstore info DIR")

    # -- arguments and inputs -------------------------------------------------------------------------
    case("delete --ids beyond int64", "cli", "an id > 2**63", cli(["delete", s, "--ids", "99999999999999999999"], work),
         "vecstore delete s.vs --ids 99999999999999999999")
    case("delete ids beyond int64 (library)", "lib", "an id > 2**63",
         lib(f"vecstore.open({s!r}, mode='a').delete([99999999999999999999])", work),
         "vecstore.open('s.vs', mode='a').delete([99999999999999999999])")
    case("export-params into a missing directory", "cli", "OUT's directory does not exist",
         cli(["export-params", s, C.TIER, os.path.join(work, "no-such-dir", "p.json")], work),
         f"vecstore export-params s.vs {C.TIER} no-such-dir/p.json")
    case("key with a lone surrogate (build)", "lib", "keys=['\\ud800', ...]",
         lib("vecstore.build('sur.vs', np.ones((2, 4), np.float32), keys=['\\ud800', 'b'], overwrite=True, progress=False)", work),
         "vecstore.build('sur.vs', np.ones((2, 4), np.float32), keys=['\\ud800', 'b'])")
    case("key with a lone surrogate (append)", "lib", "Store.add(keys=['\\udc80'])",
         lib(f"vecstore.open({s!r}, mode='a').add(np.ones((1, {C.DIM}), np.float32), keys=['\\udc80'], progress=False)", work),
         "vecstore.open('s.vs', mode='a').add(np.ones((1, 16), np.float32), keys=['\\udc80'])")
    np.save(os.path.join(work, "one_d.npy"), np.ones(C.DIM, np.float32))
    r1 = lib("st = vecstore.build('oned.vs', np.ones(16, np.float32), overwrite=True, progress=False); "
             "out['result'] = f'built: count={st.count} dim={st.dim}'", work)
    r1["ok"] = r1["ok"] or False
    case("1-D array to build (library)", "lib", "vectors of shape (16,)", r1,
         "vecstore.build('oned.vs', np.ones(16, np.float32))", expect="InvalidInputError (docs: non-2-D input is refused)")
    r2 = cli(["build", "one_d.npy", "oned2.vs", "--quiet"], work)
    r2["ok"] = r2["exit"] not in (0, None) and not r2["traceback"]
    case("1-D .npy to build (CLI)", "cli", "a .npy of shape (16,)", r2, "vecstore build one_d.npy oned2.vs",
         expect="refused (non-2-D input)")
    with open(os.path.join(work, "text.npy"), "w") as fh:
        fh.write("this is not an array\n" * 20)
    r3 = cli(["build", "text.npy", "text.vs", "--quiet"], work)
    r3["ok"] = r3["ok"] and "pickle" not in r3["last"].lower()
    case("non-.npy file named .npy", "cli", "a text file called text.npy", r3, "vecstore build text.npy text.vs",
         expect="'not a .npy file' (not 'pickled data')")

    # -- the manifest and the identity (the silent cases) ---------------------------------------------
    def fresh(name: str) -> str:
        d = os.path.join(work, name)
        os.makedirs(d)
        p = os.path.join(d, "s.vs")
        shutil.copy(s, p)
        shutil.copytree(C.sidecar(s), C.sidecar(p))
        return p

    def edit_manifest(p: str, fn) -> None:
        m = C.live_manifest(p)
        with open(m) as fh:
            doc = json.load(fh)
        text = fn(doc)
        with open(m, "w") as fh:
            fh.write(text if isinstance(text, str) else json.dumps(doc, indent=1, sort_keys=True))

    probe = ("st = vecstore.open({p!r}); out['result'] = f'opened: count={{st.count}} (original 368), "
             "segments={{st.segment_count}}, deleted={{st.deleted_count}}'; vecstore.verify({p!r}); "
             "out['result'] += '; verify passes'")
    p = fresh("deep")
    edit_manifest(p, lambda doc: "[" * 100_000 + "]" * 100_000)
    case("manifest nested 100,000 deep (open)", "lib", "manifest = [[[...]]]", lib(f"vecstore.open({p!r})", work),
         "replace STORE.segments/manifest-<id>.json by '[' * 100000 + ']' * 100000; vecstore.open(STORE)")
    case("manifest nested 100,000 deep (untrusted)", "lib", "the same, untrusted=True",
         lib(f"vecstore.open({p!r}, untrusted=True)", work), "vecstore.open(STORE, untrusted=True)")
    case("manifest nested 100,000 deep (CLI info)", "cli", "the same", cli(["info", p], work), "vecstore info STORE")

    silent = [
        ("manifest: segments = []", lambda d: d.update(segments=[])),
        ("manifest: deleted = null", lambda d: d.update(deleted=None)),
        ("manifest: field 'deleted' removed", lambda d: d.pop("deleted")),
        ("manifest: one segment entry removed", lambda d: d["segments"].pop(0)),
    ]
    for i, (label, fn) in enumerate(silent):
        p = fresh(f"silent{i}")
        edit_manifest(p, fn)
        res = lib(probe.format(p=p), work)
        res["ok"] = res.get("raised") is not None and res.get("vecstore_error", False)
        case(label, "lib", "opens? verify?", res, f"edit the manifest ({label}); vecstore.open(STORE); vecstore.verify(STORE)",
             expect="refused (docs/format.md: a manifest that lacks a field is refused) / flagged by verify")
    p = fresh("nomanifest")
    os.unlink(C.live_manifest(p))
    res = lib(probe.format(p=p), work)
    res["ok"] = res.get("raised") is not None
    case("manifest deleted", "lib", "opens? verify?", res, "rm STORE.segments/manifest-*.json; open; verify",
         expect="verify notices segment files that no manifest of this main file names")
    p = fresh("segkeys")
    seg0 = C.store_files(p)["segments"][0]
    res = lib(f"import h5py\nwith h5py.File({seg0!r}, 'r+') as f: del f['keys']\n"
              f"vecstore.verify({p!r}); st = vecstore.open({p!r}); "
              f"out['result'] = f'verify passes; keys of an appended id: {{st.keys([300, 301])}}'", work)
    res["ok"] = res.get("raised") is not None and res.get("vecstore_error", False)
    case("segment's /keys group removed", "lib", "h5py del seg['keys']", res,
         "h5py: del f['keys'] in STORE.segments/seg-*.vs (first segment); vecstore.verify; Store.keys([300, 301])",
         expect="refused or flagged (a segment must have the main file's columns)")
    # the identity: one hex digit of store_id changed, then one write with old files -> segments gone for good
    p = fresh("identity")
    code = (f"import h5py, os, time\n"
            f"with h5py.File({p!r}, 'r+') as f:\n"
            f"    sid = f.attrs['store_id']; sid = sid.decode() if isinstance(sid, bytes) else str(sid)\n"
            f"    f.attrs['store_id'] = ('1' if sid[0] != '1' else '2') + sid[1:]\n"
            f"st = vecstore.open({p!r}); count = st.count; st.close(); vecstore.verify({p!r})\n"
            f"d = {C.sidecar(p)!r}; before = sorted(os.listdir(d))\n"
            f"then = time.time() - 3600\n"
            f"[os.utime(os.path.join(d, n), (then, then)) for n in before]\n"
            f"vecstore.open({p!r}, mode='a').delete([0])\n"
            f"after = sorted(os.listdir(d))\n"
            f"out['result'] = (f'opens with count={{count}} (original 368), verify passes; a delete with files an hour old '\n"
            f"                 f'then removed {{len([n for n in before if n.startswith(\"seg-\") and n not in after])}} of '\n"
            f"                 f'{{len([n for n in before if n.startswith(\"seg-\")])}} segment files')\n")
    res = lib(code, work)
    res["ok"] = res.get("raised") is not None and res.get("vecstore_error", False)
    case("store_id: one hex digit changed, then a write", "lib", "h5py set store_id; files 1 h old; delete([0])", res,
         "h5py: change one hex digit of the main file's store_id attribute; vecstore.open; vecstore.verify; "
         "os.utime STORE.segments/* an hour back; Store.delete([0]); ls STORE.segments",
         expect="open or verify refuses; no segment file is removed")

    rows = []
    for c in cases:
        if c["kind"] == "cli":
            now = f"exit {c['exit']}, {'traceback' if c['traceback'] else 'one line'}: {c['last']}"
        else:
            now = (f"{c['raised']}: {c.get('message', '')}" + (f" (errno {c['errno']})" if c.get("errno") else "")
                   if c.get("raised") else f"no error; {c.get('result', '')}")
        rows.append([c["name"], c["repro"], now[:400], "ok" if c["ok"] else "**FAIL**"])
    md = (f"## errors\n\n`python benchmarks/bench_integrity.py errors`: scripted cases (disk full: {how}). "
          f"ok = a VecstoreError subclass (library) or one line on stderr and exit != 0 (CLI); the silent cases "
          f"are ok only when refused or flagged.\n\n"
          + C.md_table(["case", "reproduction", "what happens now", "verdict"], rows) + "\n")
    print(md)
    return {"data": {"cases": cases, "disk_full": how, "machine": C.machine()}, "markdown": md}
