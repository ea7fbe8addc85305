"""The command line through click.testing: outputs for people, JSON for scripts, one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import SMALL_REAL
from vecstore.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def built(tmp_path, runner, rng):
    x = rng.standard_normal((500, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "keys.txt").write_text("\n".join(f"doc {i}" for i in range(500)))
    store = str(tmp_path / "s.vs")
    result = runner.invoke(cli, ["build", str(tmp_path / "x.npy"), store, "--metric", "l2",
                                 "--keys", str(tmp_path / "keys.txt"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "500 vectors x 16 dims, metric l2" in result.stdout
    return store, x


def test_info(runner, built):
    store, _ = built
    result = runner.invoke(cli, ["info", store])
    assert result.exit_code == 0
    assert "500 x 16 dims, metric l2" in result.stdout and "raw" in result.stdout
    data = json.loads(runner.invoke(cli, ["info", store, "--json"]).stdout)
    assert data["count"] == 500 and data["tiers"][0]["bytes_per_vector"] == 68


def test_search_vector_json_is_pure_json(runner, built):
    store, x = built
    vec = ",".join(str(v) for v in x[42])
    result = runner.invoke(cli, ["search", store, "--vector", vec, "-k", "3", "--json"])
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    hit = data["results"][0]
    assert hit["ids"][0] == 42 and hit["keys"][0] == "doc 42" and hit["distances"][0] < 1e-4


def test_search_queries_file_table(runner, built, tmp_path):
    store, x = built
    np.save(tmp_path / "q.npy", x[:3])
    result = runner.invoke(cli, ["search", store, str(tmp_path / "q.npy"), "-k", "2"])
    assert result.exit_code == 0
    assert result.stdout.count("query ") == 3 and "doc 1" in result.stdout


def test_search_k_beyond_count_emits_null_distances(runner, built):
    store, x = built
    vec = ",".join(str(v) for v in x[0])
    data = json.loads(runner.invoke(cli, ["search", store, "--vector", vec, "-k", "502", "--json"]).stdout)
    assert data["results"][0]["ids"][-1] == -1 and data["results"][0]["distances"][-1] is None


def test_search_shows_metadata_and_scores(runner, tmp_path, rng):
    x = rng.standard_normal((20, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "keys.txt").write_text("\n".join(f"doc {i}" for i in range(20)))
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps({"n": i}) if i % 2 else "" for i in range(20)))
    store = str(tmp_path / "m.vs")
    assert runner.invoke(cli, ["build", str(tmp_path / "x.npy"), store, "--metric", "cosine", "--keys",
                               str(tmp_path / "keys.txt"), "--metadata", str(tmp_path / "m.jsonl"),
                               "--quiet"]).exit_code == 0
    vec = ",".join(str(v) for v in x[3])
    text = runner.invoke(cli, ["search", store, "--vector", vec, "-k", "2"]).stdout
    assert "key    metadata" in text and 'doc 3  {"n":3}' in text
    data = json.loads(runner.invoke(cli, ["search", store, "--vector", vec, "-k", "21", "--json"]).stdout)
    hit = data["results"][0]
    assert hit["ids"][0] == 3 and hit["metadata"][0] == {"n": 3} and hit["metadata"][-1] is None
    assert hit["scores"] == hit["distances"] and hit["scores"][0] > 0.99 and hit["scores"][-1] is None
    assert None in hit["metadata"][:20]                   # rows without metadata are null


def test_search_without_metadata_has_no_metadata_field(runner, built):
    store, x = built
    vec = ",".join(str(v) for v in x[0])
    data = json.loads(runner.invoke(cli, ["search", store, "--vector", vec, "-k", "2", "--json"]).stdout)
    assert "metadata" not in data["results"][0] and data["results"][0]["scores"] == data["results"][0]["distances"]
    assert "metadata" not in runner.invoke(cli, ["search", store, "--vector", vec, "-k", "2"]).stdout


@pytest.mark.parametrize("kind, warning", [("gauss", None), ("unit", "unit-normalised"), ("integer", "integer values")])
def test_build_without_metric_states_it_and_warns(runner, tmp_path, rng, kind, warning):
    x = rng.standard_normal((50, 6))
    if kind == "unit":
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    elif kind == "integer":
        x = rng.integers(0, 3, (50, 6))
    np.save(tmp_path / "x.npy", x.astype(np.float32))
    result = runner.invoke(cli, ["build", str(tmp_path / "x.npy"), str(tmp_path / "s.vs"), "--quiet"])
    assert result.exit_code == 0
    assert "metric ip (the default: no --metric given)" in result.stdout
    if warning is None:
        assert result.stderr == ""
    else:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("warning: ") and warning in lines[0]
    given = runner.invoke(cli, ["build", str(tmp_path / "x.npy"), str(tmp_path / "s.vs"), "--force", "--quiet",
                                "--metric", "ip"])
    assert given.stderr == "" and "metric ip," in given.stdout
    hinted = runner.invoke(cli, ["build", SMALL_REAL, str(tmp_path / "r.vs"), "--quiet"])
    assert "metric cosine (the input file's distance" in hinted.stdout and hinted.stderr == ""


def test_compress_export_and_reuse_params(runner, built, tmp_path):
    store, x = built
    assert runner.invoke(cli, ["compress", store, "--codec", "pq4", "--train-size", "400", "--quiet"]).exit_code == 0
    out = tmp_path / "p.json"
    assert runner.invoke(cli, ["export-params", store, "pq4", str(out)]).exit_code == 0
    other = str(tmp_path / "t.vs")
    runner.invoke(cli, ["build", str(tmp_path / "x.npy"), other, "--metric", "l2", "--quiet"])
    result = runner.invoke(cli, ["compress", other, "--params", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    import vecstore

    with vecstore.open(store) as a, vecstore.open(other) as b:
        np.testing.assert_array_equal(a.tier("pq4").codes, b.tier("pq4").codes)
    result = runner.invoke(cli, ["search", store, "--vector", ",".join(map(str, x[0])), "--tier", "pq4", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["tier"] == "pq4"


def test_ann_benchmarks_input_and_test_queries(runner, tmp_path):
    store = str(tmp_path / "w.vs")
    result = runner.invoke(cli, ["build", SMALL_REAL, store, "--keys", f"{SMALL_REAL}:/train_lemmas", "--quiet"])
    assert result.exit_code == 0 and "metric cosine" in result.stdout
    result = runner.invoke(cli, ["search", store, SMALL_REAL, "--limit", "2", "-k", "3", "--json"])
    data = json.loads(result.stdout)
    assert len(data["results"]) == 2 and all(k for k in data["results"][0]["keys"])


@pytest.mark.parametrize("args, message", [
    (["info", "/nonexistent.vs"], "does not exist"),
    (["search", "STORE", "--vector", "1,2", "-k", "3"], "dimension 2"),
    (["search", "STORE", "--vector", "a,b"], "--vector must be numbers"),
    (["search", "STORE", "--vector", ",".join(["1"] * 16), "-k", "0"], "k must be >= 1"),
    (["search", "STORE", "--vector", ",".join(["1"] * 16), "--tier", "nope"], "no tier 'nope'"),
    (["compress", "STORE", "--codec", "zz9"], "unknown codec 'zz9'"),
    (["compress", "STORE", "--codec", "pq5"], "does not divide the dimension 16"),
    (["compress", "STORE", "--codec", "pca99"], "n_components 99 > dimension 16"),
    (["build", "NOTHERE.npy", "X.vs"], "does not exist"),
])
def test_errors_are_one_line_and_nonzero(runner, built, args, message):
    store, _ = built
    args = [store if a == "STORE" else a for a in args]
    result = runner.invoke(cli, args)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors_exit_2(runner, built):
    store, _ = built
    assert runner.invoke(cli, ["search", store]).exit_code == 2
    assert runner.invoke(cli, ["compress", store]).exit_code == 2


def test_python_dash_m(tmp_path):
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "vecstore", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "vecstore" in result.stdout
