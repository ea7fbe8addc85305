"""benchmarks/bench_filters.py (issue 18) end to end on the bundled 10,000-document subset, tiny
counts: every case measured, the strategies the rule gives, recall against exact filtered truth."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT


def test_bench_filters_runs_on_the_bundled_subset(tmp_path):
    data = os.path.join(ROOT, "data", "wordnet-minilm-384-small.hdf5")
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "bench_filters.py"), "--data", data, "--nq", "20",
           "--single", "12", "--big", "20000", "--train-size", "4000", "--out", str(tmp_path),
           "--workdir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    [found] = [f for f in os.listdir(tmp_path) if f.startswith("filters-") and f.endswith(".json")]
    with open(tmp_path / found) as f:
        result = json.load(f)
    rows = {row["case"]: row for row in result["rows"]}
    assert list(rows) == ["none", "50%", "10%", "1%", "0.1%", "0.01%", "two fields"]
    assert rows["none"]["strategy"] == "unfiltered" and rows["50%"]["strategy"] == "filtered-two-stage"
    assert rows["0.01%"]["strategy"] == "exact" and rows["0.01%"]["recall"] == 1.0
    assert all(row["recall"] >= 0.8 and row["p50_ms"] > 0 and row["faiss_p50_ms"] > 0 for row in rows.values())
    assert result["predicate_big_rows"] == 20000 and result["crossover"]
    table = (tmp_path / found.replace(".json", ".md")).read_text()
    assert "p50 / unfiltered" in table and table.count("| filtered-two-stage |") == 3
