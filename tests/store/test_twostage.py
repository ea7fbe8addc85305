"""Two-stage search: scan a coarse tier, rescore candidates from a finer one; calibration; residency."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import vecstore
from common import assert_knn, reference_scores
from conftest import make_store
from vecstore.cli import cli


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(7)
    centers = rng.standard_normal((40, 32)).astype(np.float32)
    x = (centers[rng.integers(0, 40, 3000)] + 0.3 * rng.standard_normal((3000, 32))).astype(np.float32)
    xq = (centers[rng.integers(0, 40, 30)] + 0.3 * rng.standard_normal((30, 32))).astype(np.float32)
    return x, xq


@pytest.fixture(scope="module")
def stores(tmp_path_factory, data):
    """One store per metric with uncalibrated pq8, float16 and int8 tiers (built once: PQ training is slow)."""
    x, _ = data
    out = {}
    for metric in ("ip", "cosine", "l2"):
        path = tmp_path_factory.mktemp(metric) / "s.vs"
        vecstore.build(path, x, metric=metric, progress=False).close()
        vecstore.compress(path, "pq8", calibrate=False, train_size=1000, progress=False).close()
        vecstore.compress(path, "float16", calibrate=False, progress=False).close()
        vecstore.compress(path, "int8", calibrate=False, progress=False).close()
        out[metric] = path
    return out


@pytest.fixture
def tiered(tmp_path, data):
    x, xq = data
    return tmp_path, x, xq


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("fine", ["raw", "float16", "int8"])
def test_full_oversampling_equals_exact_search_on_the_fine_tier(stores, data, metric, fine):
    x, xq = data
    with vecstore.open(stores[metric]) as store:
        D, I = store.search(xq, 10, tier="pq8", rescore=fine, oversample=1000)  # every row a candidate
        fine_tier = store.tier(fine)
        decoded = fine_tier.codec.decode(np.asarray(fine_tier.codes))
    q = xq / np.linalg.norm(xq, axis=1, keepdims=True) if metric == "cosine" else xq
    assert_knn(D, I, reference_scores(q, decoded, "l2" if metric == "l2" else "ip"), metric, tol=2e-4)


def test_rescoring_only_reads_candidate_rows(stores, data):
    x, xq = data
    with vecstore.open(stores["ip"]) as store:
        _, cand = store.tier("pq8").scan(xq[:2], 20)
        scores, rows = store.tier("raw").rescore(xq[:2], cand, 5)
    assert set(rows[0]) <= set(cand[0]) and set(rows[1]) <= set(cand[1])
    np.testing.assert_allclose(scores, np.take_along_axis(xq[:2] @ x.T, rows, axis=1), rtol=1e-5)


def test_two_stage_recall_beats_the_coarse_tier_alone(real_store, real_small, tmp_path):
    path = tmp_path / "r.vs"
    shutil.copy(real_store, path)
    store = vecstore.compress(path, "pq24", train_size=3000, progress=False)
    gt = real_small["neighbors"][:, :10]

    def recall(I):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, gt)])

    alone = recall(store.search(real_small["test"], 10, tier="pq24").ids)
    cal = store.tier("pq24").calibration
    assert cal["rescore"] == "raw" and cal["meets_target"] and cal["recall_at_10"] >= 0.95
    assert store.default_plan() == ("pq24", "raw", float(cal["oversample"]))
    default = recall(store.search(real_small["test"], 10).ids)  # calibrated default
    assert alone < 0.8 and default >= 0.94, (alone, default)
    store.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"tier": "float16", "rescore": "pq8"}, "cannot rescore"),
    ({"tier": "float16", "rescore": "int8"}, "not finer than the scanned tier"),
    ({"tier": "pq8", "rescore": "raw", "oversample": 0.5}, "oversample must be a number >= 1"),
    ({"tier": "pq8", "oversample": float("nan")}, "oversample"),
    ({"tier": "pq8", "rescore": "nope"}, "no tier 'nope'"),
])
def test_bad_two_stage_requests(stores, data, kwargs, message):
    _, xq = data
    with vecstore.open(stores["ip"]) as store, pytest.raises(vecstore.VecstoreError, match=message):
        store.search(xq, 5, **kwargs)


def test_oversample_alone_rescores_from_raw(stores, data):
    _, xq = data
    with vecstore.open(stores["ip"]) as store:
        assert store.default_plan() == ("raw", None, None)  # uncalibrated: exact by default
        D, I = store.search(xq, 5, tier="pq8", oversample=3000)
        D2, I2 = store.search(xq, 5, tier="raw")
    np.testing.assert_array_equal(I, I2)


def test_resident_coarse_tier_and_memory_report(stores, data):
    _, xq = data
    with vecstore.open(stores["ip"], resident=["pq8"]) as store:
        mem = store.memory()
        assert mem["tiers"]["pq8"]["resident_bytes"] == 3000 * 8 and mem["tiers"]["pq8"]["mapped_bytes"] == 0
        assert mem["tiers"]["raw"]["resident_bytes"] == 0 and mem["tiers"]["raw"]["mapped_bytes"] == 3000 * 32 * 4
        assert mem["process"]["RssAnon"] > 0 and "RssFile" in mem["process"]
        assert store.tier("pq8").codes.flags.owndata
        a = store.search(xq, 5, tier="pq8", rescore="raw")
    with vecstore.open(stores["ip"]) as store:
        b = store.search(xq, 5, tier="pq8", rescore="raw")
    np.testing.assert_array_equal(a.ids, b.ids)


def test_cli_default_and_explicit_two_stage(tiered):
    tmp_path, x, xq = tiered
    make_store(tmp_path, x, "l2").close()
    runner = CliRunner()
    out = runner.invoke(cli, ["compress", str(tmp_path / "s.vs"), "--codec", "pq4", "--train-size", "1000",
                              "--quiet"])
    assert out.exit_code == 0 and "calibrated: rescoring from raw" in out.stdout
    info = runner.invoke(cli, ["info", str(tmp_path / "s.vs")]).stdout
    assert "default search: scan pq4" in info
    vec = ",".join(map(str, x[7]))
    data = json.loads(runner.invoke(cli, ["search", str(tmp_path / "s.vs"), "--vector", vec, "--json"]).stdout)
    assert data["tier"] == "pq4" and data["rescore"] == "raw" and data["results"][0]["ids"][0] == 7
    data = json.loads(runner.invoke(cli, ["search", str(tmp_path / "s.vs"), "--vector", vec, "--tier", "pq4",
                                          "--rescore", "raw", "--oversample", "2", "--json"]).stdout)
    assert data["oversample"] == 2.0
    bad = runner.invoke(cli, ["search", str(tmp_path / "s.vs"), "--vector", vec, "--tier", "raw", "--rescore", "pq4"])
    assert bad.exit_code == 1 and "cannot rescore" in bad.stderr


def test_calibration_edited_to_name_a_coarse_tier_is_not_used(tmp_path, data):
    import h5py

    x, xq = data
    make_store(tmp_path, x).close()
    vecstore.compress(tmp_path / "s.vs", "pq4", train_size=1000, progress=False).close()
    with h5py.File(tmp_path / "s.vs", "r+") as f:
        cal = json.loads(f["tiers/pq4"].attrs["calibration"])
        cal["rescore"] = "pq4"
        f["tiers/pq4"].attrs["calibration"] = json.dumps(cal)
    with vecstore.open(tmp_path / "s.vs") as store:
        assert store.default_plan() == ("raw", None, None)
        store.search(xq, 3)
