"""The picture of a sweep: recall@10 against resident bytes per vector (log-x), and against speed.

Left panel: vecstore's Pareto front (no other configuration is both smaller and more accurate) is a
line with its configurations named; every other vecstore configuration is a grey point; FAISS's
twins are orange (crosses single-stage, triangles with a refine stage). Marker area grows with batch
QPS. Two-stage points differ in what their x counts: vecstore's fine tier is memory-mapped and not
counted (hollow squares), FAISS's refine vectors are resident and counted (triangles). The budget
(a vertical line, a total budget spread over the input's rows), the recall target (a horizontal
line) and the recommended configuration (a star) are marked when given.

Right panel: the same points against batch QPS (log-x), where "fastest" is read off.

matplotlib is imported on use, with the Agg canvas only (no pyplot, no global backend change), so a
server without a display can draw it.
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


def _budget_per_vector(constraints: dict) -> float | None:
    if constraints.get("budget_bytes_per_vector") is not None:
        return constraints["budget_bytes_per_vector"]
    if constraints.get("budget_total_bytes") is not None and constraints.get("corpus_rows"):
        return constraints["budget_total_bytes"] / constraints["corpus_rows"]
    return None


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
    top_qps = max(r["qps"] for r in rows)

    def size(r: dict) -> float:  # marker area: 12 (slowest) .. 160 (fastest), by sqrt of QPS
        return 12 + 148 * (r["qps"] / top_qps) ** 0.5

    fig = Figure(figsize=(13, 6), dpi=120)
    FigureCanvasAgg(fig)
    ax, sp = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    rec = doc.get("recommendation") or {}
    constraints = rec.get("constraints") or {}
    for panel, key in ((ax, x), (sp, "qps")):
        single = [r for r in ours if r not in front and r["rescore"] is None]
        mapped = [r for r in ours if r not in front and r["rescore"] is not None]
        if single:
            panel.scatter([r[key] for r in single], [r[y] for r in single], s=[size(r) for r in single],
                          color="0.6", zorder=2, label="vecstore, one stage")
        if mapped:
            panel.scatter([r[key] for r in mapped], [r[y] for r in mapped], s=[size(r) for r in mapped],
                          marker="s", facecolors="none", edgecolors="0.45", zorder=2,
                          label="vecstore, two-stage: fine tier mapped, not in x")
        if panel is ax:  # the front is a front by bytes: a line only where bytes are the x
            panel.plot([r[key] for r in front], [r[y] for r in front], "-", color="tab:blue", zorder=3)
        panel.scatter([r[key] for r in front], [r[y] for r in front], s=[size(r) for r in front],
                      color="tab:blue", zorder=3, label="vecstore Pareto front (by bytes)")
        for two_stage, marker, label in ((False, "x", "FAISS twin"),
                                         (True, "^", "FAISS twin + refine: refine vectors resident, in x")):
            pts = [r for r in theirs if (r["rescore"] is not None) == two_stage]
            if pts:
                panel.scatter([r[key] for r in pts], [r[y] for r in pts], marker=marker, s=[size(r) for r in pts],
                              color="tab:orange", zorder=4, label=label)
        if constraints.get("target_recall") is not None and (y == "recall_at_k" or constraints.get("k") == 10):
            panel.axhline(constraints["target_recall"], color="tab:green", ls="--", lw=1, zorder=1,
                          label=f"target recall@{constraints['k']} {constraints['target_recall']:g}")
        if rec.get("row"):
            r = rec["row"]
            panel.scatter([r[key]], [r[y]], marker="*", s=320, color="tab:red", edgecolors="black", zorder=6,
                          label=f"recommended: {r['config']}")
        faiss_best = (rec.get("faiss") or {}).get("at_target")
        if faiss_best:
            panel.scatter([faiss_best[key]], [faiss_best[y]], marker="D", s=90, facecolors="none",
                          edgecolors="tab:red", lw=1.5, zorder=6,
                          label=f"FAISS fastest at target: {faiss_best['factory']}")
    for i, r in enumerate(front):  # labels alternate below / above the line so neighbours do not collide
        ax.annotate(r["config"], (r[x], r[y]), textcoords="offset points", xytext=(5, -12 if i % 2 == 0 else 7),
                    fontsize=7, color="tab:blue")
    budget = _budget_per_vector(constraints)
    if budget is not None:
        ax.axvline(budget, color="tab:purple", ls=":", lw=1.5, zorder=1,
                   label=f"budget {budget:,.1f} B/vector resident")
    ax.set_xscale("log")
    xs = [r[x] for r in rows] + ([budget] if budget else [])
    ticks = [2 ** e for e in range(0, 40) if min(xs) / 2 <= 2 ** e <= max(xs) * 2]
    ax.set_xticks(ticks, [f"{t:,}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlim(min(xs) / 1.3, max(xs) * 1.3)
    corpus = doc["workload"].get("input_rows") or doc["workload"]["nb"]
    ax.set_xlabel(f"resident bytes per vector, in RAM (codes + norms + parameters / {corpus:,}; log scale)\n"
                  "vecstore two-stage: + a memory-mapped fine tier (page cache, not counted); "
                  "FAISS refine: vectors in RAM (counted)", fontsize=8)
    sp.set_xscale("log")
    sp.set_xlabel(f"batch queries per second ({doc['settings']['batch_queries']} queries a call; log scale)",
                  fontsize=8)
    label = y.replace("recall_at_", "recall@")
    for panel in (ax, sp):
        panel.set_ylabel(label)
        panel.set_ylim(min([r[y] for r in rows] + [0.9]) - 0.02, 1.02)
        panel.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=7, markerscale=0.6)
    sp.set_title("marker area grows with QPS in both panels", fontsize=8)
    w, m, threads = doc["workload"], doc["machine"], doc["settings"]["threads"]
    fig.suptitle(f"{w['name']}: {w['nb']:,} x {w['d']}, {w['metric']}, {w['nq']} queries; "
                 f"{m['cpu_model']}, {threads} thread{'s' if threads != 1 else ''}, k = {doc['settings']['k']}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return path
