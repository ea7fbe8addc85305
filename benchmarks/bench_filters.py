#!/usr/bin/env python
"""Filtered search at every selectivity, against FAISS with an id selector: issue 18's figures.

    python benchmarks/bench_filters.py                # real 100,000 x 384 (../shared/data/wordnet-minilm-384.hdf5)
    python benchmarks/bench_filters.py --data data/wordnet-minilm-384-small.hdf5 --nq 100 --single 200   # quick

The real set is the WordNet / all-MiniLM-L6-v2 file of the project's shared data folder (copy it to
../shared/data/ beside the repository, or regenerate it with ../shared/data/make_wordnet_minilm.py;
see benchmarks/README.md). Without it the script says so and how to use the bundled 10,000 subset.

The store: raw + one coarse tier (``--codec``, default pq96x4), calibrated as `vecstore compress`
does, searched with its default plan. Generated fields of known selectivity: ``r`` is a permutation
of the rows modulo 10,000, so ``r < c`` admits exactly c / 10,000 of the documents (50%, 10%, 1%,
0.1%, 0.01%); ``lang`` (4 values) and ``year`` (1990-2024) make the two-field predicate
``lang = 'en' and year >= 2020``. Ground truth: exact top-10 among the admitted rows (raw tier).

Per selectivity: recall@10, single-query p50 (the ``where=`` text repeated, as the view keeps it
compiled and evaluated; and with that cache emptied before each call) beside the unfiltered query's
and FAISS's in the same calls, batch QPS, the strategy chosen; FAISS's twin (``IVF1,PQ96x4fs`` + ``IndexRefineFlat`` with the same
k_factor as the plan's oversample: FAISS takes a selector on fast-scan codes only through an
inverted file, so the codes sit in one list) searched with ``SearchParameters(sel=IDSelectorBitmap)``, the same
queries, the same thread count, the systems' one-query calls in a random order each round
(metrics.time_round_robin). The table's first row times the unfiltered query twice: the
measurement's own spread. Then the crossover behind
vecstore.filters.strategy.EXACT_RATIO (both strategies forced at several allowed counts), and the
time to evaluate the two-field predicate over the store's 100,000 rows and over 10,000,000
generated rows.
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

SELECTIVITIES = (0.5, 0.1, 0.01, 0.001, 0.0001)
# admitted rows of the crossover table (of 100,000; scaled to the store's size)
CROSSOVER_COUNTS = (250, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000, 8000)
TWO_FIELDS = "lang = 'en' and year >= 2020"


def parse_args(argv):
    from vecstore.bench import script

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=None, help="ann-benchmarks .hdf5 (default: the real 100K x 384 set)")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--nq", type=int, default=1000, help="queries for recall and batch QPS")
    ap.add_argument("--single", type=int, default=1000,
                    help="rounds of one-query calls timed per system (p50), cycling over the --nq queries")
    ap.add_argument("--codec", default="pq96x4")
    ap.add_argument("--train-size", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--big", type=int, default=10_000_000, help="rows of the generated predicate-timing columns")
    script.add_blas_core_option(ap)
    script.add_output_options(ap, HERE)
    return ap.parse_args(argv)


def make_fields(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    r = rng.permutation(n) % 10000
    lang = rng.choice(np.array(["en", "de", "fr", "es"]), size=n, p=[0.5, 0.2, 0.2, 0.1])
    year = rng.integers(1990, 2025, size=n)
    return [{"r": int(a), "lang": str(b), "year": int(c)} for a, b, c in zip(r, lang, year)]


def median_seconds(fns: dict, xq, rounds: int) -> dict[str, float]:
    """Median seconds of each system's one-query calls (metrics.time_round_robin: a random order
    each round, each call on the next query). The timing this replaced gave every system of a round
    the queries of the system before it a few rounds later: the last system read each query's rows
    first and the first one found them in cache, and four copies of one search measured up to 1.04x
    apart (0.2% apart so)."""
    from vecstore.bench import metrics

    return {name: float(np.median(v)) for name, v in metrics.time_round_robin(fns, xq, rounds).items()}


def _forget_filters(store) -> None:
    """Empty the current view's cache of compiled filters and masks (vecstore.store.masks)."""
    from vecstore.store.masks import FilterCache

    store._now().filter_cache = FilterCache()


