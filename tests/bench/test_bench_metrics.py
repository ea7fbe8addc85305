"""benchmarks/bench_metrics.py end to end on the bundled 10,000-document subset, tiny counts: the
three metrics measured against their FAISS twins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_bench_metrics_runs_on_the_bundled_subset(tmp_path):
    data = os.path.join(ROOT, "data", "wordnet-minilm-384-small.hdf5")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_metrics.py"), "--data", data, "--nq", "20",
           "--single", "12", "--train-size", "4000", "--out", str(tmp_path), "--workdir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    [found] = [f for f in os.listdir(tmp_path) if f.startswith("metrics-") and f.endswith(".json")]
    with open(tmp_path / found) as f:
        result = json.load(f)
    rows = {row["metric"]: row for row in result["rows"]}
    assert list(rows) == ["cosine", "ip", "l2"]
    assert all(row["recall"] >= 0.8 and row["faiss_recall"] >= 0.8 and row["p50_ms"] > 0 and row["faiss_p50_ms"] > 0
               and row["qps"] > 0 for row in rows.values())
    table = (tmp_path / found.replace(".json", ".md")).read_text()
    assert "| l2 | pq96x4 > raw x" in table and "/ cosine" in table
