"""ports/java against vecstore: compile the reference port with javac, run it on conformance/v1, and
compare every case with vecstore's own results (identical ids, scores within the stated tolerance,
encoder vectors, tokens). Skipped, with the reason, where no JDK is installed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest

from conftest import ROOT

JAVA_SRC = os.path.join(ROOT, "ports", "java", "src", "vecstore")
CONFORMANCE = os.path.join(ROOT, "conformance", "v1")


@pytest.fixture(scope="module")
def java_lines(tmp_path_factory):
    if shutil.which("javac") is None or shutil.which("java") is None:
        pytest.skip("javac/java not on PATH: install a JDK (17 or later) to check the Java port")
    classes = tmp_path_factory.mktemp("java")
    sources = sorted(os.path.join(JAVA_SRC, n) for n in os.listdir(JAVA_SRC) if n.endswith(".java"))
    subprocess.run(["javac", "--release", "17", "-d", str(classes), *sources], check=True,
                   capture_output=True, text=True, timeout=300)
    run = subprocess.run(["java", "-cp", str(classes), "vecstore.Conformance", CONFORMANCE],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode in (0, 1), run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


@pytest.fixture(scope="module")
def expected():
    with open(os.path.join(CONFORMANCE, "expected.json"), encoding="utf-8") as fh:
        return json.load(fh)


def _scores(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def test_java_searches_agree_with_vecstore(java_lines, expected, capsys):
    tol = expected["tolerance"]["score_abs"]
    searches = [line for line in java_lines if line["kind"] == "search"]
    single = [c for c in expected["searches"] if "segments" not in expected["stores"][c["store"]]]
    assert len(searches) == len(single) > 100
    worst = 0.0
    for line in searches:
        case = expected["searches"][line["index"]]
        assert line["ids"] == case["ids"], (case["store"], case["tier"], case["rescore"], case["query"])
        assert line.get("strategy") == case.get("strategy"), case
        diff = np.abs(_scores(line["scores"]) - _scores(case["scores"]))
        worst = max(worst, float(np.max(diff[~np.isnan(diff)], initial=0.0)))   # all padding: no score
    assert worst <= tol
    with capsys.disabled():
        print(f"\nJava port: {len(searches)} searches, ids identical, max abs score error {worst:.3g}")


def test_java_filters_admit_the_same_rows(java_lines, expected):
    """The port parses and evaluates every where= (docs/filters.md) on the fields it reads from the
    file (docs/format.md, Fields) and applies allow=: the same admitted ids as vecstore."""
    lines = [line for line in java_lines if line["kind"] == "filter"]
    assert len(lines) == len(expected["filters"]) >= 10
    for line in lines:
        assert line["admitted"] == expected["filters"][line["index"]]["admitted"], expected["filters"][line["index"]]
    filtered = [line for line in java_lines if line["kind"] == "search" and "strategy" in line]
    assert len(filtered) == sum("strategy" in c for c in expected["searches"]) > 100


def test_java_encoders_agree_with_vecstore(java_lines, expected):
    tol = expected["tolerance"]["vector_abs"]
    lines = [line for line in java_lines if line["kind"] == "encode"]
    assert len(lines) == sum(len(e["texts"]) for s in expected["stores"].values()
                             for e in s.get("encoders", {}).values())
    for line in lines:
        case = expected["stores"][line["store"]]["encoders"][line["encoder"]]["texts"][line["text"]]
        assert line["tokens"] == case["tokens"] and line["unknown"] == case["unknown"], case["text"]
        np.testing.assert_allclose(line["vector"], case["vector"], rtol=0, atol=tol)
        if "ids" in case:
            assert line["ids"] == case["ids"], case["text"]
            np.testing.assert_allclose(line["scores"], case["scores"], rtol=0, atol=expected["tolerance"]["score_abs"])


def test_java_summary_is_ok(java_lines):
    summary = java_lines[-1]
    assert summary["kind"] == "summary" and summary["ok"], summary
    assert summary["ids_identical"] == summary["cases"]
    assert summary["filter_mismatches"] == 0 and summary["strategy_mismatches"] == 0
