"""Crash safety of append and delete: SIGKILL the writer at random moments.

After every kill the store must open, pass `verify`, and answer exactly as it did before the change
or exactly as after it (never in between); the next write must succeed and remove what the killed
one left behind. Each writer is a warm child process (vecstore imported, waiting on stdin), so a
kill lands inside the change itself rather than in interpreter start-up.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import vecstore
from vecstore.format import schema as fmt
from vecstore.format import segments as seg

N, DIM = 30_000, 32
KILLS_PER_CHANGE = 20
QUERIES = np.random.default_rng(3).standard_normal((6, DIM)).astype(np.float32)
ENV = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
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


def _answers(path: str) -> tuple:
    with vecstore.open(path) as store:
        return store.count, {t: store.search(QUERIES, 10, tier=t).ids.tolist() for t in sorted(store.tiers)}


def _copy_store(src_dir, dst_dir) -> str:
    if os.path.exists(dst_dir):
        shutil.rmtree(dst_dir)
    shutil.copytree(src_dir, dst_dir)
    return os.path.join(dst_dir, "s.vs")


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A store with raw + pq8 tiers and one earlier append, and the inputs of the changes."""
    root = tmp_path_factory.mktemp("lifecrash")
    src = root / "template"
    src.mkdir()
    path = str(src / "s.vs")
    rng = np.random.default_rng(1)
    vecstore.build(path, rng.standard_normal((N, DIM)).astype(np.float32), metric="l2", progress=False).close()
    vecstore.compress(path, "pq8", calibrate=False, train_size=5000, progress=False).close()
    with vecstore.open(path, mode="a") as store:
        store.add(rng.standard_normal((100, DIM)).astype(np.float32))
    np.save(root / "append.npy", rng.standard_normal((N, DIM)).astype(np.float32))
    np.save(root / "delete.npy", np.arange(0, N, 3))
    return {"root": root, "src": str(src), "before": _answers(path)}


def _child(change: str, path: str, arg: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, change, path, arg], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=ENV, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _finish(proc: subprocess.Popen) -> int:
    code = proc.wait()
    proc.stdin.close()
    proc.stdout.close()
    return code


@pytest.mark.parametrize("change", ["append", "delete"])
def test_sigkill_during_append_or_delete_leaves_the_store_before_or_after(template, change, tmp_path):
    arg = str(template["root"] / f"{change}.npy")
    # one undisturbed run: the "after" state and how long the change takes
    path = _copy_store(template["src"], str(tmp_path / "full"))
    proc = _child(change, path, arg)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    duration = float(proc.stdout.readline().split()[1])
    assert _finish(proc) == 0
    after = _answers(path)
    before = template["before"]
    assert after != before
    rng = np.random.default_rng(11 if change == "append" else 12)
    outcomes = {"before": 0, "after": 0}
    for kill in range(KILLS_PER_CHANGE):
        path = _copy_store(template["src"], str(tmp_path / "k"))
        proc = _child(change, path, arg)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        time.sleep(rng.uniform(0, 1.2 * duration))
        proc.send_signal(signal.SIGKILL)
        _finish(proc)
        state = _answers(path)
        assert state in (before, after), f"kill {kill}: the store is neither as before nor as after"
        outcomes["before" if state == before else "after"] += 1
        vecstore.verify(path)
        with vecstore.open(path, mode="a") as store:  # the next write works and sweeps the debris
            store.delete([N + 99])
        leftovers = [e for e in os.listdir(seg.sidecar_dir(path)) if fmt.TMP_MARK in e]
        assert leftovers == []
    print(f"{change}: {KILLS_PER_CHANGE} SIGKILLs, change takes {duration * 1000:.0f} ms: {outcomes}")
    assert outcomes["before"] > 0  # the kills did land inside the change
