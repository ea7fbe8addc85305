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


def calibrated(rescore="raw", oversample=8, meets=True):
    return {"rescore": rescore, "oversample": oversample, "meets_target": meets}


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
