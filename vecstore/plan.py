"""Search plans: which tier to scan, which finer tier rescores its candidates, how many candidates.

One set of rules serves every table of tiers: a single store file, a store with appended segments
(resolved once on the main file, then applied to every part) and a sharded collection (resolved on
its manifest, then sent to every shard). A table maps tier names to objects that describe a tier:
``name``, ``codec_string``, ``layout`` (the terminal code layout), ``code_size`` (bytes per code)
and ``calibration`` (the record vecstore.store.quality writes, or None).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import NamedTuple, Protocol

from .errors import InvalidInputError

RAW_TIER = "raw"
# Candidates per result when rescoring is asked for without a calibrated or given oversampling.
DEFAULT_OVERSAMPLE = 4.0
# The code layouts that can score chosen rows exactly (vecstore.kernels.dispatch.RESCORE_LAYOUTS).
RESCORE_LAYOUTS = ("f32", "f16", "i8")
# The resident-memory budget of the default plan: code bytes per vector of the tier it scans (the tier
# a two-stage search holds in RAM; the rescoring tier stays mapped). 64 B holds the 4-bit tiers that
# reach recall@10 0.95 on the real 384-d and 4096-d sets (pq96x4: 48 B, pq128x4: 64 B) and is 24x less
# than int8 at 384 dims; within it the fastest calibrated plan wins, above it the smallest.
DEFAULT_BUDGET = 64


class TierFacts(Protocol):
    name: str
    codec_string: str
    layout: str
    code_size: int
    calibration: dict | None


class Plan(NamedTuple):
    """``(tier, rescore, oversample)``: scan ``tier``; if ``rescore`` names a tier, take
    ``k * oversample`` candidates and rescore them there. Unpacks and compares as a plain tuple."""

    tier: str
    rescore: str | None = None
    oversample: float | None = None


EXACT = Plan(RAW_TIER)


def rescore_refusal(fine: TierFacts, coarse: TierFacts) -> str | None:
    """Why ``fine`` cannot rescore candidates of ``coarse`` (None: it can)."""
    if fine.codec_string.startswith("ivf"):
        return (f"tier {fine.name!r} ({fine.codec_string}) is an inverted-file tier, stored in list order: it cannot "
                "rescore; rescore from a flat float32, float16 or int8 tier (e.g. raw)")
    if fine.layout not in RESCORE_LAYOUTS:
        return (f"tier {fine.name!r} ({fine.codec_string}) cannot rescore: choose a float32, float16 or int8 "
                "tier (e.g. raw)")
    if fine.code_size <= coarse.code_size:
        if fine.name == coarse.name:
            return (f"tier {fine.name!r} cannot rescore its own candidates: name a smaller tier to scan "
                    "(tier=..., CLI --tier), or drop the rescoring options")
        return (f"rescore tier {fine.name!r} ({fine.code_size} B/vector) is not finer than the scanned tier "
                f"{coarse.name!r} ({coarse.code_size} B/vector): rescore from a larger tier, e.g. raw")
    return None


def check_rescores(fine: TierFacts, coarse: TierFacts) -> None:
    """Refuse a fine tier that cannot refine ``coarse`` (InvalidInputError saying why)."""
    why = rescore_refusal(fine, coarse)
    if why:
        raise InvalidInputError(why)


def default_plan(tiers: Mapping[str, TierFacts], budget: float | None = DEFAULT_BUDGET) -> Plan:
    """The plan of a search given no tier options, among the tiers whose calibration met its recall
    target and whose rescoring tier exists and can rescore it: the fastest (calibrated latency)
    whose code takes at most ``budget`` bytes per vector, else the smallest; exact search on raw
    when there is none. Tiers calibrated before latencies were recorded count as slowest.
    """
    check_budget(budget)
    usable = []
    for tier in tiers.values():
        cal = tier.calibration
        if cal and cal.get("meets_target"):
            fine = tiers.get(cal["rescore"])
            if fine is not None and rescore_refusal(fine, tier) is None:
                usable.append(tier)
    if not usable:
        return EXACT
    within = [t for t in usable if budget is None or t.code_size <= budget]
    if within:
        best = min(within, key=lambda t: (_latency(t), t.code_size, t.name))
    else:
        best = min(usable, key=lambda t: (t.code_size, t.name))
    return Plan(best.name, best.calibration["rescore"], float(best.calibration["oversample"]))


def _latency(tier: TierFacts) -> float:
    value = tier.calibration.get("latency_us")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else math.inf


def check_budget(budget) -> None:
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or math.isnan(budget) or budget < 0):
        raise InvalidInputError(f"budget must be bytes per vector >= 0 (float('inf'): no limit), got {budget!r}")


def check_nprobe(nprobe, nlist: int, name: str, codec: str) -> int | None:
    """``nprobe`` validated for a scanned tier ``name`` (codec string ``codec``) of ``nlist`` lists
    (0: not an inverted-file tier). None stays None (the tier's calibrated default)."""
    if nprobe is None:
        return None
    if not nlist:
        raise InvalidInputError(f"nprobe applies to inverted-file tiers (codec 'ivf<nlist>,...'); tier {name!r} is "
                                f"{codec}: drop nprobe or choose an ivf tier")
    if isinstance(nprobe, bool) or not isinstance(nprobe, numbers.Integral) or not 1 <= nprobe <= nlist:
        raise InvalidInputError(f"nprobe must be an integer from 1 to the tier's {nlist} lists, got {nprobe!r}")
    return int(nprobe)


def check_oversample(oversample) -> None:
    if oversample is not None and (isinstance(oversample, bool) or not isinstance(oversample, (int, float))
                                   or not math.isfinite(oversample) or oversample < 1):
        raise InvalidInputError(f"oversample must be a number >= 1, got {oversample!r}")


def resolve_plan(lookup: Callable[[str], TierFacts], default: Plan, tier: str | None = None,
                 rescore: str | None = None, oversample: float | None = None) -> Plan:
    """The validated plan for a search's options.

    ``lookup(name)`` returns a tier or raises the table's own UnknownTierError; ``default`` is the
    table's :func:`default_plan` (or a recorded one). No options: the default. Any option given:
    ``tier`` defaults to raw, and ``oversample`` without ``rescore`` rescores from raw. Oversampling
    not given: the scanned tier's calibration for that rescoring tier, else DEFAULT_OVERSAMPLE.
    """
    check_oversample(oversample)
    if tier is None and rescore is None and oversample is None:
        return default
    coarse = lookup(RAW_TIER if tier is None else tier)
    if rescore is None and oversample is not None:
        rescore = RAW_TIER
    if rescore is None:
        return Plan(coarse.name)
    fine = lookup(rescore)
    check_rescores(fine, coarse)
    if oversample is None:
        cal = coarse.calibration
        oversample = float(cal["oversample"]) if cal and cal["rescore"] == fine.name else DEFAULT_OVERSAMPLE
    return Plan(coarse.name, fine.name, float(oversample))
