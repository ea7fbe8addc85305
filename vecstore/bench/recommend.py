"""Advice from a sweep: the fastest configuration within a memory budget and/or above a recall target.

Budgets are resident memory, the bytes a search keeps in RAM: the scanned tier's codes and norms
plus the codec's parameters (a two-stage search's fine tier stays memory-mapped).

- ``"64B"`` (also ``"64 B/vector"``): bytes per vector, the parameters spread over the whole input.
- ``"50MB"``, ``"1.5GiB"``, ``"800 KiB"``: the total for the whole input: codes x rows + parameters.
  kB/MB/GB/TB are powers of 1000, KiB/MiB/GiB/TiB powers of 1024.

"The whole input" is every row of INPUT, even when ``--n`` measured only its first rows: the store a
user builds from the recommendation holds them all (a PQ codebook of 400 KB is 200 B a vector over
2,000 rows but 4 B over 100,000).

"Fastest" is the highest batch throughput (QPS), ties broken by single-query p50.

Beside the advice stands FAISS's fastest twin configuration reaching the recall target (whatever its
memory: a FAISS refine stage keeps its vectors in RAM, so it is often far above a budget that
vecstore meets with a mapped fine tier), and its fastest within the budget too when one is given.
"""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass

from ..errors import InvalidInputError

_UNITS = {"b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}
_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]+)\s*(/\s*(?:v|vec|vector))?\s*$",
                     re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """A resident-memory budget: ``per_vector`` bytes or ``total`` bytes (one of them)."""

    per_vector: float | None = None
    total: float | None = None
    text: str = ""

    def describe(self) -> str:
        if self.per_vector is not None:
            return f"{self.per_vector:g} B/vector resident"
        return f"{human_bytes(self.total)} resident in total"


def parse_budget(text: str) -> Budget:
    """``"64B"`` -> 64 bytes per vector; ``"50MB"`` / ``"1.5GiB"`` -> a total; see the module docstring."""
    match = _BUDGET.match(text or "")
    unit = match[2].lower() if match else None
    if not match or unit not in _UNITS:
        raise InvalidInputError(
            f"--budget {text!r} is not a size: give bytes per vector ('64B') or a total for the whole "
            "input ('50MB', '1.5GiB')")
    value = float(match[1]) * _UNITS[unit]
    if not value > 0:
        raise InvalidInputError(f"--budget {text!r} must be more than zero")
    if unit == "b" or match[3]:
        return Budget(per_vector=value, text=text.strip())
    return Budget(total=value, text=text.strip())


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:g} B"  # pragma: no cover


# -- commands ------------------------------------------------------------------------------------


def reproduce_commands(*, codec: str, rescore: str | None, oversample: float | None, input_path: str,
                       input_kind: str, metric: str, queries_path: str | None, train_size: int, seed: int,
                       k: int) -> list[str]:
    """The ``vecstore`` commands that build this configuration over the whole input and search it."""
    q = shlex.quote
    cmds = []
    if input_kind == "store":
        store = input_path
    else:
        file = input_path.rpartition(":")[0] if ":" in input_path and not os.path.exists(input_path) \
            else input_path
        store = os.path.splitext(os.path.basename(file))[0] + ".vs"
        cmds.append(f"vecstore build {q(input_path)} {q(store)} --metric {metric}")
    if codec != "raw":
        cmds.append(f"vecstore compress {q(store)} --codec {q(codec)} --train-size {train_size} --seed {seed}")
    if rescore == "float16" and codec != "float16":
        cmds.append(f"vecstore compress {q(store)} --codec float16")
    search = f"vecstore search {q(store)} {q(queries_path or 'QUERIES.npy')} --tier {q(codec)}"
    if rescore is not None:
        search += f" --rescore {rescore} --oversample {oversample:g}"
    cmds.append(search + f" -k {k}")
    return cmds


# -- the recommendation --------------------------------------------------------------------------


