"""The ``vecstore bench`` command: recall, memory and speed of codecs beside FAISS."""

from __future__ import annotations

import click

from vecstore.errors import InvalidInputError

from .group import cli
from .options import TrainSizeOption


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.option("--queries", "queries_path", default=None,
              help="Query vectors (.npy, .fvecs, FILE.h5:/DATASET, ann-benchmarks .hdf5: its test set).")
@click.option("--holdout", type=int, default=None,
              help="Hold out N input rows as queries (default without --queries: min(1000, n/10); an "
                   "ann-benchmarks INPUT uses its test set).")
@click.option("--ground-truth", "ground_truth", default=None,
              help="Neighbour rows (nq, k) of the queries, best first (.npy, .ivecs, FILE.h5:/DATASET). "
                   "Default: the ann-benchmarks file's, else computed exactly.")
@click.option("--codecs", default=None,
              help="Codec strings separated by ';' (e.g. \"raw;float16;int8;pca128,int8;pq64\"). "
                   "Default: a sweep chosen by the dimension.")
@click.option("--rescore", default=None, help="Fine tiers for two-stage rows: raw (default), float16, "
                                               "'raw,float16' or none.")
@click.option("--oversample", default=None, help="Oversampling factors for two-stage rows (default 2,4,8,16).")
@click.option("-k", "--k", "k", default=10, show_default=True, type=int, help="Results per query.")
@click.option("--out", "out_dir", default=None,
              help="Directory for results.json, report.txt and recall-vs-bytes.png.")
@click.option("--budget", default=None,
              help="Resident memory budget: per vector ('64B') or for the whole input ('50MB', '1.5GiB').")
@click.option("--target-recall", type=float, default=None, help="Least recall@k the recommendation must reach.")
@click.option("--threads", type=int, default=None, help="Threads for numba, FAISS and BLAS (default: numba's).")
@click.option("--n", "n", type=int, default=None, help="Use only the first N input rows (a quick run).")
@click.option("--metric", type=click.Choice(["ip", "cosine", "l2"]), default=None,
              help="Default: the store's or ann-benchmarks file's, else ip.")
@click.option("--train-size", cls=TrainSizeOption, show_default=True, type=int,
              help="Vectors each codec trains on (sampled as `compress` samples them).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--single", default=100, show_default=True, type=int, help="Single queries timed per configuration.")
@click.option("--repeats", default=3, show_default=True, type=int, help="Timed batch runs per configuration.")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document (rows for scripts) instead of the table.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def bench(input_path, queries_path, holdout, ground_truth, codecs, rescore, oversample, k, out_dir, budget,
          target_recall, threads, n, metric, train_size, seed, single, repeats, as_json, quiet) -> None:
    """Measure recall, memory and speed of codecs and rescoring settings on INPUT, FAISS alongside.

    INPUT: a store, .npy, .fvecs, FILE.h5:/DATASET or an ann-benchmarks .hdf5. With --budget and/or
    --target-recall, recommend the fastest configuration that meets them.
    """
    from vecstore.bench import report, sweep  # here, not at import: keeps `vecstore search` starting fast

    budget_parsed = report.parse_budget(budget) if budget is not None else None
    if target_recall is not None and not 0 < target_recall <= 1:
        raise InvalidInputError(f"--target-recall must be in (0, 1], got {target_recall}")
    doc = sweep.run_sweep(sweep.SweepOptions(
        input_path, queries=queries_path, holdout=holdout, ground_truth=ground_truth, codecs=codecs,
        rescore=rescore, oversample=oversample, k=k, n=n, metric=metric, threads=threads,
        train_size=train_size, seed=seed, single=single, repeats=repeats, progress=not quiet))
    click.echo(report.emit(doc, out_dir=out_dir, as_json=as_json, budget=budget_parsed,
                           target_recall=target_recall), nl=False)
