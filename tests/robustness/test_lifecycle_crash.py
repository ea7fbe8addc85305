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


WRITERS = ["append", "delete", "compact", "compress", "build", "swap", "add-encoder"]


@pytest.mark.parametrize("writer", WRITERS)
def test_the_next_write_of_any_kind_removes_what_killed_writes_left(tmp_path, writer):
    """Temporaries of killed writes (store-sized ones beside the main file and CURRENT.prev,
    manifest temporaries in both sidecar directories) are gone after the next write of any kind,
    whatever pid they name (a live one too: the writer lock is held, so none is live)."""
    from vecstore.encoders import WordVectorEncoder

    rng = np.random.default_rng(5)
    path = str(tmp_path / "s.vs")
    vecstore.build(path, rng.standard_normal((200, 8)).astype(np.float32), progress=False).close()
    with vecstore.open(path, mode="a") as store:
        store.add(rng.standard_normal((5, 8)).astype(np.float32))
    vecstore.build(path + ".prev", rng.standard_normal((200, 8)).astype(np.float32), progress=False).close()
    with vecstore.open(path + ".prev", mode="a") as store:
        store.delete([3])
    new = str(tmp_path / "new.vs")
    vecstore.build(new, rng.standard_normal((200, 8)).astype(np.float32), progress=False).close()
    live_pid = os.getppid()  # alive, and not this process: pid reuse must not keep a temporary
    debris = [
        os.path.join(tmp_path, f".s.vs{fmt.TMP_MARK}{live_pid}-0badf00d"),
        os.path.join(tmp_path, f".s.vs{fmt.TMP_MARK}999999999-0badf00d"),
        os.path.join(tmp_path, f".s.vs.prev{fmt.TMP_MARK}{live_pid}-0badf00d"),
        os.path.join(seg.sidecar_dir(path), f".manifest-{'a' * 32}.json{fmt.TMP_MARK}{live_pid}-0badf00d"),
        os.path.join(seg.sidecar_dir(path), f".seg-{'b' * 32}.vs{fmt.TMP_MARK}{live_pid}-0badf00d"),
        os.path.join(seg.sidecar_dir(path + ".prev"), f".manifest-{'c' * 32}.json{fmt.TMP_MARK}{live_pid}-0badf00d"),
    ]
    for name in debris:
        with open(name, "wb") as fh:
            fh.write(b"\0" * 4096)
    if writer == "append":
        with vecstore.open(path, mode="a") as store:
            store.add(rng.standard_normal((1, 8)).astype(np.float32))
    elif writer == "delete":
        with vecstore.open(path, mode="a") as store:
            store.delete([0])
    elif writer == "compact":
        vecstore.compact(path)
    elif writer == "compress":
        vecstore.compress(path, "int8", calibrate=False, progress=False).close()
    elif writer == "build":
        vecstore.build(path, rng.standard_normal((50, 8)).astype(np.float32), overwrite=True, progress=False).close()
    elif writer == "swap":
        vecstore.swap(new, path, check=False)
    else:
        vocab = {"a": 0, "b": 1, "c": 2}
        vecstore.add_encoder(path, WordVectorEncoder(vocab, np.ones((3, 8), np.float32)))
    assert [name for name in debris if os.path.exists(name)] == []


READER = r"""
import sys, time
import numpy as np
import vecstore
path, stop, floor_file = sys.argv[1:4]
q = np.random.default_rng(0).standard_normal((1, 16)).astype(np.float32)
opens = errors = stale = 0
examples = []
import os
while not os.path.exists(stop):
    with open(floor_file) as fh:
        floor = int(fh.read() or 0)
    try:
        with vecstore.open(path) as store:
            ids = store.search(q, 5).ids
            if ((ids >= 0) & (ids < floor)).any():
                stale += 1
        opens += 1
    except Exception as exc:
        errors += 1
        examples.append(f"{type(exc).__name__}: {exc}")
print(opens, errors, stale, repr(examples[:3]), flush=True)
"""


def test_readers_reopening_through_deletes_and_compactions_of_old_files_see_no_errors(tmp_path):
    """Cleanup cannot race a reader (docs/format.md, "Writing segments"): every file is set two hours
    into the past before each write, so removal by age would remove what a reader is opening; a
    reader opening and searching continuously sees no error and no deleted document."""
    rng = np.random.default_rng(5)
    path = str(tmp_path / "s.vs")
    vecstore.build(path, rng.standard_normal((2000, 16)).astype(np.float32), metric="l2").close()
    stop, floor_file = str(tmp_path / "STOP"), str(tmp_path / "floor")
    with open(floor_file, "w") as fh:
        fh.write("0")
    readers = [subprocess.Popen([sys.executable, "-c", READER, path, stop, floor_file], env=ENV,
                                stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        deadline, deleted, step = time.monotonic() + 8, 0, 0
        while time.monotonic() < deadline:
            then = time.time() - 7200
            for directory in (str(tmp_path), seg.sidecar_dir(path)):
                for name in os.listdir(directory) if os.path.isdir(directory) else ():
                    os.utime(os.path.join(directory, name), (then, then))
            step += 1
            with vecstore.open(path, mode="a") as store:
                if step % 10 == 0:
                    store.compact(progress=False)
                    continue
                store.delete([deleted])
            deleted += 1
            with open(floor_file + ".tmp", "w") as fh:
                fh.write(str(deleted))
            os.replace(floor_file + ".tmp", floor_file)
    finally:
        open(stop, "w").close()
    results = [proc.communicate(timeout=60)[0].split(maxsplit=3) for proc in readers]
    assert deleted > 20
    for opens, errors, stale, examples in results:
        assert int(opens) > 20
        assert (int(errors), int(stale)) == (0, 0), examples