@dataclass
class Recommendation:
    """The chosen row (None when nothing fits) and a sentence saying what and why; ``faiss`` holds
    FAISS's fastest configurations for the same constraints (see :func:`faiss_fastest`)."""

    row: dict | None
    message: str
    constraints: dict
    faiss: dict | None = None

    @property
    def found(self) -> bool:
        return self.row is not None

    @property
    def codec(self) -> str | None:
        return self.row["codec"] if self.row else None

    @property
    def commands(self) -> list[str]:
        """``vecstore build`` (unless INPUT is a store), ``compress`` and ``search`` for this choice."""
        return list(self.row.get("commands", [])) if self.row else []

    def to_dict(self) -> dict:
        r = self.row or {}
        return {"found": self.found, "message": self.message, "constraints": self.constraints,
                "config": r.get("config"), "codec": r.get("codec"), "rescore": r.get("rescore"),
                "oversample": r.get("oversample"), "commands": r.get("commands", []),
                "row": self.row, "faiss": self.faiss}


def total_resident(row: dict, corpus_rows: int | None = None) -> float:
    """Resident bytes for ``corpus_rows`` vectors (default: the input's rows) in this configuration."""
    n = corpus_rows or row.get("corpus_rows") or row["n"]
    return row["resident_code_bytes_per_vector"] * n + row["param_bytes"]


def resident_per_vector(row: dict, corpus_rows: int | None = None) -> float:
    """Resident bytes per vector with the parameters spread over ``corpus_rows`` (default: the input's
    rows, which a quick ``--n`` run measures only part of)."""
    n = corpus_rows or row.get("corpus_rows") or row["n"]
    return total_resident(row, n) / n


def _summary(row: dict, k: int, corpus_rows: int | None) -> str:
    name = row["factory"] if row.get("system") == "faiss" else row["config"]
    return (f"{name} (resident {resident_per_vector(row, corpus_rows):.1f} B/vector, recall@{k} "
            f"{row['recall_at_k']:.3f}, {row['qps']:,.0f} QPS, p50 {row['p50_ms']:.2f} ms)")


def _fastest(rows: list[dict]) -> dict | None:
    return max(rows, key=lambda r: (r["qps"], -r["p50_ms"])) if rows else None


def _constraints(budget_bytes_per_vector, budget_total, target_recall, corpus_rows):
    """(fits_memory, fits_recall): the two tests every piece of advice applies to a row."""
    def fits_memory(r: dict) -> bool:
        return ((budget_bytes_per_vector is None
                 or resident_per_vector(r, corpus_rows) <= budget_bytes_per_vector)
                and (budget_total is None or total_resident(r, corpus_rows) <= budget_total))

    def fits_recall(r: dict) -> bool:
        return target_recall is None or (r["recall_at_k"] is not None and r["recall_at_k"] >= target_recall)

    return fits_memory, fits_recall


def faiss_fastest(rows: list[dict], budget_bytes_per_vector: float | None = None,
                  budget_total: float | None = None, target_recall: float | None = None, *,
                  corpus_rows: int | None = None) -> dict | None:
    """FAISS's answer to the same question, to set beside the advice.

    Returns None without FAISS rows or constraints, else {"at_target": the fastest FAISS row reaching
    ``target_recall`` whatever its memory (None without a target or when none reaches it),
    "within_budget": the fastest meeting every constraint (None without a budget), "message"}.
    """
    theirs = [r for r in rows if r.get("system") == "faiss" and "error" not in r]
    has_budget = budget_bytes_per_vector is not None or budget_total is not None
    if not theirs or (target_recall is None and not has_budget):
        return None
    k = theirs[0]["k"]
    fits_memory, fits_recall = _constraints(budget_bytes_per_vector, budget_total, target_recall, corpus_rows)
    at_target = _fastest([r for r in theirs if fits_recall(r)]) if target_recall is not None else None
    within = _fastest([r for r in theirs if fits_memory(r) and fits_recall(r)]) if has_budget else None
    def say(row: dict | None, none: str) -> str:
        return _summary(row, k, corpus_rows) if row else none

    if target_recall is None:
        message = f"FAISS's fastest within the budget: {say(within, 'none of its twins')}"
    else:
        message = f"FAISS's fastest reaching recall@{k} >= {target_recall:g}: {say(at_target, 'none of its twins')}"
        if has_budget and within is not at_target:
            message += f"; within the budget: {say(within, 'none (its refine stages keep their vectors in RAM)')}"
    return {"at_target": at_target, "within_budget": within, "message": message}


