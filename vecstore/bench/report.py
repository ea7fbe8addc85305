"""Reporting a sweep: a table for people with ratios against FAISS, JSON for scripts, a PNG, advice.

:func:`emit` is what ``vecstore bench`` calls after the sweep: it adds the recommendation (when a
budget or a recall target is given) to the document, writes ``results.json``, ``report.txt`` and
``recall-vs-bytes.png`` into the output directory if one is given, and returns the text for stdout
(the table, or the JSON document with ``as_json``).

:func:`recommend` and :func:`parse_budget` live in :mod:`vecstore.bench.recommend` and are
re-exported here.
"""

from __future__ import annotations

import json
import math
import os
import sys

import numpy as np

from .metrics import describe_machine
from .recommend import Budget, Recommendation, parse_budget, recommend

__all__ = ["Budget", "Recommendation", "emit", "format_table", "parse_budget", "recommend", "to_json",
           "write_outputs"]

PNG_NAME = "recall-vs-bytes.png"


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def to_json(doc: dict) -> str:
    return json.dumps(_json_safe(doc), indent=1)


def _num(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _bytes(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def _ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def format_table(doc: dict) -> str:
    """The human report: the conditions of the run, then one line per configuration."""
    w, s = doc["workload"], doc["settings"]
    k = s["k"]
    lines = [
        f"# vecstore bench: {w['name']} ({w['nb']:,} x {w['d']}, metric {w['metric']}), {w['nq']} queries",
        f"machine : {describe_machine(doc['machine'])}",
        f"threads : {s['threads']} (numba, FAISS OpenMP, BLAS); batch = {s['batch_queries']} queries a call, median "
        f"of {s['repeats']} after a warm-up; single-query p50/p99 over {s['single_queries']} calls; page cache warm",
        f"queries : {w['queries']}",
        f"truth   : {w['groundtruth']}",
        f"training: {s['train_size']:,} rows (seed {s['seed']}), the same rows for vecstore and FAISS",
        f"memory  : res = bytes/vector kept in RAM (scanned codes + norms + parameters / {w['input_rows']:,} input "
        "rows, as the recommendation counts them; vecstore's rescoring tier stays mapped, FAISS keeps its refine "
        "vectors in RAM); disk = file bytes/vector (a vecstore file always holds the raw float32 tier)",
        "",
    ]
    extra = k not in (1, 10, 100)
    head = ["config", "res B", "disk B", "R@1", "R@10", "R@100"] + ([f"R@{k}"] if extra else []) + [
        "QPS", "p50 ms", "p99 ms", "train s", "build s", "|", "FAISS twin", "res B", f"R@{k}", "QPS",
        "p50 ms", "|", "FAISS res/ours", "QPS ours/FAISS", "p50 ours/FAISS"]
    table = [head]
    faiss = {r["config"]: r for r in doc["rows"] if r["system"] == "faiss"}
    for r in doc["rows"]:
        if r["system"] != "vecstore":
            continue
        f = faiss.get(r["config"], {})
        q = r.get("vs_faiss", {})
        table.append([
            r["config"], _bytes(r["resident_bytes_per_vector"]), _bytes(r["disk_bytes_per_vector"]),
            _num(r["recall_at_1"]), _num(r["recall_at_10"]), _num(r["recall_at_100"])]
            + ([_num(r["recall_at_k"])] if extra else []) + [
            f"{r['qps']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['train_s']:.1f}",
            f"{r['build_s']:.1f}", "|",
            f.get("factory", "-"), _bytes(f["resident_bytes_per_vector"]) if f else "-",
            _num(f.get("recall_at_k")), f"{f['qps']:,.0f}" if f else "-",
            f"{f['p50_ms']:.2f}" if f else "-", "|",
            _ratio(q.get("faiss_resident_over_ours")), _ratio(q.get("qps_ours_over_faiss")),
            _ratio(q.get("p50_ours_over_faiss"))])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    left = {0, head.index("FAISS twin")}
    for row in table:
        cells = [c.ljust(wd) if i in left else c.rjust(wd) for i, (c, wd) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    lines.append("")
    lines.append(f"R@n = recall@n against the exact top n (strict, by id); the JSON also has a tie-tolerant "
                 f"recall@{k}. Ratios: FAISS's resident bytes over ours (higher is better for vecstore), "
                 "vecstore's QPS over FAISS's, vecstore's p50 over FAISS's (lower is better for vecstore).")
    for skip in doc.get("skipped", []):
        lines.append(f"skipped {skip['codec']}: {skip['reason']}")
    lines.append(f"total {doc['total_s']:.0f} s (base store {doc['base_build_s']:.1f} s, ground truth "
                 f"{doc['groundtruth_s']:.1f} s)")
    rec = doc.get("recommendation")
    if rec is not None:
        lines += ["", format_recommendation(rec)]
    return "\n".join(lines) + "\n"


def format_recommendation(rec: dict) -> str:
    lines = [f"recommendation: {rec['message']}"]
    if rec["found"]:
        lines.append(f"  codec {rec['codec']}" + (f", rescore from {rec['rescore']} with oversample "
                                                  f"{rec['oversample']:g}" if rec["rescore"] else ""))
        lines += [f"  $ {c}" for c in rec["commands"]]
    if rec.get("faiss"):
        lines.append(f"beside it, {rec['faiss']['message']}")
    return "\n".join(lines)


def write_outputs(doc: dict, out_dir: str, table: str) -> list[str]:
    """results.json, report.txt and the PNG in ``out_dir`` (created if needed); returns the paths."""
    from ..errors import InvalidInputError

    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise InvalidInputError(f"--out {out_dir!r}: cannot create the directory ({exc.strerror})") from None
    paths = []
    for name, text in (("results.json", to_json(doc)), ("report.txt", table)):
        path = os.path.join(out_dir, name)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        paths.append(path)
    try:
        from .plot import plot_recall_vs_bytes

        paths.append(plot_recall_vs_bytes(doc, os.path.join(out_dir, PNG_NAME)))
    except ImportError:
        print("note: matplotlib is not installed, so no plot was drawn (pip install 'vecstore[plot]')",
              file=sys.stderr)
    return paths


def emit(doc: dict, *, out_dir: str | None = None, as_json: bool = False, budget: Budget | None = None,
         target_recall: float | None = None) -> str:
    """Add the recommendation, write the files, and return what goes to stdout."""
    if budget is not None or target_recall is not None:
        rec = recommend(doc["rows"], budget_bytes_per_vector=budget.per_vector if budget else None,
                        budget_total=budget.total if budget else None, target_recall=target_recall,
                        corpus_rows=doc["workload"]["input_rows"])
        doc["recommendation"] = rec.to_dict()
    table = format_table(doc)
    if out_dir is not None:
        doc["outputs"] = [os.path.abspath(p) for p in write_outputs(doc, out_dir, table)]
    if as_json:
        return to_json(doc) + "\n"
    if out_dir is not None:
        table += "\nwrote " + ", ".join(doc["outputs"]) + "\n"
    return table
