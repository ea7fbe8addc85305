"""The picture of a sweep: recall@10 against resident bytes per vector, log-x.

vecstore's Pareto front (no other configuration is both smaller and more accurate) is drawn as a
line with its configurations named; every other vecstore configuration is a grey dot; FAISS's twins
are orange points (crosses single-stage, triangles with a refine stage). matplotlib is imported on
use, with the Agg canvas only (no pyplot, no global backend change), so a server without a display
can draw it.
"""

from __future__ import annotations


def recall_key(rows: list[dict]) -> str:
    """recall_at_10 when the ground truth was deep enough for it, else recall_at_k."""
    return "recall_at_10" if all(r.get("recall_at_10") is not None for r in rows) else "recall_at_k"


def pareto_front(rows: list[dict], x: str = "resident_bytes_per_vector", y: str = "recall_at_10") -> list[dict]:
    """Rows not dominated by another (one as small with strictly better y, or smaller with as good y),
    sorted by ``x``."""
    points = sorted((r for r in rows if r.get(y) is not None), key=lambda r: (r[x], -r[y]))
    front, best = [], -1.0
    for r in points:
        if r[y] > best:
            front.append(r)
            best = r[y]
    return front


def plot_recall_vs_bytes(doc: dict, path: str) -> str:
    """Write the PNG for a sweep document to ``path``; returns ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    rows = [r for r in doc["rows"] if "error" not in r]
    ours = [r for r in rows if r["system"] == "vecstore"]
    theirs = [r for r in rows if r["system"] == "faiss"]
    y = recall_key(rows)
    x = "resident_bytes_per_vector"
    front = pareto_front(ours, x, y)
    fig = Figure(figsize=(9, 6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    rest = [r for r in ours if r not in front]
    if rest:
        ax.scatter([r[x] for r in rest], [r[y] for r in rest], s=18, color="0.65", zorder=2,
                   label="vecstore, other configurations")
    ax.plot([r[x] for r in front], [r[y] for r in front], "-o", color="tab:blue", zorder=3,
            label="vecstore Pareto front")
    for i, r in enumerate(front):  # labels alternate below / above the line so neighbours do not collide
        ax.annotate(r["config"], (r[x], r[y]), textcoords="offset points", xytext=(5, -12 if i % 2 == 0 else 7),
                    fontsize=7, color="tab:blue")
    for two_stage, marker, label in ((False, "x", "FAISS twin"), (True, "^", "FAISS twin + refine")):
        pts = [r for r in theirs if (r["rescore"] is not None) == two_stage]
        if pts:
            ax.scatter([r[x] for r in pts], [r[y] for r in pts], marker=marker, s=30, color="tab:orange",
                       zorder=4, label=label)
    ax.set_xscale("log")
    xs = [r[x] for r in rows]
    ticks = [2 ** e for e in range(0, 40) if min(xs) / 2 <= 2 ** e <= max(xs) * 2]
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(min(xs) / 1.3, max(xs) * 1.3)
    ax.set_xlabel(f"resident bytes per vector (codes + norms + parameters / {doc['workload']['nb']:,}; log scale)")
    ax.set_ylabel(y.replace("recall_at_", "recall@"))
    ax.set_ylim(min([r[y] for r in rows] + [0.9]) - 0.02, 1.02)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    w, m, threads = doc["workload"], doc["machine"], doc["settings"]["threads"]
    ax.set_title(f"{w['name']}: {w['nb']:,} x {w['d']}, {w['metric']}, {w['nq']} queries\n"
                 f"{m['cpu_model']}, {threads} thread{'s' if threads != 1 else ''}, k = {doc['settings']['k']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path
