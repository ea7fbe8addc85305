"""Concurrency: many threads and processes searching one store, and a writer replacing it.

- 8 threads and 4 processes (spawn start method) search one store at the same time, over every tier,
  batch sizes on both sides of the BLAS switch, and two-stage search; every answer must equal the
  serial answer bit for bit.
- While a writer replaces the store (``vecstore.build(..., overwrite=True)``: new file, rename),
  stores opened before keep answering from their mapping (the old answers), in threads and in a
  process, and every open after the rename sees the new store.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time

import numpy as np
import pytest

import vecstore

N, DIM = 10_000, 32
TIERS = ("raw", "int8", "float16", "pq8x4")
BATCHES = (1, 8, 40)  # 40 >= search.GEMM_MIN_QUERIES: the BLAS path
REPEATS = 2
THREADS, PROCESSES = 8, 4


def _queries() -> dict[int, np.ndarray]:
    rng = np.random.default_rng(123)
    return {nq: rng.standard_normal((nq, DIM)).astype(np.float32) for nq in BATCHES}


def _plan() -> list[tuple[str, int, dict]]:
    """Every (operation, batch, search options) a searcher runs."""
    ops = [(f"tier {t}", nq, {"tier": t}) for t in TIERS for nq in BATCHES]
    ops += [("pq8x4 rescored from raw", nq, {"tier": "pq8x4", "rescore": "raw", "oversample": 4}) for nq in BATCHES]
    ops += [("default", nq, {}) for nq in BATCHES]
    return ops


def run_searches(store, seed: int, repeats: int = REPEATS) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """The plan ``repeats`` times in a seeded shuffled order: (op index, distances, ids) per search."""
    queries, plan = _queries(), _plan()
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(repeats):
        for i in rng.permutation(len(plan)):
            _, nq, options = plan[i]
            D, I = store.search(queries[nq], 10, **options)
            out.append((int(i), D, I))
    return out


def _compare(results, serial) -> list[str]:
    plan = _plan()
    bad = []
    for i, D, I in results:
        if not (np.array_equal(I, serial[i][1]) and np.array_equal(D, serial[i][0])):
            bad.append(plan[i][0] + f" nq={plan[i][1]}")
    return bad


def process_searcher(path, serial, seed, barrier, results):
    """Child process: open, wait for everyone, search, report (queries, mismatches)."""
    try:
        with vecstore.open(path) as store:
            barrier.wait(timeout=120)
            found = run_searches(store, seed)
        results.put(("ok", seed, sum(D.shape[0] for _, D, _ in found), _compare(found, serial)))
    except BaseException as exc:  # reported by the parent
        results.put(("error", seed, 0, [f"{type(exc).__name__}: {exc}"]))


def process_reader_across_replace(path, old, new, opened, replaced, results):
    """Child process: open the store, wait until the parent replaced the file, then search twice:
    on the store opened before (old answers) and on a store opened now (new answers)."""
    try:
        with vecstore.open(path) as before:
            opened.set()
            if not replaced.wait(timeout=120):
                raise TimeoutError("the parent never replaced the store")
            got_old = run_searches(before, seed=1, repeats=2)
        with vecstore.open(path) as after:
            got_new = run_searches(after, seed=2, repeats=1)
        results.put(("ok", _compare(got_old, old), _compare(got_new, new), len(got_old) + len(got_new)))
    except BaseException as exc:
        results.put(("error", [f"{type(exc).__name__}: {exc}"], [], 0))


def _build(path, seed, count=N, overwrite=False):
    x = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    vecstore.build(path, x, metric="l2", overwrite=overwrite, progress=False).close()
    for codec in TIERS[1:]:
        vecstore.compress(path, codec, train_size=4096, calibrate=False, progress=False).close()
    return path


def _serial(path) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    queries = _queries()
    with vecstore.open(path) as store:
        return {i: tuple(store.search(queries[nq], 10, **options)) for i, (_, nq, options) in enumerate(_plan())}


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("concurrency")
    a, b = _build(str(root / "a.vs"), 1), _build(str(root / "b.vs"), 2)
    return {"a": a, "b": b, "serial_a": _serial(a), "serial_b": _serial(b)}


def test_8_threads_and_4_processes_match_serial(stores):
    path, serial = stores["a"], stores["serial_a"]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(PROCESSES + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=process_searcher, args=(path, serial, 100 + p, barrier, results))
             for p in range(PROCESSES)]
    for p in procs:
        p.start()
    thread_results: dict[int, list] = {}
    errors = []
    start = threading.Barrier(THREADS + 1)

    def thread_searcher(t, store):
        try:
            start.wait(timeout=120)
            thread_results[t] = run_searches(store, seed=t)
        except BaseException as exc:
            errors.append(exc)

    with vecstore.open(path) as store:  # one open store shared by all threads
        threads = [threading.Thread(target=thread_searcher, args=(t, store)) for t in range(THREADS)]
        for t in threads:
            t.start()
        barrier.wait(timeout=120)  # the processes have opened the store: everyone starts together
        start.wait(timeout=120)
        for t in threads:
            t.join()
    reports = [results.get(timeout=300) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert not errors, errors
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    thread_queries = sum(D.shape[0] for found in thread_results.values() for _, D, _ in found)
    thread_bad = {t: _compare(found, serial) for t, found in thread_results.items()}
    process_bad = {seed: bad for _, seed, _, bad in reports}
    process_queries = sum(n for _, _, n, _ in reports)
    print(f"\n{THREADS} threads: {thread_queries} queries; {PROCESSES} processes: {process_queries} queries; "
          f"mismatches: threads {sum(map(len, thread_bad.values()))}, processes {sum(map(len, process_bad.values()))}")
    assert all(status == "ok" for status, *_ in reports), reports
    assert len(thread_results) == THREADS and all(not bad for bad in thread_bad.values()), thread_bad
    assert all(not bad for bad in process_bad.values()), process_bad


def test_a_process_compiling_the_kernels_answers_as_one_loading_them(stores, tmp_path, monkeypatch):
    """A searcher whose numba cache is empty compiles every kernel itself; this process uses the
    ones it compiled or loaded from the cache: the answers must still agree bit for bit. (A scan
    compiled with reassoc summed a 4-bit row's exact score in another order when loaded from the
    cache: kernels/fastscan.py's _exact.)"""
    path, serial = stores["a"], stores["serial_a"]
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "empty-numba-cache"))  # the child's environment
    child = ctx.Process(target=process_searcher, args=(path, serial, 7, barrier, results))
    child.start()
    monkeypatch.delenv("NUMBA_CACHE_DIR")
    barrier.wait(timeout=300)
    status, _, queries, bad = results.get(timeout=600)
    child.join(timeout=60)
    assert status == "ok" and queries > 0, bad
    assert (tmp_path / "empty-numba-cache").exists()  # the child compiled into it
    assert not bad, f"answers of a process that compiled its kernels differ: {bad}"


