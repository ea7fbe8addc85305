"""Shared helpers: child environments, the documented file names, a small test store, answers."""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
RESULTS = os.path.join(ROOT, "benchmarks", "results")

# Children: one numba/OpenMP thread each (2 shared cores), this worktree's vecstore first.
ENV = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
           PYTHONPATH=ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else ""))

# Documented names (docs/format.md "Segments", docs/errors.md "atomic replacement").
TMP_MARK = ".vecstore-tmp-"
SEGMENT_RE = re.compile(r"^seg-[0-9a-f]{32}\.vs$")
DELETED_RE = re.compile(r"^deleted-[0-9a-f]{32}\.i64$")
MANIFEST_RE = re.compile(r"^manifest-[0-9a-f]+\.json$")

DIM = 16
K = 10
TIER = "pq4"          # the compressed tier of every test store


def sidecar(path: str) -> str:
    """``STORE.segments``."""
    return os.path.abspath(path) + ".segments"


def manifests(path: str) -> list[str]:
    return sorted(glob.glob(os.path.join(sidecar(path), "manifest-*.json")))


def store_id(path: str) -> str | None:
    """The main file's ``store_id`` root attribute, read with h5py (None if absent/unreadable)."""
    import h5py
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get("store_id")
    except Exception:  # noqa: BLE001
        return None
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def live_manifest(path: str) -> str | None:
    """``STORE.segments/manifest-<store_id>.json`` of the main file, if it exists."""
    sid = store_id(path)
    if sid is None:
        return None
    p = os.path.join(sidecar(path), f"manifest-{sid}.json")
    return p if os.path.exists(p) else None


def store_files(path: str) -> dict:
    """The main file and what its manifest names: {"main", "manifest", "segments": [...], "deleted"}."""
    out = {"main": os.path.abspath(path), "manifest": live_manifest(path), "segments": [], "deleted": None}
    if out["manifest"]:
        with open(out["manifest"], encoding="utf-8") as fh:
            doc = json.load(fh)
        out["segments"] = [os.path.join(sidecar(path), s["file"]) for s in doc.get("segments") or []]
        if doc.get("deleted"):
            out["deleted"] = os.path.join(sidecar(path), doc["deleted"]["file"])
    return out


def temporaries(directory: str) -> list[tuple[str, int]]:
    """Temporaries of interrupted writes (``.<name>.vecstore-tmp-<pid>-<random>``) in ``directory``
    and its ``*.segments`` subdirectories, with their sizes."""
    found = []
    for d in [directory, *glob.glob(os.path.join(directory, "*.segments"))]:
        for entry in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if TMP_MARK in entry:
                p = os.path.join(d, entry)
                found.append((os.path.relpath(p, directory), os.path.getsize(p) if os.path.isfile(p) else -1))
    return found


def unreferenced(path: str) -> list[str]:
    """Files of ``STORE.segments`` that the live manifest does not name (garbage, removed by age)."""
    files = store_files(path)
    keep = {os.path.basename(p) for p in files["segments"]}
    if files["deleted"]:
        keep.add(os.path.basename(files["deleted"]))
    if files["manifest"]:
        keep.add(os.path.basename(files["manifest"]))
    d = sidecar(path)
    return sorted(e for e in (os.listdir(d) if os.path.isdir(d) else [])
                  if e not in keep and TMP_MARK not in e)


def age_tree(directory: str, seconds: float) -> None:
    """Set every file's atime/mtime ``seconds`` into the past (files made "old")."""
    then = time.time() - seconds
    for dirpath, _dirs, names in os.walk(directory):
        for n in names:
            try:
                os.utime(os.path.join(dirpath, n), (then, then))
            except FileNotFoundError:
                pass


def run(cmd: list[str], timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout, **kw)


def cli(*args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return run([PY, "-m", "vecstore", *args], timeout=timeout, **kw)


def machine() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(), "threads_per_child": 1,
            "git": subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip()}


# -- the test store ------------------------------------------------------------------------------------


