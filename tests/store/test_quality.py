"""vecstore.store.quality: calibration records, the recall self-check, and the drift check's record.

(tests/store/test_deploy.py shows a drift check advising a retrain end to end; here: the fields, the
threshold boundary, and recalls against a plain set computation.)
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import make_store

import vecstore
from vecstore.errors import InvalidInputError
from vecstore.store.quality import (
    OVERSAMPLES,
    calibrate,
    calibrate_fastest,
    check_drift,
    self_check,
)
from vecstore.store import quality
from vecstore.store.tier import Tier

N, DIM = 400, 16
RECORD_FIELDS = {"method", "rescore", "target_recall_at_10", "oversample", "recall_at_10", "meets_target",
                 "recall_by_oversample", "queries", "seed", "latency_us"}


def _data(seed, n=N, dim=DIM):
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """An l2 store with an 8-bit PQ tier (pq4) and a coarse dense tier (pca4,int8), uncalibrated."""
    path = make_store(tmp_path_factory.mktemp("quality"), _data(1), "l2").path
    for codec in ("pq4", "pca4,int8"):
        vecstore.compress(path, codec, calibrate=False, progress=False).close()
    with vecstore.open(path) as opened:
        yield opened


def _calibrate(store, fine="raw", **kw):
    return calibrate(store.tier("pq4"), store.tier(fine), store.tier("raw"), queries=60, **kw)


# -- calibrate ---------------------------------------------------------------------------------------


def test_the_record_has_the_documented_fields_and_is_json_safe(store):
    record = _calibrate(store, seed=4)
    assert set(record) == RECORD_FIELDS
    assert json.loads(json.dumps(record)) == record
    assert (record["rescore"], record["queries"], record["seed"], record["target_recall_at_10"]) == ("raw", 60, 4, 0.95)
    assert record["meets_target"] and record["recall_at_10"] >= 0.95
    assert record["recall_by_oversample"][str(record["oversample"])] == record["recall_at_10"]


def test_calibrate_fastest_measures_every_rescoring_tier_and_keeps_the_fewest_bytes_of_the_fastest(tmp_path):
    path = make_store(tmp_path, _data(2), "l2").path
    for codec in ("float16", "int8", "pq4"):
        vecstore.compress(path, codec, calibrate=False, progress=False).close()
    store = vecstore.open(path)
    tiers = list(store.tiers.values())
    record = calibrate_fastest(store.tier("pq4"), tiers, store.tier("raw"), queries=60)
    assert {alt["rescore"] for alt in record["alternatives"]} == {"raw", "float16", "int8"}
    measured = {alt["rescore"]: alt for alt in record["alternatives"]}
    assert "raw" in measured and "pq4" not in measured          # only tiers that can rescore pq4
    meeting = [a for a in measured.values() if a["meets_target"]]
    assert meeting and record["meets_target"]
    # the fewest rescoring bytes a query among the plans within LATENCY_NOISE of the fastest
    fastest = min(m["latency_us"] for m in meeting)
    close = [a for a in meeting if a["latency_us"] <= fastest * (1 + quality.LATENCY_NOISE)]
    row_bytes = {"raw": 4 * DIM, "float16": 2 * DIM, "int8": DIM}
    assert record["rescore"] in {a["rescore"] for a in close}
    assert record["oversample"] * row_bytes[record["rescore"]] == min(a["oversample"] * row_bytes[a["rescore"]]
                                                                       for a in close)
    assert measured[record["rescore"]]["oversample"] == record["oversample"]
    alone = calibrate_fastest(store.tier("pq4"), [store.tier("raw")], store.tier("raw"), queries=60)
    assert "alternatives" not in alone and alone["rescore"] == "raw"
    store.close()


@pytest.mark.parametrize("coarse", ["pq4x4", "ivf8,pq4x4"])
def test_other_rescoring_tiers_start_at_raws_least_oversampling_and_choose_as_from_one(tmp_path, coarse):
    """calibrate_fastest calibrates raw first, then starts each other tier's sweep (per nprobe) at
    raw's least oversampling that met the target: among the same candidates no tier finds more of
    the truth than raw. The same (oversample, recall) for every nprobe as a sweep from 1."""
    path = make_store(tmp_path, _data(3, n=1200), "l2").path
    for codec in ("float16", "int8", coarse):
        vecstore.compress(path, codec, calibrate=False, progress=False).close()
    kw = dict(seed=0, queries=100, target=0.95, progress=None, release=None)
    with vecstore.open(path) as store:
        tier, raw = store.tier(coarse), store.tier("raw")
        record = calibrate_fastest(tier, list(store.tiers.values()), raw, queries=100)
        assert [alt["rescore"] for alt in record["alternatives"]] == ["raw", "float16", "int8"]
        _, least = quality._calibrate(tier, raw, raw, **kw)
        assert max(least.values()) > 1  # the shortcut skips factors here
        for name in ("float16", "int8"):
            quick = quality._calibrate(tier, store.tier(name), raw, least=least, **kw)[0]
            full = quality._calibrate(tier, store.tier(name), raw, **kw)[0]
            sweeps = [{r.get("nprobe"): (r["oversample"], r["recall_at_10"], r["meets_target"])
                       for r in record.get("nprobe_sweep", [record])} for record in (quick, full)]
            common = sweeps[0].keys() & sweeps[1].keys()  # (the latency stop may end one sweep earlier)
            assert common and all(sweeps[0][p] == sweeps[1][p] for p in common)
            assert all(sweeps[0][p][0] >= least[p] for p in sweeps[0])
            if "nprobe" not in full:
                assert len(quick["recall_by_oversample"]) < len(full["recall_by_oversample"])


@pytest.mark.parametrize("fine, target", [("raw", 0.95), ("pca8,int8", 1.0)])
def test_only_plans_that_can_be_chosen_are_timed(tmp_path, monkeypatch, fine, target):
    """An nprobe plan that misses the target is not timed (latency_us None): it cannot be chosen, and
    its many candidates would map rows for nothing. When none meets it (rescored on a lossy tier,
    recall 1.0 is out of reach), the best recall is timed."""
    path = make_store(tmp_path, _data(3, n=1200), "l2").path
    for codec in ("pca8,int8", "ivf8,pq4x4"):
        vecstore.compress(path, codec, calibrate=False, progress=False).close()
    timed = []
    real = quality.plan_latency_us
    monkeypatch.setattr(quality, "plan_latency_us", lambda *a, **kw: timed.append(a[5]) or real(*a, **kw))
    with vecstore.open(path) as store:
        record = quality.calibrate(store.tier("ivf8,pq4x4"), store.tier(fine), store.tier("raw"),
                                   queries=100, target=target)
    assert record["meets_target"] == (target < 1)
    sweep = record["nprobe_sweep"]
    missed = [r for r in sweep if not r["meets_target"]]
    assert missed and sweep[0]["nprobe"] == 1  # nprobe 1 of 8 lists cannot reach either target
    if record["meets_target"]:
        assert all((r["latency_us"] is None) != r["meets_target"] for r in sweep)
        assert timed == [r["nprobe"] for r in sweep if r["meets_target"]]
    else:
        assert timed == [record["nprobe"]] and record["latency_us"] > 0
        assert [r["nprobe"] for r in sweep if r["latency_us"] is not None] == [record["nprobe"]]


@pytest.mark.parametrize("fine", ["float16", "int8"])
def test_rescoring_a_slice_of_rows_at_a_time_equals_rescoring_at_once(tmp_path, monkeypatch, fine):
    """A calibration's rescoring with pages released reads the tier in row slices and merges their
    best: the same rows as one rescoring of every candidate (repeated rows, -1 and queries with no
    candidate in a slice included)."""
    path = make_store(tmp_path, _data(5, n=1000), "l2").path
    vecstore.compress(path, fine, calibrate=False, progress=False).close()
    monkeypatch.setattr(quality, "RESCORE_BATCH_BYTES", 97 * DIM)  # slices of 97 or 48 rows
    with vecstore.open(path) as store:
        tier = store.tier(fine)
        rng = np.random.default_rng(0)
        xq = _data(6, n=30)
        cand = rng.integers(-1, 1000, (30, 40))
        cand[3] = -1
        cand[4, :5] = cand[4, 5:10]
        released = []
        got = quality._rescored(tier, xq, cand, 10, released.append)
        np.testing.assert_array_equal(got, tier.rescore(xq, cand, 10)[1])
        assert len(released) >= 10 and max(r.shape[0] for r in released) < 100


def test_the_smallest_oversample_meeting_the_target_is_chosen(store):
    full = _calibrate(store, target=1.0)["recall_by_oversample"]  # the whole curve
    assert list(full) == [str(f) for f in OVERSAMPLES[:len(full)]]
    assert len(set(full.values())) >= 3  # the curve rises through several factors
    for target in sorted(set(full.values())):
        target -= 1e-4  # below the measured recall, which the record rounds to 4 places
        expected = next(f for f in full if full[f] >= target)
        record = _calibrate(store, target=target)
        assert str(record["oversample"]) == expected and record["meets_target"]
        assert record["recall_by_oversample"] == {f: full[f] for f in list(full)[:list(full).index(expected) + 1]}


def test_recall_without_rescoring_on_raw_equals_recall_with_it(store):
    """Calibrating against raw counts the true neighbours among the candidates instead of rescoring
    them: the same recall at every oversampling as rescoring them on a second handle of raw."""
    raw = store.tier("raw")
    twin = Tier(raw.name, raw.codec, raw.codes, raw.sqnorms, raw.metric)  # rescored: not the truth's tier
    counted = calibrate(store.tier("pq4"), raw, raw, queries=60, target=1.0)
    rescored = calibrate(store.tier("pq4"), twin, raw, queries=60, target=1.0)
    assert counted["recall_by_oversample"] == rescored["recall_by_oversample"]
    assert len(counted["recall_by_oversample"]) >= 3 and min(counted["recall_by_oversample"].values()) < 0.9


def test_calibration_reports_progress_per_oversampling_step(store):
    calls = []
    record = _calibrate(store, target=1.0, progress=lambda d, t: calls.append((d, t)))
    total = 1 + len(OVERSAMPLES)
    tried = len(record["recall_by_oversample"])
    assert calls == [(d, total) for d in range(tried + 2)] + [(total, total)]


def test_an_unreachable_target_reports_the_best_factor(store):
    # rescoring from a lossy tier caps recall below 1 whatever the oversampling
    record = _calibrate(store, fine="pca4,int8", target=1.0)
    curve = record["recall_by_oversample"]
    assert not record["meets_target"] and max(curve.values()) < 1.0
    best = max(curve.values())
    assert record["recall_at_10"] == best
    assert record["oversample"] == int(next(f for f in curve if curve[f] == best))  # the smallest such factor
    assert int(list(curve)[-1]) * 10 >= N - 1  # it tried until the candidates held every document


# -- recall on held-out documents, by plain sets -----------------------------------------------------


def _held_out_recall(store, query_ids, k, **plan):
    """Mean over query documents of |found & exact| / |exact|, each list the top k without the query."""
    xq = store.vectors(query_ids)
    exact = store.search(xq, k + 1, tier="raw").ids.tolist()
    found = store.search(xq, k + 1, **plan).ids.tolist()
    recalls = []
    for own, e, f in zip(np.asarray(query_ids).tolist(), exact, found):
        truth = [i for i in e if i != own][:k]
        recalls.append(len(set(truth) & {i for i in f if i != own}) / len(truth))
    return float(np.mean(recalls))


def test_self_check_of_an_exact_store_is_one(tmp_path):
    with make_store(tmp_path, _data(2, 30)) as small:
        report = self_check(small, sample=100, k=5)
    assert report == {"recall": 1.0, "k": 5, "queries": 30, "plan": ["raw", None, None]}


def test_self_check_measures_the_default_plan(tmp_path):
    path = make_store(tmp_path, _data(3), "l2").path
    vecstore.compress(path, "pq4", target_recall=0.9, progress=False).close()
    with vecstore.open(path) as calibrated:
        report = self_check(calibrated, sample=50, k=10, seed=2)
        plan = calibrated.default_plan()
        assert plan.tier == "pq4" and report["plan"] == list(plan) and report["queries"] == 50
        sample = np.sort(np.random.default_rng(2).choice(N, size=50, replace=False))
        assert report["recall"] == pytest.approx(_held_out_recall(calibrated, sample, 10))
    with pytest.raises(InvalidInputError, match="at least 2 documents"):
        self_check(make_store(tmp_path, _data(4, 1), name="one.vs"))


# -- drift ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def drifted(tmp_path_factory):
    """pq4 trained on documents in one half of the space, then documents added in the other half."""
    old, new = _data(5), _data(6, 120)
    old[:, DIM // 2:] *= 0.05
    new[:, :DIM // 2] *= 0.05
    path = make_store(tmp_path_factory.mktemp("drift"), old, "l2").path
    vecstore.compress(path, "pq4", calibrate=False, progress=False).close()
    with vecstore.open(path, mode="a") as opened:
        opened.add(new)
        yield opened


def test_the_drift_record(drifted):
    report = check_drift(drifted, sample=60, k=5, threshold=0.1)
    assert set(report) == {"k", "queries", "threshold", "tiers"}
    assert (report["k"], report["queries"], report["threshold"]) == (5, 60, 0.1)
    (tier,) = report["tiers"]  # the raw tier is never checked
    assert set(tier) == {"tier", "codec", "recall_oldest", "recall_newest", "drop", "retrain", "advice"}
    assert (tier["tier"], tier["codec"]) == ("pq4", "pq4")
    ids = drifted.ids
    assert tier["recall_oldest"] == pytest.approx(_held_out_recall(drifted, ids[:60], 5, tier="pq4"))
    assert tier["recall_newest"] == pytest.approx(_held_out_recall(drifted, ids[-60:], 5, tier="pq4"))
    assert tier["drop"] == tier["recall_oldest"] - tier["recall_newest"] > 0.1
    assert tier["retrain"] and tier["advice"] == "vecstore compress STORE --retrain pq4"


def test_a_drop_equal_to_the_threshold_does_not_ask_for_a_retrain(drifted):
    drop = check_drift(drifted, sample=60)["tiers"][0]["drop"]
    at = check_drift(drifted, sample=60, threshold=drop)["tiers"][0]
    below = check_drift(drifted, sample=60, threshold=np.nextafter(drop, 0))["tiers"][0]
    assert at["drop"] == below["drop"] == drop
    assert (at["retrain"], at["advice"]) == (False, None)
    assert below["retrain"] and below["advice"]


def test_drift_queries_are_capped_at_half_the_documents(drifted):
    assert check_drift(drifted, sample=10_000)["queries"] == drifted.count // 2


@pytest.mark.parametrize("threshold", [-0.01, 1.01, float("nan")])
def test_a_threshold_outside_zero_to_one_is_refused(drifted, threshold):
    with pytest.raises(InvalidInputError, match="threshold must be in"):
        check_drift(drifted, threshold=threshold)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_exact_truth_in_blocks_equals_one_scan_and_releases_each_block(tmp_path, monkeypatch, metric):
    from vecstore.store import quality
    from vecstore.store.file import StoreFile

    x = _data(5, n=1000)
    path = make_store(tmp_path, x, metric).path
    released = []
    with StoreFile(path) as f:
        raw = f.tier("raw")
        xq = x[:7] + 0.01
        whole = raw.scan(xq, 12)[1]
        monkeypatch.setattr(quality, "TRUTH_BLOCK_BYTES", 150 * DIM * 4)  # blocks of 150 rows
        blocked = quality.exact_rows(raw, xq, 12, lambda view: (released.append(view.shape[0]), f.release(view)))
        np.testing.assert_array_equal(blocked, whole)
        assert released == [150] * 6 + [100]
        np.testing.assert_array_equal(np.asarray(raw.codes), x)  # released pages read back from the file


def test_release_leaves_private_arrays_alone(tmp_path):
    from vecstore.store.file import StoreFile

    x = _data(6, n=5000, dim=256)
    path = make_store(tmp_path, x, "ip").path
    with StoreFile(path) as f:
        private = np.array(f.tier("raw").codes)
        f.release(private)  # not a view of the map: MADV_DONTNEED would zero it
        np.testing.assert_array_equal(private, x)
        before = f.memory()["process"].get("RssFile")
        float(np.asarray(f.tier("raw").codes).sum())
        f.release(f.tier("raw").codes)
        after = f.memory()["process"].get("RssFile")
        if before is not None:
            assert after <= before + (1 << 20)  # the 5 MB read left the resident set again


def test_build_of_a_large_store_warms_up_on_its_first_rows_only(tmp_path, monkeypatch):
    """The post-build warm-up must not read every row of a store larger than RAM (10M x 384: 15 GB
    of mapped pages in the build's resident set); it scans a slice with the same kernels."""
    import sys

    from vecstore.store.tier import Tier

    build_module = sys.modules["vecstore.store.build"]
    monkeypatch.setattr(build_module, "WARM_EXACT_ROWS", 100)
    scanned = []
    real_scan = Tier.scan
    monkeypatch.setattr(Tier, "scan", lambda self, *a, **kw: scanned.append(self.count) or real_scan(self, *a, **kw))
    monkeypatch.setattr(build_module.Store, "search", lambda *a, **kw: pytest.fail("searched the whole store"))
    vecstore.build(tmp_path / "s.vs", _data(8, n=1000), progress=False).close()
    assert scanned == [100]
