"""Which way a filtered search runs, chosen per part from how many rows its mask allows.

- ``exact``: score every allowed row on the plan's fine tier (the rescoring tier of a two-stage
  plan, usually raw). Chosen when ``allowed x dim`` is at most EXACT_WORK, or when no more than k
  rows are allowed. Recall 1 (against the fine tier), and cheap because the rows are few.
- ``filtered-two-stage``: scan the plan's coarse tier with the mask in the kernel (disallowed rows
  are skipped, so its ``k x oversample`` candidates are all allowed rows: no oversampling has to be
  scaled up for the filter's selectivity) and rescore them on the fine tier.
- ``filtered-scan``: a one-stage plan (raw, or a tier named without rescoring) scanned with the mask.
- ``none``: the mask allows no row (the result is all padding).

The crossover: on the 100K x 384 WordNet set (benchmarks/bench_filters.py, 2 shared cores), scoring
a allowed raw rows exactly takes about a x 0.1 us for one query; the default plan's filtered
two-stage search (pq96x4 fast scan of the whole mask + 40 rescored rows) takes 0.4-0.6 ms whatever
the selectivity. So up to ~4,000 rows at 384 dims (1.5M multiply-adds) exact scoring is no slower
and has recall 1; EXACT_WORK = 1,500,000 puts the switch there (it scales as 1/dim, the cost of a
row). Above it the filtered two-stage search is faster, and its recall is at least the unfiltered
search's (fewer distractors compete for the same k x oversample candidates).
"""

from __future__ import annotations

from ..plan import Plan

# allowed rows x dim up to which the allowed rows are scored exactly (see the module doc)
EXACT_WORK = 1_500_000

STRATEGIES = ("none", "exact", "filtered-scan", "filtered-two-stage")


def choose_strategy(allowed: int, k: int, dim: int, plan: Plan) -> str:
    """The strategy (one of STRATEGIES) for a part with ``allowed`` rows admitted, searched for
    ``k <= allowed`` results under ``plan``."""
    if allowed == 0:
        return "none"
    if plan.rescore is None:
        return "filtered-scan"
    if allowed <= k or allowed * dim <= EXACT_WORK:
        return "exact"
    return "filtered-two-stage"