def exact_filtered(scores: np.ndarray, allowed: np.ndarray, k: int) -> np.ndarray:
    """Top-k rows of each query among ``allowed`` (ties to the lower row), padded with -1."""
    rows = np.flatnonzero(allowed)
    sub = scores[:, rows]
    take = min(k, rows.shape[0])
    order = np.argsort(-sub, axis=1, kind="stable")[:, :take]
    out = np.full((scores.shape[0], k), -1, dtype=np.int64)
    out[:, :take] = rows[order]
    return out


def main(argv=None) -> None:
    from vecstore.bench import script

    args = parse_args(argv)
    threads, log, ds, load_start = script.start_timed(args)

    import faiss

    import vecstore
    from vecstore.bench import faiss_twins, metrics
    from vecstore.filters import Column, compile_filter
    from vecstore.filters import strategy as strategy_module
    from vecstore.query import recall_at_k

    xb, xq_all = ds.get_database(), ds.get_queries()
    n, d = xb.shape
    nq = min(args.nq, xq_all.shape[0])
    xq = xq_all[:nq]
    log(f"{ds.name}: {n} x {d}, {nq} queries, {threads} threads, codec {args.codec}")
    meta = make_fields(n, args.seed)
    work = tempfile.mkdtemp(dir=args.workdir)
    path = os.path.join(work, "filters.vs")
    t0 = time.perf_counter()
    vecstore.build(path, xb, metric=ds.metric, metadata=meta, fields=["r", "lang", "year"], progress=False).close()
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    vecstore.compress(path, args.codec, train_size=args.train_size, seed=args.seed, progress=False).close()
    compress_s = time.perf_counter() - t0
    store = vecstore.open(path, resident=[args.codec])
    plan = store.default_plan()
    log(f"built in {build_s:.1f} s, {args.codec} in {compress_s:.1f} s; default plan {tuple(plan)}")

    # FAISS twin: the same training rows, the same raw vectors, refined by the same factor
    raw = np.asarray(store.tier("raw").codes)
    train = raw[faiss_twins.training_rows(n, min(args.train_size, n), args.seed)]
    # FAISS's flat fast-scan and PQ indexes refuse search parameters (1.15: "search params not
    # supported for this index"); its selector reaches PQ codes through an inverted file, so the twin
    # is the same codes in one list: IVF1,<codes> (residuals from the one centroid, the mean)
    factory = "IVF1," + faiss_twins.twin_factory_string(args.codec)
    base = faiss.index_factory(d, factory, faiss_twins.faiss_metric(ds.metric))
    base.train(np.ascontiguousarray(train))
    twin = faiss.IndexRefineFlat(base)
    twin.add(raw)
    k_factor = float(plan.oversample or 1.0)
    fq = script.faiss_queries(xq, ds.metric)
    k = 10

    scores = fq @ raw.T if ds.metric != "l2" else -(((fq[:, None, :] - raw[None]) ** 2).sum(-1))
    r_values = np.array([m["r"] for m in meta])
    lang_en = np.array([m["lang"] == "en" for m in meta])
    year_values = np.array([m["year"] for m in meta])
    cases = [("none", None, np.ones(n, bool))]
    for s in SELECTIVITIES:
        c = max(1, int(round(s * 10000)))
        cases.append((f"{s * 100:g}%", f"r < {c}", r_values < c))
    cases.append(("two fields", TWO_FIELDS, lang_en & (year_values >= 2020)))

    rows = []
    for label, where, allowed in cases:
        truth = exact_filtered(scores, allowed, k)
        packed = np.packbits(allowed.astype(np.uint8), bitorder="little")
        selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(packed))
        base_params = faiss.SearchParametersIVF(nprobe=1, sel=selector)
        if where is None:
            ours = lambda q: store.search(q, k)  # noqa: E731
            base_params = faiss.SearchParametersIVF(nprobe=1)
        else:
            ours = lambda q, w=where: store.search(q, k, where=w)  # noqa: E731
        params = faiss.IndexRefineSearchParameters(k_factor=k_factor, base_index_params=base_params)
        keep = (selector, packed, base_params)  # noqa: F841  (FAISS holds raw pointers into these)
        theirs = lambda q, p=params: twin.search(q, k, params=p)  # noqa: E731
        result = ours(xq)
        strategy = getattr(result, "strategy", "unfiltered")
        _, fi = theirs(fq)
        # one query a call, alternating: the filter as an application repeats it (its compiled form
        # and masks kept by the view), the same with the view's filter cache emptied first (parsed
        # and evaluated in the call), the unfiltered query, FAISS
        uncached = lambda q, w=where: (_forget_filters(store), ours(q))[1] if w is not None else ours(q)
        single = median_seconds({"vecstore": ours, "uncached": uncached, "unfiltered": lambda q: store.search(q, k),
                                 "faiss": theirs}, {"vecstore": xq, "uncached": xq, "unfiltered": xq, "faiss": fq},
                                args.single)
        batch = metrics.time_repeated_interleaved({"vecstore": lambda: ours(xq), "faiss": lambda: theirs(fq)},
                                                  repeats=3, budget_s=2.0)
        row = {"case": label, "where": where, "allowed": int(allowed.sum()), "strategy": strategy,
               "recall": float(recall_at_k(result.ids, truth, k).mean()),
               "faiss_recall": float(recall_at_k(fi, truth, k).mean()),
               "p50_ms": single["vecstore"] * 1e3, "faiss_p50_ms": single["faiss"] * 1e3,
               "uncached_p50_ms": single["uncached"] * 1e3, "unfiltered_p50_ms": single["unfiltered"] * 1e3,
               "qps": nq / batch["vecstore"].median, "faiss_qps": nq / batch["faiss"].median}
        rows.append(row)
        log(f"{label:>10}: {row['allowed']:>6} allowed, {strategy:<20} recall {row['recall']:.3f} "
            f"(faiss {row['faiss_recall']:.3f}), p50 {row['p50_ms']:.3f} ms (uncached {row['uncached_p50_ms']:.3f}, "
            f"unfiltered {row['unfiltered_p50_ms']:.3f}, faiss {row['faiss_p50_ms']:.3f}), "
            f"QPS {row['qps']:.0f} (faiss {row['faiss_qps']:.0f})")

    # the crossover: both strategies forced, one query at a time, alternating call by call (so a
    # change of the machine's load falls on both); finer steps around the break-even
    crossover = []
    saved = strategy_module.EXACT_RATIO

    def forced(ratio: float, where: str):
        def call(q: np.ndarray):
            strategy_module.EXACT_RATIO = ratio
            return store.search(q, k, where=where)
        return call

    for count in CROSSOVER_COUNTS:
        c = count * 10000 // n
        if c < 1 or c > 10000:
            continue
        where = f"r < {c}"
        timing = median_seconds({"exact": forced(1e30, where), "filtered-two-stage": forced(0.0, where)}, xq,
                                args.single)
        timing = {name: seconds * 1e3 for name, seconds in timing.items()}
        strategy_module.EXACT_RATIO = saved
        crossover.append({"allowed": int((r_values < c).sum()), "work": int((r_values < c).sum()) * d,
                          "ratio": int((r_values < c).sum()) * d / (n * store.tier(plan.tier).code_size),
                          "exact_ms": timing["exact"], "two_stage_ms": timing["filtered-two-stage"]})
        log(f"crossover: {crossover[-1]}")

    # evaluating the two-field predicate: the store's columns, and generated big ones
    part = store._now().base
    predicate = compile_filter(TWO_FIELDS, store.fields)
    columns = part.field_columns()
    eval_small = metrics.time_repeated(lambda: predicate.mask(columns, n), repeats=50, warmup=3).median
    rng = np.random.default_rng(1)
    big = args.big
    big_columns = {
        "lang": Column("lang", "string", big, codes=rng.integers(0, 4, size=big).astype("<i4"),
                       dictionary=["de", "en", "es", "fr"]),
        "year": Column("year", "int", big, values=rng.integers(1990, 2025, size=big).astype("<i8"),
                       present=np.ones(big, dtype=np.uint8)),
    }
    big_predicate = compile_filter(TWO_FIELDS, {"lang": "string", "year": "int"})
    eval_big = metrics.time_repeated(lambda: big_predicate.mask(big_columns, big), repeats=5, warmup=1).median
    log(f"two-field predicate: {eval_small * 1e3:.3f} ms over {n} rows, {eval_big * 1e3:.1f} ms over {big} rows")
    store.close()
    shutil.rmtree(work)

    machine = metrics.machine()
    result = {"dataset": ds.name, "n": n, "dim": d, "nq": nq, "single": args.single, "k": k,
              "threads": threads, "codec": args.codec, "plan": list(plan), "exact_ratio": saved,
              "faiss_twin": f"{factory} + IndexRefineFlat(k_factor={k_factor:g})",
              "rows": rows, "crossover": crossover, "predicate_ms": eval_small * 1e3,
              "predicate_big_rows": big, "predicate_big_ms": eval_big * 1e3, "build_s": build_s,
              "compress_s": compress_s, "machine": machine, "load_start": load_start,
              "command": script.command_line(__file__, argv)}
    stem = os.path.join(args.out, f"filters-{script.dataset_tag(ds)}")
    script.write_results(stem, result, markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    from vecstore.bench.script import load_text

    tier, rescore, over = r["plan"]
    lines = [
        f"# Filtered search: {r['dataset']} ({r['n']} x {r['dim']}), k = {r['k']}",
        "",
        f"`{r['command']}`",
        "",
        f"{r['threads']} threads (numba and FAISS), warm page cache, coarse tier held in RAM. vecstore's default "
        f"plan: scan `{tier}`, rescore {over:g}x from `{rescore}`; FAISS: {r['faiss_twin']} with "
        "`SearchParameters(sel=IDSelectorBitmap)`. Recall@10 against the exact top-10 among the admitted "
        f"documents. p50: {r['single']} rounds, each timing one call of each, in a random order, each call on "
        "the next query: vecstore with the "
        "`where=` text (compiled and evaluated once per view, then kept: an application repeating its filter), "
        "the same with the view's filter cache emptied before the call (parsed and evaluated in it: "
        "*uncached*), vecstore's unfiltered query, and FAISS; "
        "the ratios are to FAISS and to the unfiltered query of the same calls (the first row times the "
        "unfiltered query as both: the measurement's own spread). "
        f"QPS: batches of {r['nq']} queries.",
        "",
        "| filter | admitted | strategy | recall@10 | FAISS recall@10 | p50 ms | uncached p50 ms | unfiltered p50 ms "
        "| FAISS p50 ms | p50 / FAISS | uncached / FAISS | p50 / unfiltered | QPS | FAISS QPS |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        where = "(none)" if row["where"] is None else f"`{row['where']}`"
        lines.append(f"| {row['case']} {where} | {row['allowed']} | {row['strategy']} | {row['recall']:.3f} | "
                     f"{row['faiss_recall']:.3f} | {row['p50_ms']:.3f} | {row['uncached_p50_ms']:.3f} | "
                     f"{row['unfiltered_p50_ms']:.3f} | {row['faiss_p50_ms']:.3f} | "
                     f"{row['p50_ms'] / row['faiss_p50_ms']:.2f}x | {row['uncached_p50_ms'] / row['faiss_p50_ms']:.2f}x | "
                     f"{row['p50_ms'] / row['unfiltered_p50_ms']:.3f}x | {row['qps']:.0f} | {row['faiss_qps']:.0f} |")
    lines += ["", "Crossover: single-query p50 with each strategy forced (the two in a random order each round, "
              f"{r['single']} rounds); vecstore chooses exact while "
              f"admitted x dim <= EXACT_RATIO ({r['exact_ratio']:g}) x rows x coarse code bytes (the ratio column).",
              "", "| admitted | admitted x dim | ratio | exact on admitted rows, ms | filtered two-stage, ms |",
              "|---|---|---|---|---|"]
    for c in r["crossover"]:
        lines.append(f"| {c['allowed']} | {c['work']:,} | {c['ratio']:.2f} | {c['exact_ms']:.3f} | "
                     f"{c['two_stage_ms']:.3f} |")
    lines += ["", f"Evaluating `{TWO_FIELDS}` into a row mask: {r['predicate_ms']:.3f} ms over {r['n']:,} rows; "
              f"{r['predicate_big_ms']:.1f} ms over {r['predicate_big_rows']:,} generated rows.", "",
              f"Build {r['build_s']:.1f} s, compress {r['compress_s']:.1f} s. Machine: "
              f"{r['machine'].get('cpu_model', '')}; load average (1, 5, 15 min) at the start "
              f"{load_text(r.get('load_start'))}, at the end {load_text(r['machine'].get('load_average'))}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
