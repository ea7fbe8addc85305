"""Crash safety: SIGKILL `vecstore build` and `vecstore compress` at random moments.

After every kill the target path must hold either the complete store it held before, or the complete
store the killed command was writing (when the kill came after the rename), or nothing when there was
no store before: it opens, `vecstore.verify` passes, and searches give exactly that store's answers.
Temporaries left by a killed writer are ignored by readers and removed by the next write.

Kill moments are seeded: most wait until the writer's temporary file appears and then a random time
within the measured write, the others fall anywhere in the command's run (start-up included).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import vecstore
from vecstore.format import schema as fmt

N, DIM = 200_000, 32  # 26 MiB of float32: a build writes for ~0.3 s, a compress for ~0.5 s here
KILLS_PER_COMMAND = 10
SEED = 20
QUERIES = np.random.default_rng(99).standard_normal((8, DIM)).astype(np.float32)
ENV = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")


def _cli(*args) -> list[str]:
    return [sys.executable, "-m", "vecstore", *args]


def _temporaries(target: str) -> set[str]:
    prefix = "." + os.path.basename(target) + fmt.TMP_MARK
    return {e for e in os.listdir(os.path.dirname(target)) if e.startswith(prefix)}


def _answers(path: str) -> dict:
    """Every tier's answers to QUERIES: what 'the same store' means after a kill."""
    with vecstore.open(path) as store:
        return {name: store.search(QUERIES, 10, tier=name).ids.tolist() for name in sorted(store.tiers)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Two vector files, the stores they build, and the store compress makes from the first."""
    root = tmp_path_factory.mktemp("crash")
    out = {"root": root}
    for name, seed in (("a", 1), ("b", 2)):
        npy = str(root / f"{name}.npy")
        np.save(npy, np.random.default_rng(seed).standard_normal((N, DIM)).astype(np.float32))
        ref = str(root / f"ref-{name}.vs")
        vecstore.build(ref, npy, metric="l2", progress=False).close()  # what the CLI below runs
        out[name] = {"npy": npy, "ref": ref, "answers": _answers(ref)}
    compressed = str(root / "ref-a-int8.vs")
    shutil.copyfile(out["a"]["ref"], compressed)
    vecstore.compress(compressed, "int8", calibrate=False, progress=False).close()
    out["a+int8"] = {"ref": compressed, "answers": _answers(compressed)}
    assert out["a"]["answers"]["raw"] != out["b"]["answers"]["raw"]
    return out


def _timed_run(cmd, target) -> tuple[float, float]:
    """Run a command to the end: (total seconds, seconds from its temporary appearing to its exit)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    seen = None
    while proc.poll() is None:
        if seen is None and _temporaries(target):
            seen = time.perf_counter()
        time.sleep(0.001)
    end = time.perf_counter()
    assert proc.returncode == 0, proc.stderr.read()
    proc.stderr.close()
    return end - t0, end - (seen or t0)


def _kill_once(cmd, target, rng, total, write) -> dict:
    """Start ``cmd``, SIGKILL it at a seeded moment; report when the kill landed."""
    wait_for_write = rng.random() < 0.75
    delay = rng.uniform(0, 1.3 * write) if wait_for_write else rng.uniform(0, total)
    before = _temporaries(target)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    t0 = time.perf_counter()
    own_tmp = False
    if wait_for_write:
        while proc.poll() is None and not (_temporaries(target) - before):
            time.sleep(0.002)
        t0 = time.perf_counter()
    while proc.poll() is None and time.perf_counter() - t0 < delay:
        own_tmp = own_tmp or bool(_temporaries(target) - before)
        time.sleep(0.002)
    alive = proc.poll() is None
    own_tmp = own_tmp or bool(_temporaries(target) - before)
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return {"killed": alive and proc.returncode == -signal.SIGKILL, "during_write": own_tmp and alive,
            "delay": round(delay, 3), "after_temporary": wait_for_write, "pid": proc.pid, "returncode": proc.returncode}


def _state(target: str, candidates: dict) -> str:
    """Which complete store the target holds ('absent' if none); fail on anything else."""
    if not os.path.exists(target):
        return "absent"
    checks = vecstore.verify(target)  # raises IntegrityError / FormatError on a partial file
    assert all(c.ok for c in checks)
    answers = _answers(target)
    for name, expected in candidates.items():
        if answers == expected:
            return name
    raise AssertionError(f"{target} opens and verifies but gives none of the expected answers: {list(answers)}")


def _campaign(kind: str, data: dict, workdir, report: list, errors: list) -> None:
    """KILLS_PER_COMMAND kills of one command, each checked; results appended to ``report``."""
    try:
        rng = np.random.default_rng([SEED, 0 if kind == "build" else 1])
        target = str(workdir / "store.vs")
        if kind == "build":
            def command(state):
                nxt = "b" if state == "a" else "a"
                return nxt, _cli("build", data[nxt]["npy"], target, "--metric", "l2", "--force", "--quiet")
            candidates = {"a": data["a"]["answers"], "b": data["b"]["answers"]}
            shutil.copyfile(data["a"]["ref"], target)
            state = "a"
            total, write = _timed_run(command(state)[1], target)
            state = "b"
        else:
            def command(state):
                return "a+int8", _cli("compress", target, "--codec", "int8", "--no-calibrate", "--quiet")
            candidates = {"a": data["a"]["answers"], "a+int8": data["a+int8"]["answers"]}
            shutil.copyfile(data["a"]["ref"], target)
            total, write = _timed_run(command("a")[1], target)
            state = "a"
        kills = attempts = 0
        while kills < KILLS_PER_COMMAND and attempts < 4 * KILLS_PER_COMMAND:
            attempts += 1
            if kind == "compress" and state != "a":
                shutil.copyfile(data["a"]["ref"], target)  # start each compress from the store without int8
                state = "a"
            fresh = kind == "build" and attempts % 4 == 0  # sometimes there is no previous store at all
            if fresh and state != "absent":
                os.unlink(target)
                state = "absent"
            elif not fresh and state == "absent":
                shutil.copyfile(data["a"]["ref"], target)
                state = "a"
            leftovers = _temporaries(target)
            nxt, cmd = command(state if state != "absent" else rng.choice(["a", "b"]))
            event = _kill_once(cmd, target, rng, total, write)
            after = _state(target, candidates)
            allowed = {state, nxt}
            assert after in allowed, f"{kind}: the target holds {after!r}, expected one of {allowed}: {event}"
            if event["during_write"]:  # the killed writer got as far as its own temporary: it first
                assert not (leftovers & _temporaries(target)), "stale temporaries were not removed"
            event.update(kind=kind, before=state, after=after, temporaries_left=len(_temporaries(target)))
            report.append(event)
            kills += event["killed"]
            state = after
        assert kills >= KILLS_PER_COMMAND, f"only {kills} of {attempts} {kind} runs were still alive at the kill"
        # the next uninterrupted write removes every temporary that the killed writers left
        if kind == "compress":
            shutil.copyfile(data["a"]["ref"], target)
            state = "a"
        nxt, cmd = command(state if state != "absent" else "a")
        run = subprocess.run(cmd, capture_output=True, text=True, env=ENV)
        assert run.returncode == 0, run.stderr
        assert _temporaries(target) == set(), "temporaries survived a complete write"
        assert _state(target, candidates) == nxt
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def test_sigkill_build_and_compress_leave_old_or_new_store(data, tmp_path):
    report: list[dict] = []
    errors: list[BaseException] = []
    threads = []
    for kind in ("build", "compress"):  # side by side: each waits on its own subprocess
        workdir = tmp_path / kind
        workdir.mkdir()
        threads.append(threading.Thread(target=_campaign, args=(kind, data, workdir, report, errors)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    kills = [e for e in report if e["killed"]]
    print(f"\n{len(kills)} SIGKILLs ({sum(e['kind'] == 'build' for e in kills)} build, "
          f"{sum(e['kind'] == 'compress' for e in kills)} compress); "
          f"{sum(e['during_write'] for e in kills)} while the writer's temporary existed; outcomes: "
          + ", ".join(f"{k}: {sum(1 for e in kills if (e['before'], e['after']) == k)}"
                      for k in sorted({(e["before"], e["after"]) for e in kills})))
    assert len(kills) >= 20
    assert sum(e["during_write"] for e in kills) >= 8, "too few kills landed during a write"
    # each outcome checked in _campaign: old store, new store, or nothing where nothing was before


def test_stale_temporaries_are_removed_only_when_their_writer_is_dead(tmp_path):
    target = str(tmp_path / "s.vs")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".s.vs{fmt.TMP_MARK}{dead_pid}-abcd1234"
    live = tmp_path / f".s.vs{fmt.TMP_MARK}{os.getpid()}-abcd1234"
    other = tmp_path / f".other.vs{fmt.TMP_MARK}{dead_pid}-abcd1234"
    for p in (stale, live, other):
        p.write_bytes(b"partial")
    vecstore.build(target, np.ones((3, 4), np.float32), progress=False).close()
    assert not stale.exists(), "a dead writer's temporary survived the next write"
    assert live.exists(), "a live writer's temporary was removed"
    assert other.exists(), "a temporary of another target was removed"
    with vecstore.open(target) as store:  # readers ignore temporaries
        assert store.count == 3


def test_write_is_fsynced_then_renamed_then_directory_fsynced(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = fmt._fsync_path, os.replace

    def fsync(path, directory=False):
        events.append(("fsync-dir" if directory else "fsync", os.path.basename(path)))
        real_fsync(path, directory)

    def replace(src, dst):
        events.append(("replace", os.path.basename(src), os.path.basename(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(fmt, "_fsync_path", fsync)
    monkeypatch.setattr(fmt.os, "replace", replace)
    vecstore.build(tmp_path / "s.vs", np.ones((3, 4), np.float32), progress=False).close()
    assert [e[0] for e in events] == ["fsync", "replace", "fsync-dir"]
    tmp = events[0][1]
    assert tmp.startswith(".s.vs" + fmt.TMP_MARK) and events[1] == ("replace", tmp, "s.vs")
    assert events[2] == ("fsync-dir", os.path.basename(str(tmp_path)))


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, MemoryError, RuntimeError])
def test_interrupted_write_leaves_the_old_store_and_no_temporary(tmp_path, interrupt):
    old = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    vecstore.build(tmp_path / "s.vs", old, progress=False).close()

    def chunks_then_interrupt():
        yield old[:10]
        raise interrupt("stop")

    source = vecstore.ingest.VectorSource("interrupting", (50, 4), np.dtype("f4"), None)
    source.chunks = lambda chunk_rows=None: ((i * 10, c) for i, c in enumerate(chunks_then_interrupt()))
    with pytest.raises(interrupt):
        vecstore.build(tmp_path / "s.vs", source, overwrite=True, progress=False)
    assert sorted(os.listdir(tmp_path)) == [".s.vs.lock", "s.vs"]  # build over a store takes its writer lock
    with vecstore.open(tmp_path / "s.vs") as store:
        np.testing.assert_array_equal(store.tier().codes, old)