def make_store(path: str, n: int = 300, seed: int = 0, appends: tuple[int, ...] = (40, 40),
               deletes: int = 6, tier: str | None = TIER, metadata: bool = True):
    """Build a small l2 store with keys (and metadata), one compressed tier, ``appends`` segments
    (with keys) and ``deletes`` deleted ids spread over the main file and the segments.
    Returns the queries (np.ndarray) that :func:`answers` uses: copies of stored, appended and
    deleted vectors, plus random ones."""
    import numpy as np

    import vecstore

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    meta = [{"i": i} for i in range(n)] if metadata else None
    vecstore.build(path, x, metric="l2", keys=[f"doc{i}" for i in range(n)], metadata=meta,
                   overwrite=True, progress=False).close()
    if tier:
        vecstore.compress(path, tier, calibrate=False, train_size=n, seed=0, progress=False).close()
    parts = [x]
    with vecstore.open(path, mode="a") as store:
        for j, m in enumerate(appends):
            y = rng.standard_normal((m, DIM)).astype(np.float32)
            store.add(y, keys=[f"app{j}-{i}" for i in range(m)], progress=False)
            parts.append(y)
        allv = np.concatenate(parts)
        ids = np.asarray(store.ids)
        victims = ids[np.linspace(1, len(ids) - 2, deletes).astype(int)] if deletes else ids[:0]
        if deletes:
            store.delete(victims)
    # queries: deleted docs (resurrection shows), appended docs (forgetting shows), main docs, random
    pick = [int(v) for v in victims] + [n + 1, n + appends[0] + 2 if len(appends) > 1 else n] + [0, n // 2]
    pick = [p for p in pick if p < allv.shape[0]]
    q = np.concatenate([allv[pick], rng.standard_normal((4, DIM)).astype(np.float32)])
    return q


def answers(store, queries, tiers=None) -> dict:
    """What a reader sees, exactly: count, live ids, keys, tiers, encoders and the top-K (ids and
    distances) of the default search and of every tier. JSON-safe; compare with ==."""
    import numpy as np

    ids = np.sort(np.asarray(store.ids))
    out = {"count": int(store.count), "ids": ids.tolist(), "keys": store.keys(ids),
           "tiers": sorted(store.tiers), "encoders": sorted(store.encoder_names)}
    plans = [("default", {})] + [(t, {"tier": t}) for t in sorted(tiers or store.tiers)]
    for name, plan in plans:
        r = store.search(queries, K, **plan)
        out["search:" + name] = [np.asarray(r.ids).tolist(), np.asarray(r.distances).tolist()]
    return out


def is_vecstore_error(exc: BaseException) -> bool:
    import vecstore
    return isinstance(exc, vecstore.VecstoreError)


def one_line(exc: BaseException, limit: int = 300) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def normalise(message: str) -> str:
    """A message with paths, hex names and numbers replaced, for counting errors by kind."""
    message = re.sub(r"'/[^']*'", "'PATH'", message)
    message = re.sub(r"/\S+", "PATH", message)
    message = re.sub(r"[0-9a-f]{16,}", "HEX", message)
    return re.sub(r"\d+", "N", message)


# -- results --------------------------------------------------------------------------------------------


def md_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def save_section(name: str, data: dict, markdown: str, out: str | None) -> None:
    """Merge one part's figures into ``out``.json and rewrite ``out``.md from every part."""
    if not out:
        return
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    js = out + ".json"
    doc = {}
    if os.path.exists(js):
        with open(js, encoding="utf-8") as fh:
            doc = json.load(fh)
    doc[name] = {"data": data, "markdown": markdown}
    with open(js, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, sort_keys=True, default=str)
    order = ["fuzz", "cleanup-race", "kill-points", "errors"]
    parts = [doc[k]["markdown"] for k in order if k in doc] + [doc[k]["markdown"] for k in doc if k not in order]
    with open(out + ".md", "w", encoding="utf-8") as fh:
        fh.write("# Integrity harness (issue 16): figures\n\nMade by `benchmarks/bench_integrity.py`; "
                 "see benchmarks/integrity/README.md for the commands.\n\n" + "\n\n".join(parts) + "\n")
