"""Which way a filtered search runs, chosen per part from how many rows its mask allows.

- ``exact``: score every allowed row on the plan's fine tier (the rescoring tier of a two-stage
  plan, usually raw). Recall 1 against that tier.
- ``filtered-two-stage``: scan the plan's coarse tier with the mask in the kernel (disallowed rows
  are skipped, so its ``k x oversample`` candidates are all allowed rows: the oversampling needs no
  scaling for the filter's selectivity) and rescore them on the fine tier.
- ``filtered-scan``: a one-stage plan (raw, or a tier named without rescoring) scanned with the mask.
- ``none``: the mask allows no row (the result is all padding).

The crossover compares work: exact scoring costs ``allowed x dim`` multiply-adds on the fine tier;
the filtered scan costs about ``rows x code_size`` table lookups (or multiply-adds) over the whole
coarse tier, whatever the selectivity (a skipped row is cheap but the scan still walks every row or
block), plus rescoring. Exact is chosen while ``allowed x dim <= EXACT_RATIO x rows x code_size``,
or when at most k rows are allowed. EXACT_RATIO is the measured break-even of
benchmarks/bench_filters.py (both strategies forced at several allowed counts, alternating call by
call; its crossover table in benchmarks/results/filters-*.md). One query, pq96x4 (48-byte codes) over
100,000 x 384, warm page cache, 2 shared cores, both strategies one compiled call on one thread: the
filtered two-stage search takes 0.11-0.12 ms from 1,500 to 3,000 allowed rows (skipped blocks are
nearly free, the rest of the tier is scanned); exact scoring about 0.035 ms + 0.03 ms per 1,000
allowed rows, steeper beyond ~2,500. They break even near 2,400-2,800 rows (exact / two-stage 0.95-0.99
at 2,400-2,500, 1.04-1.17 from 2,600 to 3,000; docs/filters.md, "Strategies"), ratio ~0.2:
0.2 x 100,000 x 48 / 384 = 2,500. Below that exact is as fast or faster and has recall 1; above it
the two-stage search is faster, and its recall is about the unfiltered search's (the same codes
ranked among fewer distractors: 0.972-0.976 at 50%, 10% and 7.3% against 0.973 unfiltered). The
constant is part of the normative strategy rule (docs/format.md, "Filtered search"): changing it
changes results.
"""

from __future__ import annotations

from ..plan import Plan

# exact while allowed rows x dim <= EXACT_RATIO x rows x coarse code bytes (see the module doc)
EXACT_RATIO = 0.2

STRATEGIES = ("none", "exact", "filtered-scan", "filtered-two-stage")


def choose_strategy(allowed: int, k: int, dim: int, plan: Plan, scan_work: int) -> str:
    """The strategy (one of STRATEGIES) for a part with ``allowed`` rows admitted, searched for
    ``k <= allowed`` results under ``plan``; ``scan_work`` is the part's rows x the code bytes of
    the plan's tier (what a filtered scan of it walks)."""
    if allowed == 0:
        return "none"
    if plan.rescore is None:
        return "filtered-scan"
    if allowed <= k or allowed * dim <= EXACT_RATIO * scan_work:
        return "exact"
    return "filtered-two-stage"