def recommend(rows: list[dict], budget_bytes_per_vector: float | None = None, budget_total: float | None = None,
              target_recall: float | None = None, *, corpus_rows: int | None = None) -> Recommendation:
    """The fastest vecstore configuration in ``rows`` meeting every given constraint.

    Parameters
    ----------
    rows : JSON rows of a sweep (FAISS rows and failed rows are ignored).
    budget_bytes_per_vector : most resident bytes per vector, parameters amortized over ``corpus_rows``.
    budget_total : most resident bytes for ``corpus_rows`` vectors (default: each row's
        ``corpus_rows``, the whole input).
    target_recall : least recall@k (k of the sweep).
    """
    if target_recall is not None and not 0 < target_recall <= 1:
        raise InvalidInputError(f"target recall must be in (0, 1], got {target_recall!r}")
    ours = [r for r in rows if r.get("system") == "vecstore" and "error" not in r]
    if not ours:
        raise InvalidInputError("no vecstore rows to choose from")
    k = ours[0]["k"]
    constraints = {"budget_bytes_per_vector": budget_bytes_per_vector, "budget_total_bytes": budget_total,
                   "target_recall": target_recall, "k": k,
                   "corpus_rows": corpus_rows or ours[0].get("corpus_rows") or ours[0]["n"]}
    wanted = []
    if budget_bytes_per_vector is not None:
        wanted.append(f"<= {budget_bytes_per_vector:g} B/vector resident (parameters spread over "
                      f"{constraints['corpus_rows']:,} vectors)")
    if budget_total is not None:
        wanted.append(f"<= {human_bytes(budget_total)} resident for {constraints['corpus_rows']:,} vectors")
    if target_recall is not None:
        wanted.append(f"recall@{k} >= {target_recall:g}")
    what = " and ".join(wanted) or "no constraint"
    fits_memory, fits_recall = _constraints(budget_bytes_per_vector, budget_total, target_recall, corpus_rows)
    faiss = faiss_fastest(rows, budget_bytes_per_vector, budget_total, target_recall, corpus_rows=corpus_rows)

    fitting = [r for r in ours if fits_memory(r) and fits_recall(r)]
    if fitting:
        best = _fastest(fitting)
        return Recommendation(best, f"fastest configuration with {what}: {_summary(best, k, corpus_rows)}",
                              constraints, faiss)
    in_budget = [r for r in ours if fits_memory(r)]
    reaching = [r for r in ours if fits_recall(r)]
    if not in_budget:
        small = min(ours, key=lambda r: resident_per_vector(r, corpus_rows))
        message = (f"no configuration fits {what}: the smallest measured, {small['config']}, needs "
                   f"{resident_per_vector(small, corpus_rows):.1f} B/vector "
                   f"({human_bytes(total_resident(small, corpus_rows))} in total); raise the budget or add a "
                   "smaller codec to --codecs")
    else:
        top = max(in_budget, key=lambda r: (r["recall_at_k"] or 0.0))
        message = (f"no configuration meets {what}: within the budget the best recall@{k} is "
                   f"{top['recall_at_k']:.3f} ({top['config']})")
        if reaching:
            small = min(reaching, key=lambda r: resident_per_vector(r, corpus_rows))
            message += (f"; the least memory reaching recall@{k} {target_recall:g} is {small['config']} at "
                        f"{resident_per_vector(small, corpus_rows):.1f} B/vector")
        else:
            message += "; try larger --oversample values or finer codecs"
    return Recommendation(None, message, constraints, faiss)
