"""`vecstore bench` through click.testing: JSON rows, the PNG, FAISS rows, the recommendation, errors.

Tiny runs only (a 2,000-row slice of the bundled set, one thread): the figures themselves are
measured by benchmarks/, not here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import vecstore
from conftest import SMALL_REAL
from vecstore.bench import configs, inputs, report
from vecstore.bench.plot import pareto_front, plot_recall_vs_bytes
from vecstore.bench.recommend import faiss_fastest, parse_budget, recommend, resident_per_vector
from vecstore.cli import cli
from vecstore.ingest import from_array

ROW_FIELDS = ("system", "config", "codec", "rescore", "oversample", "n", "corpus_rows", "k", "threads",
              "code_bytes_per_vector", "resident_code_bytes_per_vector", "param_bytes",
              "resident_bytes_per_vector", "resident_bytes_total", "disk_bytes_per_vector",
              "recall_at_1", "recall_at_10", "recall_at_100", "recall_at_k", "recall_at_k_tie_tolerant",
              "qps", "p50_ms", "p99_ms", "train_s", "build_s")
QUICK = ["--threads", "1", "--single", "10", "--repeats", "1", "--quiet"]
QUICK_WITH_PROGRESS = QUICK[:-1]


def run(args):
    result = CliRunner().invoke(cli, ["bench", *args])
    return result


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    result = run([SMALL_REAL, "--n", "2000", "--holdout", "50", "--codecs", "int8;pq16", "--oversample", "4",
                  "--budget", "64B", "--out", str(out), "--json", *QUICK_WITH_PROGRESS])
    assert result.exit_code == 0, result.stderr + result.output
    assert "bench" in result.stderr                    # the progress bar went to stderr, stdout is JSON
    return json.loads(result.stdout), out


def test_json_rows_have_every_field(real_run):
    doc, _ = real_run
    rows = doc["rows"]
    assert {r["config"] for r in rows} == {"int8", "int8 > raw x4", "pq16", "pq16 > raw x4"}
    for row in rows:
        missing = [f for f in ROW_FIELDS if f not in row]
        assert not missing, (row["config"], missing)
        for f in ("recall_at_1", "recall_at_10", "recall_at_100", "recall_at_k", "recall_at_k_tie_tolerant"):
            assert 0.0 <= row[f] <= 1.0
        assert row["qps"] > 0 and 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["n"] == 1950 and row["corpus_rows"] == 10000 and row["threads"] == 1
    assert doc["workload"]["nq"] == 50 and doc["workload"]["metric"] == "cosine"


def test_faiss_twin_rows_are_present(real_run):
    doc, _ = real_run
    faiss = {r["config"]: r for r in doc["rows"] if r["system"] == "faiss"}
    assert faiss["int8"]["factory"] == "SQ8"
    assert faiss["pq16"]["factory"] == "PQ16np"
    assert faiss["pq16 > raw x4"]["factory"] == "PQ16np,RFlat k_factor=4"
    # FAISS keeps the refine vectors in RAM; vecstore leaves the raw tier mapped
    ours = {r["config"]: r for r in doc["rows"] if r["system"] == "vecstore"}
    assert faiss["pq16 > raw x4"]["resident_code_bytes_per_vector"] == 16 + 4 * 384
    assert ours["pq16 > raw x4"]["resident_code_bytes_per_vector"] == 16
    assert ours["pq16"]["param_bytes"] == 16 * 256 * 24 * 4
    # rescoring from raw can only help
    assert ours["pq16 > raw x4"]["recall_at_10"] >= ours["pq16"]["recall_at_10"]
    assert ours["int8"]["recall_at_10"] > 0.95


def test_outputs_written(real_run):
    doc, out = real_run
    assert (out / "recall-vs-bytes.png").stat().st_size > 10_000
    with open(out / "results.json") as fh:
        saved = json.load(fh)
    assert len(saved["rows"]) == len(doc["rows"]) == 8
    table = (out / "report.txt").read_text()
    assert "pq16 > raw x4" in table and "PQ16np,RFlat" in table and "recommendation:" in table


def test_budget_recommendation_is_within_budget(real_run):
    doc, _ = real_run
    rec = doc["recommendation"]
    if not rec["found"]:
        assert "no configuration fits" in rec["message"]
        return
    row = rec["row"]
    assert row["system"] == "vecstore"
    assert resident_per_vector(row) <= 64       # parameters spread over the whole input (10,000 rows)
    assert rec["codec"] == row["codec"] and rec["codec"] in ("pq16",)
    assert any(c.startswith("vecstore compress") and "--codec pq16" in c for c in rec["commands"])
    assert rec["commands"][-1].startswith("vecstore search") and f"--tier {rec['codec']}" in rec["commands"][-1]


def test_table_and_advice_count_bytes_alike(real_run):
    # 1,950 database rows measured, 10,000 input rows: parameters are spread over the 10,000 in both
    doc, _ = real_run
    ours = [r for r in doc["rows"] if r["system"] == "vecstore"]
    for row in ours:
        assert row["resident_bytes_per_vector"] == pytest.approx(resident_per_vector(row))
    assert ours[0]["n"] != ours[0]["corpus_rows"]
    rec = doc["recommendation"]
    table = report.format_table(doc)
    if rec["found"]:
        shown = f"{resident_per_vector(rec['row']):.1f}"
        assert f"resident {shown} B/vector" in rec["message"]
        line = next(l for l in table.splitlines() if l.startswith(rec["row"]["config"] + " "))
        assert line.split()[len(rec["row"]["config"].split())] == shown
    assert "parameters / 10,000 input rows" in table


def test_faiss_beside_the_advice(real_run):
    doc, _ = real_run
    rec = doc["recommendation"]                             # a budget-only run: FAISS within the budget
    assert rec["faiss"]["message"].startswith("FAISS's fastest within the budget")
    assert "beside it, FAISS's fastest" in report.format_table(doc)
    rows = doc["rows"]
    both = faiss_fastest(rows, budget_bytes_per_vector=64, target_recall=0.9)
    theirs = [r for r in rows if r["system"] == "faiss" and r["recall_at_k"] >= 0.9]
    assert both["at_target"]["qps"] == max(r["qps"] for r in theirs)
    assert both["at_target"]["factory"] in both["message"] and "recall@10 >= 0.9" in both["message"]
    assert faiss_fastest(rows) is None
    assert recommend(rows, target_recall=0.9).faiss["at_target"] == both["at_target"]


def test_plot_marks_budget_target_recommendation(real_run, tmp_path):
    doc, _ = real_run
    rec = recommend(doc["rows"], budget_total=parse_budget("1MB").total, target_recall=0.9,
                    corpus_rows=doc["workload"]["input_rows"])
    marked = dict(doc, recommendation=rec.to_dict())
    path = plot_recall_vs_bytes(marked, str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").stat().st_size > 10_000 and path.endswith("p.png")


def test_default_sweep_has_4bit_tiers_and_fast_scan_twins():
    for dim in (384, 4096, 100):
        fours = [c for c in configs.default_codecs(dim) if c.endswith("x4")]
        assert len(fours) == 2
    assert "pq96x4" in configs.default_codecs(384)
    assert configs.Config("pq48x4").twin_label() == "PQ48x4fs"
    assert configs.Config("pq48x4", "raw", 4.0).twin_label() == "PQ48x4fs,RFlat k_factor=4"
    assert configs.Config("pq48x4", "float16", 2.0).twin_label() == "PQ48x4fs,Refine(SQfp16) k_factor=2"


def test_default_sweep_skips_codecs_that_cannot_train(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((200, 8)).astype(np.float32))  # 180 rows after holdout
    result = run([str(tmp_path / "x.npy"), "--oversample", "2", "--json", *QUICK])
    assert result.exit_code == 0, result.stderr + result.output
    doc = json.loads(result.stdout)
    assert [s["codec"] for s in doc["skipped"]] == ["pq1"]
    assert "needs at least 256 training vectors" in doc["skipped"][0]["reason"]
    assert "skipped pq1: needs at least 256" in result.stderr
    ran = {r["codec"] for r in doc["rows"]}
    assert "pq1" not in ran and {"raw", "int8", "pq1x4", "pq2x4"} <= ran
    assert "skipped pq1" in report.format_table(doc)


def test_table_from_rows(real_run):
    doc, _ = real_run
    text = report.format_table(doc)
    assert "FAISS res/ours" in text and "int8 > raw x4" in text and doc["workload"]["name"] in text


def test_recommend_target_recall_and_none_fits(real_run):
    doc, _ = real_run
    rows = doc["rows"]
    best = recommend(rows, target_recall=0.95)
    assert best.found and best.row["recall_at_k"] >= 0.95
    assert best.codec == best.row["codec"] and best.commands[-1].startswith("vecstore search")
    fitting = [r for r in rows if r["system"] == "vecstore" and r["recall_at_k"] >= 0.95]
    assert best.row["qps"] == max(r["qps"] for r in fitting)
    none = recommend(rows, budget_bytes_per_vector=4)
    assert not none.found and "no configuration fits" in none.message
    unreachable = recommend(rows, budget_total=parse_budget("1MB").total, target_recall=1.0)
    assert not unreachable.found or unreachable.row["recall_at_k"] == 1.0


def test_store_input_with_queries_and_ground_truth_file(tmp_path, rng):
    x = rng.standard_normal((400, 16)).astype(np.float32)
    q = rng.standard_normal((12, 16)).astype(np.float32)
    vecstore.build(str(tmp_path / "s.vs"), x, metric="l2", progress=False).close()
    np.save(tmp_path / "q.npy", q)
    gt = np.argsort(((q[:, None, :] - x[None]) ** 2).sum(axis=2), axis=1, kind="stable")[:, :20]
    np.save(tmp_path / "gt.npy", gt)
    result = run([str(tmp_path / "s.vs"), "--queries", str(tmp_path / "q.npy"), "--ground-truth",
                  str(tmp_path / "gt.npy"), "--codecs", "raw;float16;pq4", "--rescore", "raw,float16",
                  "--oversample", "2", "--json", *QUICK])
    assert result.exit_code == 0, result.stderr + result.output
    doc = json.loads(result.stdout)
    assert doc["workload"]["kind"] == "store" and doc["workload"]["metric"] == "l2"
    ours = {r["config"]: r for r in doc["rows"] if r["system"] == "vecstore"}
    assert set(ours) == {"raw", "float16", "pq4", "pq4 > raw x2", "pq4 > float16 x2"}
    assert ours["raw"]["recall_at_10"] == 1.0 and ours["raw"]["recall_at_100"] is None  # truth is 20 deep
    assert ours["pq4"]["resident_code_bytes_per_vector"] == 4 + 4          # codes + the l2 norm
    faiss = {r["config"]: r for r in doc["rows"] if r["system"] == "faiss"}
    assert faiss["pq4 > float16 x2"]["factory"] == "PQ4np,Refine(SQfp16) k_factor=2"
    assert any("vecstore compress" in c and "float16" in c for c in ours["pq4 > float16 x2"]["commands"])


def test_npy_input_default_holdout_and_table(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((300, 8)).astype(np.float32))
    result = run([str(tmp_path / "x.npy"), "--codecs", "int8", "--rescore", "none", "--budget", "4KiB",
                  *QUICK])
    assert result.exit_code == 0, result.stderr + result.output
    assert "30 rows held out" in result.stdout and "recommendation:" in result.stdout
    assert "vecstore build" in result.stdout and "--tier int8" in result.stdout


def test_workload_uses_shipped_ground_truth_only_for_the_whole_file():
    whole = inputs.load_workload(SMALL_REAL)
    assert whole.groundtruth_from.startswith("shipped") and whole.groundtruth.shape == (200, 100)
    assert whole.kind == "ann-benchmarks" and whole.metric == "cosine" and whole.nb == 10000
    cut = inputs.load_workload(SMALL_REAL, n=2000)
    assert cut.groundtruth is None and cut.nb == 2000 and cut.name.endswith("-n2000") and cut.input_rows == 10000


def test_holdout_rows_leave_the_database(rng):
    x = rng.standard_normal((1000, 4)).astype(np.float32)
    held = np.array([0, 5, 6, 999])
    source = inputs._without_rows(from_array(x), held)
    assert source.shape == (996, 4)
    got = np.vstack([rows for _, rows in source.chunks(chunk_rows=97)])
    np.testing.assert_array_equal(got, np.delete(x, held, axis=0))
    np.testing.assert_array_equal(inputs._read_rows(from_array(x), held), x[held])


# -- budgets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, per_vector, total", [
    ("64B", 64, None), ("64 B", 64, None), ("64b", 64, None), ("12.5B/vector", 12.5, None),
    ("1KiB/vec", 1024, None), ("50MB", None, 50e6), ("50 mb", None, 50e6), ("1.5GiB", None, 1.5 * 2 ** 30),
    ("800KiB", None, 800 * 1024), ("2TB", None, 2e12), ("1e3kB", None, 1e6),
])
def test_parse_budget(text, per_vector, total):
    budget = parse_budget(text)
    assert budget.per_vector == per_vector and budget.total == total


@pytest.mark.parametrize("text", ["", "64", "sixty-four B", "64 bananas", "-5B", "0B", "0MB", "64XB", "B"])
def test_parse_budget_refuses(text):
    with pytest.raises(vecstore.InvalidInputError, match="budget"):
        parse_budget(text)


def test_parse_lists():
    assert configs.parse_codec_list("float16; int8;pca128,int8  pq64;raw", 384) == \
        ["float16", "int8", "pca128,int8", "pq64", "raw"]
    assert configs.parse_oversamples("1,2, 4") == (1.0, 2.0, 4.0)
    assert configs.parse_rescore("none") == () and configs.parse_rescore("float16,raw") == ("float16", "raw")
    for dim in (384, 4096, 100, 7):
        codecs = configs.default_codecs(dim)
        assert codecs[0] == "raw" and all(configs.canonical_codec(c, dim) == c for c in codecs)
    with pytest.raises(vecstore.InvalidInputError, match="below 1"):
        configs.parse_oversamples("0.5")
    with pytest.raises(vecstore.InvalidInputError, match="cannot rescore"):
        configs.parse_rescore("pq16")


def test_pareto_front():
    rows = [{"config": c, "resident_bytes_per_vector": b, "recall_at_10": r}
            for c, b, r in [("a", 8, 0.5), ("b", 16, 0.4), ("c", 16, 0.7), ("d", 64, 0.7), ("e", 128, 0.99)]]
    assert [r["config"] for r in pareto_front(rows)] == ["a", "c", "e"]


# -- bad input: one line on stderr, exit 1 ----------------------------------------------------------------


def _one_line_error(result, *needles):
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert result.stdout == ""


def test_unknown_codec(tmp_path):
    _one_line_error(run([SMALL_REAL, "--n", "500", "--holdout", "10", "--codecs", "int8;foo16", "--quiet"]),
                    "unknown codec 'foo16'")


def test_codec_that_does_not_fit_the_dimension():
    _one_line_error(run([SMALL_REAL, "--n", "500", "--holdout", "10", "--codecs", "pq7", "--quiet"]),
                    "does not divide the dimension 384")


def test_budget_that_does_not_parse():
    _one_line_error(run([SMALL_REAL, "--n", "500", "--budget", "64 bananas", "--quiet"]), "--budget")


def test_holdout_larger_than_input():
    _one_line_error(run([SMALL_REAL, "--n", "100", "--holdout", "200", "--codecs", "int8", "--quiet"]),
                    "--holdout 200", "100 input vectors")


def test_bad_oversample_and_rescore():
    _one_line_error(run([SMALL_REAL, "--n", "500", "--oversample", "0", "--quiet"]), "--oversample")
    _one_line_error(run([SMALL_REAL, "--n", "500", "--rescore", "pq16", "--quiet"]), "--rescore")


def test_ground_truth_with_holdout_and_missing_input(tmp_path):
    np.save(tmp_path / "gt.npy", np.zeros((10, 10), dtype=np.int64))
    _one_line_error(run([SMALL_REAL, "--n", "500", "--holdout", "10", "--ground-truth", str(tmp_path / "gt.npy"),
                         "--quiet"]), "--ground-truth")
    _one_line_error(run([str(tmp_path / "nope.npy"), "--quiet"]), "does not exist")


def test_too_few_training_rows_for_pq(tmp_path, rng):
    np.save(tmp_path / "x.npy", rng.standard_normal((120, 8)).astype(np.float32))
    _one_line_error(run([str(tmp_path / "x.npy"), "--codecs", "pq4", "--quiet"]), "needs at least 256 training")


def test_ivf_codecs_are_swept_beside_faiss_ivf_twins(tmp_path):
    out = tmp_path / "out"
    result = run([SMALL_REAL, "--n", "2000", "--holdout", "30", "--codecs", "ivf16,pq16x4", "--oversample", "4",
                  "--train-size", "1000", "--out", str(out), "--json", *QUICK])
    assert result.exit_code == 0, result.stderr + result.output
    rows = {(r["system"], r["config"]): r for r in json.loads(result.stdout)["rows"]}
    assert rows[("faiss", "ivf16,pq16x4")]["factory"] == "IVF16,PQ16x4fs"
    assert rows[("faiss", "ivf16,pq16x4 > raw x4")]["factory"] == "IVF16,PQ16x4fs,RFlat k_factor=4"
    # both probe the same lists (ceil(16 / 16) = 1 without calibration): recall of the same order
    ours, theirs = rows[("vecstore", "ivf16,pq16x4 > raw x4")], rows[("faiss", "ivf16,pq16x4 > raw x4")]
    assert 0.3 < ours["recall_at_10"] and abs(ours["recall_at_10"] - theirs["recall_at_10"]) < 0.2