def test_open_readers_keep_their_mapping_while_a_writer_replaces_the_store(stores, tmp_path):
    path = str(tmp_path / "live.vs")
    with open(stores["a"], "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    old, new = stores["serial_a"], stores["serial_b"]
    ctx = multiprocessing.get_context("spawn")
    opened, replaced, results = ctx.Event(), ctx.Event(), ctx.Queue()
    child = ctx.Process(target=process_reader_across_replace, args=(path, old, new, opened, replaced, results))
    child.start()

    readers = [vecstore.open(path) for _ in range(4)]
    stop = threading.Event()
    counts = {"searches": 0, "queries": 0, "after_replace": 0}
    bad: list[str] = []
    errors = []
    done_replacing = threading.Event()

    def reader(i, store):
        try:
            k = 0
            while not stop.is_set():
                found = run_searches(store, seed=1000 + 10 * i + k, repeats=1)
                bad.extend(_compare(found, old))
                counts["searches"] += len(found)
                counts["queries"] += sum(D.shape[0] for _, D, _ in found)
                if done_replacing.is_set():
                    counts["after_replace"] += len(found)
                k += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i, s)) for i, s in enumerate(readers)]
    for t in threads:
        t.start()
    assert opened.wait(timeout=120), "the child process never opened the store"
    time.sleep(0.2)
    # the writer: a new file renamed over the old one (then three more for the tiers), while they search
    vecstore.build(path, _vectors(2), metric="l2", overwrite=True, progress=False).close()
    for codec in TIERS[1:]:
        vecstore.compress(path, codec, train_size=4096, calibrate=False, progress=False).close()
    done_replacing.set()
    replaced.set()
    with vecstore.open(path) as fresh:  # a new open sees the new store
        assert not _compare(run_searches(fresh, seed=5, repeats=1), new)
    deadline = time.perf_counter() + 30
    while counts["after_replace"] < 4 * len(_plan()) and time.perf_counter() < deadline:
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    for s in readers:
        s.close()
    status, child_bad_old, child_bad_new, child_searches = results.get(timeout=300)
    child.join(timeout=60)
    print(f"\nreaders across the replacement: {counts['searches']} searches ({counts['queries']} queries) in 4 "
          f"threads, {counts['after_replace']} of them after it; {child_searches} searches in a process; "
          f"mismatches {len(bad)}")
    assert not errors, errors
    assert status == "ok", child_bad_old
    assert not bad, f"threads that opened before the replacement answered differently: {bad[:10]}"
    assert counts["after_replace"] >= 4 * len(_plan())
    assert not child_bad_old, f"process reader, store opened before: {child_bad_old[:10]}"
    assert not child_bad_new, f"process reader, store opened after: {child_bad_new[:10]}"


