"""The helpers of benchmarks/bench_realtime.py (issue 17), at tiny sizes."""

from __future__ import annotations

import importlib.util
import mmap
import os
from collections import Counter

import numpy as np
import pytest
from conftest import ROOT

from vecstore.bench import metrics

_spec = importlib.util.spec_from_file_location("bench_realtime", os.path.join(ROOT, "benchmarks", "bench_realtime.py"))
rt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rt)


def _row(config, recall, p50, qps=1.0, resident=48.0, code=48):
    return {"config": config, "recall_at_10": recall, "p50_ms": p50, "qps": qps,
            "resident_bytes_per_vector": resident, "code_bytes": code}


def test_fastest_respects_target_and_budget():
    rows = [_row("slow", 0.99, 0.5), _row("fast-low-recall", 0.90, 0.1), _row("fast-big", 0.97, 0.2, resident=66.6, code=64),
            _row("ok", 0.96, 0.3)]
    assert rt.fastest(rows)["config"] == "fast-big"
    assert rt.fastest(rows, budget=64)["config"] == "ok"
    assert rt.fastest(rows, budget=64, key="code_bytes")["config"] == "fast-big"
    assert rt.fastest(rows, target=0.999) is None


def test_verdict_and_sweep_values():
    # the targets' verdict is vecstore.bench.metrics.verdict, which bench_ivf.py uses too
    assert metrics.verdict(0.9, 1.0, higher_is_better=False) == "met"
    assert metrics.verdict(1.1, 1.0, higher_is_better=False) == "MISSED"
    assert metrics.verdict(0.95, 0.9, higher_is_better=True) == "met"
    assert metrics.verdict(None, 1.0, higher_is_better=True) == "n/a"
    assert rt.sweep_values("1 2,4  8") == [1.0, 2.0, 4.0, 8.0]


def test_pread_rows_reads_exactly_the_rows(tmp_path):
    rows = np.arange(40, dtype=np.float32).reshape(10, 4)
    path = tmp_path / "rows.bin"
    header = b"x" * 100
    path.write_bytes(header + rows.tobytes())
    fd = os.open(path, os.O_RDONLY)
    try:
        assert rt.pread_rows(fd, len(header), 16, np.array([7, 2, 2])) == 3 * 16
    finally:
        os.close(fd)


def test_drop_cached_and_io_counter(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(1 << 16))
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        assert mm[:4] is not None
        left = rt.drop_cached(mm, str(path))
    assert left is None or 0.0 <= left <= 1.0
    before = rt.io_read_bytes()
    assert before is None or before >= 0


def test_round_robin_timing_gives_each_call_a_fresh_query():
    # metrics.time_round_robin: the single-query timing of bench_realtime.py and bench_ivf.py
    seen = {"a": [], "b": []}
    xq = np.repeat(np.arange(6, dtype=np.float32)[:, None], 2, axis=1)  # row i holds i
    out = metrics.time_round_robin({"a": lambda q: seen["a"].append(int(q[0, 0])),
                                    "b": lambda q: seen["b"].append(int(q[0, 0]))},
                                   {"a": xq, "b": xq}, 3, warmup=1)
    assert [len(v) for v in out.values()] == [3, 3]
    assert len(seen["a"]) + len(seen["b"]) == 8
    timed = seen["a"][1:] + seen["b"][1:]  # after each one's warm-up call
    assert sorted(timed) == list(range(6))  # 6 timed calls, 6 different queries


def test_round_robin_timing_varies_which_system_precedes_which():
    """Three or more systems: none mostly follows the same other (an order rotated each round made
    each follow its predecessor in the list in 3 rounds of 4, and so inherit its caches)."""
    calls = []
    fns = {name: (lambda q, name=name: calls.append(name)) for name in "abcd"}
    metrics.time_round_robin(fns, np.zeros((8, 2), dtype=np.float32), 400, warmup=0)
    follows = Counter(zip(calls, calls[1:]))
    for name in "abcd":
        before = [count for (_, after), count in follows.items() if after == name]
        assert max(before) / sum(before) < 0.4


def test_parse_args_refuses_unknown_parts():
    assert rt.parse_args(["--part", "small,startup"]).parts == ["small", "startup"]
    with pytest.raises(SystemExit):
        rt.parse_args(["--part", "nope"])
