"""The ``vecstore shard-build`` and ``vecstore shard-search`` commands (sharded collections).

They call the public API only; errors are VecstoreError subclasses, which the group prints as one
line on stderr with exit code 1.
"""

from __future__ import annotations

import json
import os
import time

import click

import vecstore
from vecstore.ingest import open_vectors

from .group import cli
from .options import (TrainSizeOption, echo_results, human_bytes, nprobe_option, parse_vector, progress_option,
                      results_json)

SCHEDULER_HELP = "Dask scheduler address (tcp://HOST:PORT). Default: no cluster, this process."


@cli.command("shard-build")
@click.argument("input_path", metavar="INPUT")
@click.argument("outdir", metavar="OUTDIR")
@click.option("--shards", "n_shards", type=int, required=True, help="Number of shards (ordinary store files).")
@click.option("--codec", "codecs", multiple=True,
              help="Codec string of a tier every shard gets, trained once (repeatable): pq64, pca256,int8 ...")
@click.option("--metric", type=click.Choice(["ip", "cosine", "l2"]), default=None,
              help="Similarity. Default: the ann-benchmarks file's distance, else ip.")
@click.option("--keys", "keys_path", default=None, help="Text file (one key per line) or FILE.h5:/DATASET of strings.")
@click.option("--train-size", cls=TrainSizeOption, show_default=True, type=int,
              help="Vectors sampled from the whole input to train each codec on.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
              help="Recall@10 the calibrated default search must reach (measured on shard 0).")
@click.option("--no-calibrate", is_flag=True, help="Skip measuring the tiers' default oversampling.")
@click.option("--scheduler", default=None, help=SCHEDULER_HELP + " Workers must see INPUT and OUTDIR.")
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the scheduler to answer.")
@click.option("--force", is_flag=True, help="Replace a collection already in OUTDIR.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def shard_build(input_path, outdir, n_shards, codecs, metric, keys_path, train_size, seed, target_recall,
                no_calibrate, scheduler, timeout, force, quiet) -> None:
    """Train codecs once, then write OUTDIR: N store files sharing the parameters, and manifest.json."""
    t0 = time.perf_counter()
    manifest = vecstore.shard_build(input_path, outdir, shards=n_shards, codecs=list(codecs), metric=metric,
                                  keys=keys_path, train_size=train_size, seed=seed, calibrate=not no_calibrate,
                                  target_recall=target_recall, client=scheduler, overwrite=force,
                                  progress=progress_option(quiet), timeout=timeout)
    elapsed = time.perf_counter() - t0
    where = f"on {scheduler}" if scheduler else "in this process"
    click.echo(f"built {len(manifest.shards)} shards of {manifest.count} vectors x {manifest.dim} dims, "
               f"metric {manifest.metric}, {where} in {elapsed:.1f} s")
    rows = [("shard", "ids", "documents", "size")]
    for s in manifest.shards:
        size = os.path.getsize(manifest.shard_path(s))
        rows.append((s.file, f"{s.id_start}..{s.id_stop - 1}", str(s.count), human_bytes(size)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        click.echo("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    click.echo(f"tiers: {', '.join(f'{t.name} ({t.codec})' for t in manifest.tiers)}; "
               f"params digest {manifest.params_digest}")
    plan = manifest.default_search
    if plan and plan["rescore"]:
        cal = manifest.tier(plan["tier"]).calibration
        click.echo(f"default search: scan {plan['tier']}, rescore {plan['oversample']:g}x candidates from "
                   f"{plan['rescore']} per shard (calibrated recall@10 {cal['recall_at_10']:.3f} on "
                   f"{cal['queries']} documents of shard 0)")
    else:
        click.echo("default search: exact, on the raw tier (no calibrated compressed tier)")
    click.echo(f"manifest {manifest.path}")


@cli.command("shard-search")
@click.argument("manifest_path", metavar="MANIFEST")
@click.argument("queries_path", metavar="[QUERIES]", required=False)
@click.option("--vector", "vector_text", default=None, help="One query as comma-separated numbers.")
@click.option("-k", "--k", "k", default=10, show_default=True, type=int, help="Results per query.")
@click.option("--tier", default=None,
              help="Tier to scan. Default: the manifest's calibrated two-stage plan, else raw.")
@click.option("--rescore", default=None, help="Finer tier that re-scores each shard's candidates (e.g. raw).")
@click.option("--oversample", type=float, default=None,
              help="Candidates per result each shard takes from --tier for rescoring.")
@nprobe_option
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N queries.")
@click.option("--scheduler", default=None, help=SCHEDULER_HELP)
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Seconds to wait for the scheduler to answer.")
@click.option("--allow-partial", is_flag=True,
              help="Answer from the shards that can, naming the missing ones on stderr, instead of failing.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def shard_search(manifest_path, queries_path, vector_text, k, tier, rescore, oversample, nprobe, limit, scheduler,
                 timeout, allow_partial, as_json) -> None:
    """Search every shard of MANIFEST (its file or directory) with QUERIES or --vector; merge the top-k."""
    if (queries_path is None) == (vector_text is None):
        raise click.UsageError("give exactly one of a QUERIES file or --vector")
    if vector_text is not None:
        queries = parse_vector(vector_text)
    else:
        source = open_vectors(queries_path, prefer="test")
        queries = source.read_all() if limit is None else source.reader(0, min(limit, source.shape[0]))
    with vecstore.open_sharded(manifest_path, client=scheduler, timeout=timeout) as store:
        tier, rescore, oversample = store.resolve_plan(tier, rescore, oversample)
        result = store.search(queries, k, tier=tier, rescore=rescore, oversample=oversample,
                              allow_partial=allow_partial, nprobe=nprobe)
        distances, ids = result
        keys = store.keys(ids)
        metric, n_shards = store.metric, len(store.shards)
    if result.missing_shards:
        click.echo(f"warning: {len(result.missing_shards)} of {n_shards} shards did not answer and are missing "
                   f"from these results: {', '.join(result.missing_shards)}", err=True)
    if as_json:
        click.echo(json.dumps({"k": k, "metric": metric, "tier": tier, "rescore": rescore,
                               "oversample": oversample, "shards": n_shards,
                               "missing_shards": list(result.missing_shards),
                               "results": results_json(distances, ids, keys)}))
        return
    plan = f"tier {tier}" + (f", rescored from {rescore} with oversample {oversample:g} per shard" if rescore else "")
    click.echo(f"# {plan}; {n_shards} shards " + (f"on {scheduler}" if scheduler else "in this process"))
    echo_results(distances, ids, keys, metric)
