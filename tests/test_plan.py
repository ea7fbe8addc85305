"""vecstore.plan: one set of plan rules, checked on plain tier descriptions (no store needed), and
the same rules seen through a store and a sharded manifest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

import vecstore
from vecstore.errors import InvalidInputError, UnknownTierError
from vecstore.plan import DEFAULT_OVERSAMPLE, EXACT, Plan, default_plan, rescore_refusal, resolve_plan


@dataclass
class Facts:
    name: str
    layout: str
    code_size: int
    calibration: dict | None = None

    @property
    def codec_string(self) -> str:
        return self.name


def calibrated(rescore="raw", oversample=8, meets=True, latency=None):
    record = {"rescore": rescore, "oversample": oversample, "meets_target": meets}
    if latency is not None:
        record["latency_us"] = latency
    return record


def table(*tiers):
    return {t.name: t for t in tiers}


RAW = Facts("raw", "f32", 64)
INT8 = Facts("int8", "i8", 16)


def lookup_in(tiers):
    def lookup(name):
        if name not in tiers:
            raise UnknownTierError(f"no tier {name!r}")
        return tiers[name]
    return lookup


def test_default_is_exact_without_a_calibrated_tier():
    assert default_plan(table(RAW, INT8)) == EXACT == ("raw", None, None)


def test_default_is_the_smallest_tier_that_met_its_target():
    tiers = table(RAW, INT8, Facts("pq8", "pq8", 8, calibrated(oversample=16)),
                  Facts("pq4", "pq4", 4, calibrated(meets=False)), Facts("pq16", "pq8", 16, calibrated()))
    assert default_plan(tiers) == Plan("pq8", "raw", 16.0)


def test_default_is_the_fastest_within_the_budget_else_the_smallest():
    pq8 = Facts("pq8", "pq8", 8, calibrated(oversample=256, latency=1200.0))
    pq96x4 = Facts("pq96x4", "pq4", 48, calibrated(oversample=4, latency=90.0))
    int8 = Facts("int8", "i8", 384, calibrated(oversample=1, latency=40.0))
    tiers = table(Facts("raw", "f32", 1536), pq8, pq96x4, int8)
    assert default_plan(tiers) == Plan("pq96x4", "raw", 4.0)                # 64 B: int8 (384 B) is out
    assert default_plan(tiers, 16) == Plan("pq8", "raw", 256.0)             # only pq8 fits
    assert default_plan(tiers, float("inf")) == Plan("int8", "raw", 1.0)   # no limit: the fastest
    assert default_plan(tiers, 4) == Plan("pq8", "raw", 256.0)              # none fits: the smallest
    old = Facts("pq48", "pq8", 48, calibrated(oversample=16))               # no latency recorded
    assert default_plan(table(RAW, old, pq96x4)) == Plan("pq96x4", "raw", 4.0)
    assert default_plan(table(RAW, old, Facts("pq32", "pq8", 32, calibrated()))) == Plan("pq32", "raw", 8.0)


@pytest.mark.parametrize("bad", [-1, float("nan"), True, "64"])
def test_a_bad_budget_is_refused(bad):
    with pytest.raises(InvalidInputError, match="budget must be bytes per vector"):
        default_plan(table(RAW), bad)


def test_default_skips_a_calibration_whose_rescoring_tier_is_gone_or_cannot_rescore():
    tiers = table(RAW, Facts("pq8", "pq8", 8, calibrated(rescore="float16")),
                  Facts("pq4", "pq4", 4, calibrated(rescore="pq8")))
    assert default_plan(tiers) == EXACT


@pytest.mark.parametrize("fine, coarse, why", [
    (Facts("pq8", "pq8", 8), Facts("pq4", "pq4", 4), "cannot rescore: choose a float32"),
    (INT8, Facts("f16", "f16", 32), "not finer than the scanned tier"),
    (RAW, RAW, "cannot rescore its own candidates"),
])
def test_rescore_refusals_say_why(fine, coarse, why):
    assert why in rescore_refusal(fine, coarse)


def test_rescore_accepts_a_finer_dense_tier():
    assert rescore_refusal(RAW, INT8) is None and rescore_refusal(INT8, Facts("pq8", "pq8", 8)) is None


def test_resolve_fills_defaults_in_order():
    pq = Facts("pq8", "pq8", 8, calibrated(oversample=32))
    tiers = table(RAW, INT8, pq)
    lookup, default = lookup_in(tiers), default_plan(tiers)
    assert resolve_plan(lookup, default) == Plan("pq8", "raw", 32.0)
    assert resolve_plan(lookup, default, "int8") == Plan("int8")
    assert resolve_plan(lookup, default, "pq8", "raw") == Plan("pq8", "raw", 32.0)       # its calibration
    assert resolve_plan(lookup, default, "pq8", "int8") == Plan("pq8", "int8", DEFAULT_OVERSAMPLE)
    assert resolve_plan(lookup, default, "int8", oversample=3) == Plan("int8", "raw", 3.0)
    with pytest.raises(InvalidInputError, match="cannot rescore its own"):
        resolve_plan(lookup, default, rescore="raw")                                     # tier defaults to raw
    with pytest.raises(UnknownTierError):
        resolve_plan(lookup, default, "pq99")


@pytest.mark.parametrize("bad", [0.5, 0, -1, float("nan"), float("inf"), True, "4"])
def test_resolve_refuses_a_bad_oversample(bad):
    with pytest.raises(InvalidInputError, match="oversample must be a number >= 1"):
        resolve_plan(lookup_in(table(RAW, INT8)), EXACT, "int8", "raw", bad)


def test_a_store_records_latencies_and_takes_its_budget(tmp_path):
    x = np.random.default_rng(1).standard_normal((2000, 32)).astype(np.float32)
    path = str(tmp_path / "b.vs")
    vecstore.build(path, x, metric="ip", progress=False).close()
    vecstore.compress(path, "pq4", progress=False).close()
    vecstore.compress(path, "int8", progress=False).close()
    with vecstore.open(path) as store:
        latencies = {t.name: t.calibration["latency_us"] for t in store.tiers.values() if t.calibration}
        assert set(latencies) == {"pq4", "int8"} and all(v > 0 for v in latencies.values())
        fastest = min(latencies, key=latencies.get)      # pq4 (4 B) and int8 (32 B) both fit in 64 B
        assert store.default_plan().tier == fastest == store.default_plan(float("inf")).tier
        assert store.default_plan(4).tier == "pq4"        # only pq4 fits
        assert store.info()["budget"] == 64
    with vecstore.open(path, budget=4) as store:
        assert store.default_plan().tier == "pq4" and store.info()["default_search"][0] == "pq4"
        assert store.resolve_plan(budget=float("inf")).tier == fastest
        assert store.search(x[:2], 5, budget=float("inf")).ids.shape == (2, 5)
    with pytest.raises(InvalidInputError, match="budget"):
        vecstore.open(path, budget=-2)


def test_a_store_and_its_plan_agree(tmp_path):
    x = np.random.default_rng(0).standard_normal((600, 16)).astype(np.float32)
    path = str(tmp_path / "p.vs")
    vecstore.build(path, x, metric="l2", progress=False).close()
    vecstore.compress(path, "pq4", progress=False).close()
    with vecstore.open(path) as store:
        plan = store.default_plan()
        assert isinstance(plan, Plan) and plan == default_plan(store.tiers)
        assert plan.tier == "pq4" and plan.rescore == "raw"
        assert store.resolve_plan() == plan
        np.testing.assert_array_equal(store.search(x[:5], 10).ids,
                                      store.search(x[:5], 10, tier=plan.tier, rescore=plan.rescore,
                                                   oversample=plan.oversample).ids)