def _vectors(seed, count=N):
    return np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)


def test_opens_racing_a_replacement_see_one_complete_store(stores, tmp_path):
    """Opens while the file is replaced again and again (with stores of other sizes): each open gives
    the old or the new store, whole; none fails."""
    path = str(tmp_path / "race.vs")
    small = str(tmp_path / "small.vs")
    vecstore.build(small, _vectors(3, N // 2), metric="l2", progress=False).close()
    sources = [stores["a"], small]
    expected = [stores["serial_a"], {i: tuple(r) for i, r in _serial_raw(small).items()}]
    with open(stores["a"], "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    for source in sources:  # compile the search kernels before the race (a fresh numba cache took the
        with vecstore.open(source) as store:  # whole race to compile them: 14 opens, not 20)
            store.search(_queries()[8], 10, tier="raw")
    stop = threading.Event()
    outcomes: "queue.Queue[str]" = queue.Queue()

    def opener():
        queries = _queries()
        while not stop.is_set():
            try:
                with vecstore.open(path) as store:
                    D, I = store.search(queries[8], 10, tier="raw")
            except vecstore.VecstoreError as exc:
                outcomes.put(f"{type(exc).__name__}: {exc}")
                continue
            i = _raw_index(8)
            which = [n for n, exp in enumerate(expected) if np.array_equal(I, exp[i][1])]
            outcomes.put("ok" if which else "mixed")

    threads = [threading.Thread(target=opener) for _ in range(2)]
    for t in threads:
        t.start()
    r = 0
    # replace atomically, as vecstore's writer does: copy beside, rename over; at least 30 times, and
    # on until 20 opens have raced them (a loaded machine managed 19 opens in 30 replacements)
    while r < 30 or (outcomes.qsize() < 20 and r < 3000):
        tmp = path + ".incoming"
        with open(sources[(r + 1) % 2], "rb") as src, open(tmp, "wb") as dst:
            dst.write(src.read())
        os.replace(tmp, path)
        time.sleep(0.01)
        r += 1
    stop.set()
    for t in threads:
        t.join()
    seen = []
    while not outcomes.empty():
        seen.append(outcomes.get())
    failures = [s for s in seen if s != "ok"]
    print(f"\n{len(seen)} opens racing {r} replacements: {len(failures)} failed or mixed: {sorted(set(failures))[:3]}")
    assert len(seen) >= 20
    assert not failures, failures[:5]


def _raw_index(nq):
    return next(i for i, (name, b, _) in enumerate(_plan()) if name == "tier raw" and b == nq)


def _serial_raw(path):
    queries = _queries()
    with vecstore.open(path) as store:
        return {i: store.search(queries[nq], 10, **options) for i, (name, nq, options) in enumerate(_plan())
                if name == "tier raw"}


@pytest.mark.parametrize("swap", ["size", "aba"])
def test_open_reads_header_and_data_from_the_same_file(stores, tmp_path, monkeypatch, swap):
    from vecstore.format import schema as fmt

    path = str(tmp_path / "s.vs")
    small = str(tmp_path / "small.vs")
    vecstore.build(small, _vectors(3, N // 2), metric="l2", progress=False).close()
    big = stores["a"]

    def put(source):
        with open(source, "rb") as src, open(path + ".in", "wb") as dst:
            dst.write(src.read())
        os.replace(path + ".in", path)

    put(big)
    real_header, real_map = fmt._read_header_from, fmt.FileMap.__init__
    if swap == "aba":  # the path is replaced before the header is read, and again before the map
        monkeypatch.setattr(fmt, "_read_header_from", lambda *a: (put(small), real_header(*a))[1])
        monkeypatch.setattr(fmt.FileMap, "__init__", lambda self, fd, size: (put(big), real_map(self, fd, size))[1])
    else:  # the store is replaced by another one after its header was read
        monkeypatch.setattr(fmt.FileMap, "__init__", lambda self, fd, size: (put(small), real_map(self, fd, size))[1])
    with vecstore.open(path) as store:
        D, I = store.search(_queries()[8], 10, tier="raw")
    i = _raw_index(8)
    assert any(np.array_equal(I, exp[i][1]) for exp in (stores["serial_a"], _serial_raw(small)))
