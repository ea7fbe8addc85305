#!/usr/bin/env python
"""What the metric costs a query: the same vectors stored as cosine, ip and l2, against FAISS.

    python benchmarks/bench_metrics.py                # real 100,000 x 384 (../shared/data/wordnet-minilm-384.hdf5)
    python benchmarks/bench_metrics.py --data data/wordnet-minilm-384-small.hdf5 --nq 100 --single 200   # quick

The real set is the WordNet / all-MiniLM-L6-v2 file of the project's shared data folder (copy it to
../shared/data/ beside the repository, or regenerate it with ../shared/data/make_wordnet_minilm.py;
see benchmarks/README.md). Without it the script says so and how to use the bundled 10,000 subset.

Its vectors have unit length, so the three metrics rank the same neighbours: a difference in time is
what the metric itself costs. An l2 store scores ``2 q . x - |x|^2``: its 4-bit tier carries each
row's ``-|x|^2`` as a bias, which the fast scan must take into account row by row (docs/kernels.md,
"A limit per row"). Per metric: a store of raw + ``--codec`` (default pq96x4), calibrated as
``vecstore compress`` does, searched with its default plan, held in RAM; its FAISS twin
(``PQ96x4fs`` + ``IndexRefineFlat`` with the plan's oversampling as k_factor, the same training rows,
the metric's FAISS metric). Recall@10 against the exact top-10 of the metric (raw vectors), single-query
p50 of the store's and its twin's one-query calls in a random order each round
(metrics.time_round_robin), the metrics taking turns (two turns each, half the rounds a turn), batch
QPS; the ratios are to the cosine store and to the metric's twin.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

METRICS = ("cosine", "ip", "l2")


def parse_args(argv):
    from vecstore.bench import script

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="ann-benchmarks .hdf5 (default: the real 100K x 384 set)")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--nq", type=int, default=1000, help="queries for recall and batch QPS")
    ap.add_argument("--single", type=int, default=2000,
                    help="rounds of one-query calls timed per system (p50), cycling over the --nq queries")
    ap.add_argument("--codec", default="pq96x4")
    ap.add_argument("--train-size", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=384)
    script.add_blas_core_option(ap)
    script.add_output_options(ap, HERE)
    return ap.parse_args(argv)


def exact_top(xb: np.ndarray, xq: np.ndarray, metric: str, k: int) -> np.ndarray:
    """The exact top-k rows of each query under ``metric`` (ties to the lower row), in float64."""
    xb64, xq64 = xb.astype(np.float64), xq.astype(np.float64)
    if metric == "cosine":
        xb64 = xb64 / np.linalg.norm(xb64, axis=1, keepdims=True)
        xq64 = xq64 / np.linalg.norm(xq64, axis=1, keepdims=True)
    scores = xq64 @ xb64.T
    if metric == "l2":
        scores = 2 * scores - (xb64 * xb64).sum(axis=1)[None, :]
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def main(argv=None) -> None:
    from vecstore.bench import script

    args = parse_args(argv)
    threads, log, ds, load_start = script.start_timed(args)

    import faiss

    import vecstore
    from vecstore.bench import faiss_twins, metrics
    from vecstore.query import recall_at_k

    xb, xq_all = ds.get_database(), ds.get_queries()
    n, d = xb.shape
    nq = min(args.nq, xq_all.shape[0])
    xq = np.ascontiguousarray(xq_all[:nq], dtype=np.float32)
    log(f"{ds.name}: {n} x {d}, {nq} queries, {threads} threads, codec {args.codec}")
    norms = np.linalg.norm(xb, axis=1)
    work = tempfile.mkdtemp(dir=args.workdir)
    k = 10
    stores, twins, queries, rows, keep = {}, {}, {}, {}, []
    for metric in METRICS:
        path = os.path.join(work, f"{metric}.vs")
        t0 = time.perf_counter()
        vecstore.build(path, xb, metric=metric, progress=False).close()
        vecstore.compress(path, args.codec, train_size=args.train_size, seed=args.seed, progress=False).close()
        built_s = time.perf_counter() - t0
        store = stores[metric] = vecstore.open(path, resident=[args.codec])
        plan = store.default_plan()
        raw = np.asarray(store.tier("raw").codes)
        train = raw[faiss_twins.training_rows(n, min(args.train_size, n), args.seed)]
        base = faiss.index_factory(d, faiss_twins.twin_factory_string(args.codec), faiss_twins.faiss_metric(metric))
        base.train(np.ascontiguousarray(train))
        twin = faiss.IndexRefineFlat(base)
        twin.k_factor = float(plan.oversample or 1.0)
        twin.add(raw)
        keep.append(base)  # (the refine index holds a raw pointer to it)
        twins[metric] = twin
        queries[metric] = script.faiss_queries(xq, metric)
        truth = exact_top(xb, xq, metric, k)
        ours = store.search(xq, k)
        _, theirs = twin.search(queries[metric], k)
        rows[metric] = {"metric": metric, "plan": list(plan), "build_s": built_s,
                        "faiss": f"{faiss_twins.twin_factory_string(args.codec)} + IndexRefineFlat(k_factor="
                                 f"{twin.k_factor:g})",
                        "recall": float(recall_at_k(ours.ids, truth, k).mean()),
                        "faiss_recall": float(recall_at_k(theirs, truth, k).mean())}
        log(f"{metric}: plan {tuple(plan)}, recall {rows[metric]['recall']:.4f} "
            f"(faiss {rows[metric]['faiss_recall']:.4f}), built in {built_s:.1f} s")

    # each metric's store against its twin, as an application runs one store: the metrics' turns
    # alternate, each half the rounds, so a drift of the machine's load falls on all of them
    times: dict[str, list[float]] = {}
    for turn in range(2):
        for metric in METRICS:
            pair = {metric: lambda q, s=stores[metric]: s.search(q, k),
                    f"faiss {metric}": lambda q, t=twins[metric]: t.search(q, k)}
            got = metrics.time_round_robin(pair, {metric: xq, f"faiss {metric}": queries[metric]},
                                           args.single // 2, seed=turn)
            for name, seconds in got.items():
                times.setdefault(name, []).extend(seconds)
    for metric in METRICS:
        batch = metrics.time_repeated_interleaved({"vecstore": lambda s=stores[metric]: s.search(xq, k),
                                                   "faiss": lambda t=twins[metric], f=queries[metric]: t.search(f, k)},
                                                  repeats=3, budget_s=2.0)
        row = rows[metric]
        row.update(p50_ms=float(np.median(times[metric])) * 1e3,
                   faiss_p50_ms=float(np.median(times[f"faiss {metric}"])) * 1e3,
                   qps=nq / batch["vecstore"].median, faiss_qps=nq / batch["faiss"].median)
        log(f"{metric}: p50 {row['p50_ms']:.3f} ms (faiss {row['faiss_p50_ms']:.3f}), QPS {row['qps']:.0f} "
            f"(faiss {row['faiss_qps']:.0f})")
    for store in stores.values():
        store.close()
    shutil.rmtree(work)  # (three stores of the whole set: ~0.5 GB at 100K x 384)

    result = {"dataset": ds.name, "n": n, "dim": d, "nq": nq, "single": args.single, "k": k, "threads": threads,
              "codec": args.codec, "norm_range": [float(norms.min()), float(norms.max())],
              "rows": [rows[m] for m in METRICS], "machine": metrics.machine(), "load_start": load_start,
              "command": script.command_line(__file__, argv)}
    stem = os.path.join(args.out, f"metrics-{script.dataset_tag(ds)}")
    script.write_results(stem, result, markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    from vecstore.bench.script import load_text

    cosine = next(row for row in r["rows"] if row["metric"] == "cosine")
    lo, hi = r["norm_range"]
    lines = [
        f"# The metric's cost: {r['dataset']} ({r['n']} x {r['dim']}), k = {r['k']}",
        "",
        f"`{r['command']}`",
        "",
        f"The same vectors (norms {lo:.4f}-{hi:.4f}) stored as each metric: raw + `{r['codec']}`, the default plan, "
        f"the coarse tier held in RAM, {r['threads']} threads (numba and FAISS), warm page cache. Recall@10 against "
        f"the exact top-10 of the metric. p50: {r['single']} rounds per metric, each timing one call of the store "
        "and one of its FAISS twin in a random order, each call on the next query, the metrics taking turns "
        f"(two turns of half the rounds each). QPS: batches of {r['nq']} queries.",
        "",
        "| metric | plan | recall@10 | FAISS twin | FAISS recall@10 | p50 ms | / cosine | FAISS p50 ms | p50 / FAISS "
        "| QPS | FAISS QPS |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        tier, rescore, over = row["plan"]
        plan = tier if rescore is None else f"{tier} > {rescore} x{over:g}"
        lines.append(f"| {row['metric']} | {plan} | {row['recall']:.4f} | {row['faiss']} | {row['faiss_recall']:.4f} "
                     f"| {row['p50_ms']:.3f} | {row['p50_ms'] / cosine['p50_ms']:.3f}x | {row['faiss_p50_ms']:.3f} | "
                     f"{row['p50_ms'] / row['faiss_p50_ms']:.2f}x | {row['qps']:.0f} | {row['faiss_qps']:.0f} |")
    m = r["machine"]
    lines += ["", f"Machine: {m.get('cpu_model', '')}; load average (1, 5, 15 min) at the start "
              f"{load_text(r.get('load_start'))}, at the end {load_text(m.get('load_average'))}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
