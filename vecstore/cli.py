"""The ``vecstore`` command line: build, info, compress, search, export-params, bench (and, from
cli_lifecycle, append, delete, compact, swap, check).

It calls the public API only. A :class:`VecstoreError` becomes one line on stderr and exit code 1;
anything else is a bug and keeps its traceback. Progress bars go to stderr, results to stdout.
"""

from __future__ import annotations

import json
import math
import sys

import click
import numpy as np

import vecstore

from .errors import InvalidInputError, VecstoreError
from .provenance import describe
from .ingest import open_vectors


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VecstoreError as exc:
            raise click.ClickException(" ".join(str(exc).split())) from None


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _json_number(x: float):
    return None if not math.isfinite(x) else float(x)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(vecstore.__version__, prog_name="vecstore")
def cli() -> None:
    """Store a neural network's outputs in one memory-mapped HDF5 file and search them fast."""


@cli.command()
@click.argument("input_path", metavar="INPUT")
@click.argument("store_path", metavar="STORE")
@click.option("--metric", type=click.Choice(["ip", "cosine", "l2"]), default=None,
              help="Similarity. Default: the ann-benchmarks file's distance, else ip.")
@click.option("--keys", "keys_path", default=None, help="Text file (one key per line) or FILE.h5:/DATASET of strings.")
@click.option("--metadata", "metadata_path", default=None, help="JSON-lines file: one object (or blank line) per vector.")
@click.option("--model", "model_spec", default=None, metavar="NAME@VERSION",
              help="The model that produced the vectors (recorded; other versions are refused later).")
@click.option("--model-params", "model_params_path", default=None, metavar="FILE",
              help="The model's parameters (.npz, or JSON of number lists) to fingerprint it by.")
@click.option("--force", is_flag=True, help="Replace STORE if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def build(input_path, store_path, metric, keys_path, metadata_path, model_spec, model_params_path, force,
          quiet) -> None:
    """Build STORE from INPUT (.npy, .fvecs, FILE.h5:/DATASET or an ann-benchmarks .hdf5)."""
    import time

    from .provenance import load_model_params

    t0 = time.perf_counter()
    params = load_model_params(model_params_path) if model_params_path else None
    store = vecstore.build(store_path, input_path, metric=metric, keys=keys_path, metadata=metadata_path,
                           model=model_spec, model_params=params, overwrite=force, progress=not quiet)
    with store:
        info = store.info()
    click.echo(f"built {store_path}: {info['count']} vectors x {info['dim']} dims, metric {info['metric']}, "
               f"{_human_bytes(info['file_bytes'])} in {time.perf_counter() - t0:.1f} s")


@cli.command()
@click.argument("store_path", metavar="STORE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--untrusted", is_flag=True, help="A file from outside: read its header in a limited child process first.")
def info(store_path, as_json, untrusted) -> None:
    """Describe STORE: count, dim, metric, format version and every tier."""
    with vecstore.open(store_path, untrusted=untrusted) as store:
        data = store.info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"store      {data['path']}")
    click.echo(f"format     vecstore v{data['format_version']} (written by vecstore {data['written_by']})")
    click.echo(f"documents  {data['count']} x {data['dim']} dims, metric {data['metric']}")
    click.echo(f"keys       {'yes' if data['has_keys'] else 'no'}; metadata {'yes' if data['has_metadata'] else 'no'}")
    if data["model"]:
        click.echo(f"model      {describe(data['model']) if 'name' in data['model'] else json.dumps(data['model'])}")
    click.echo(f"file       {_human_bytes(data['file_bytes'])}")
    if data["segments"] or data["deleted"]:
        click.echo(f"changes    {data['main_count']} documents in the main file, "
                   f"{sum(s['count'] for s in data['segments'])} appended in {len(data['segments'])} segment(s), "
                   f"{data['deleted']} deleted (`vecstore compact` merges them)")
    click.echo("")
    rows = [("tier", "codec", "bytes/vector", "codes", "params", "compression")]
    raw = data["dim"] * 4
    for t in data["tiers"]:
        rows.append((t["name"], t["codec"], str(t["bytes_per_vector"]), _human_bytes(t["code_bytes"]),
                     _human_bytes(t["param_bytes"]), f"{raw / t['bytes_per_vector']:.1f}x"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    click.echo("")
    tier, rescore, oversample = data["default_search"]
    if rescore:
        cal = next(t["calibration"] for t in data["tiers"] if t["name"] == tier)
        click.echo(f"default search: scan {tier}, rescore {oversample:g}x candidates from {rescore} "
                   f"(calibrated recall@10 {cal['recall_at_10']:.3f} on {cal['queries']} stored documents)")
    else:
        click.echo("default search: exact, on the raw tier (no calibrated compressed tier yet)")


def _parse_vector(text: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise InvalidInputError("--vector must be numbers separated by commas or spaces") from None
    return np.asarray(values, dtype=np.float32)


@cli.command()
@click.argument("store_path", metavar="STORE")
@click.argument("queries_path", metavar="[QUERIES]", required=False)
@click.option("--vector", "vector_text", default=None, help="One query as comma-separated numbers.")
@click.option("--text", "query_text", default=None, help="One query as text, encoded by the store's text encoder.")
@click.option("-k", "--k", "k", default=10, show_default=True, type=int, help="Results per query.")
@click.option("--tier", default=None,
              help="Tier to scan. Default: the store's calibrated two-stage plan (see `info`), else raw.")
@click.option("--rescore", default=None, help="Finer tier that re-scores the candidates (e.g. raw, float16).")
@click.option("--oversample", type=float, default=None,
              help="Candidates per result taken from --tier for rescoring (default: calibrated, else 4).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N queries.")
@click.option("--model", "model_spec", default=None, metavar="NAME@VERSION",
              help="The model that made the queries: refused if the store's vectors come from another.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def search(store_path, queries_path, vector_text, query_text, k, tier, rescore, oversample, limit,
           model_spec, as_json) -> None:
    """Search STORE with QUERIES (.npy, .fvecs, FILE.h5:/DATASET, ann-benchmarks .hdf5: its test set) or --vector."""
    if sum(x is not None for x in (queries_path, vector_text, query_text)) != 1:
        raise click.UsageError("give exactly one of a QUERIES file, --vector or --text")
    unknown = None
    if query_text is not None:
        with vecstore.open(store_path) as store:
            queries, unknown = store.encoder().encode([query_text])
        if unknown[0]:
            click.echo(f"skipped unknown words: {', '.join(unknown[0])}", err=True)
    elif vector_text is not None:
        queries = _parse_vector(vector_text)
    else:
        source = open_vectors(queries_path, prefer="test")
        queries = source.read_all() if limit is None else source.reader(0, min(limit, source.shape[0]))
    with vecstore.open(store_path) as store:
        tier, rescore, oversample = store.resolve_plan(tier, rescore, oversample)
        distances, ids = store.search(queries, k, tier=tier, rescore=rescore, oversample=oversample,
                                      model=model_spec)
        keys = store.keys(ids)
        metric = store.metric
    if as_json:
        results = [{"query": q, "ids": ids[q].tolist(),
                    "distances": [_json_number(x) for x in distances[q]], "keys": keys[q]}
                   for q in range(ids.shape[0])]
        doc = {"k": k, "metric": metric, "tier": tier, "rescore": rescore, "oversample": oversample,
               "results": results}
        if unknown is not None:
            doc["unknown_words"] = unknown[0]
        click.echo(json.dumps(doc))
        return
    plan = f"tier {tier}" + (f", rescored from {rescore} with oversample {oversample:g}" if rescore else "")
    click.echo(f"# {plan}")
    label = "distance" if metric == "l2" else "score"
    for q in range(ids.shape[0]):
        click.echo(f"query {q}")
        click.echo(f"  {'rank':>4}  {'id':>10}  {label:>10}  key")
        for r in range(ids.shape[1]):
            key = keys[q][r] if keys[q][r] is not None else ""
            click.echo(f"  {r + 1:>4}  {ids[q, r]:>10}  {distances[q, r]:>10.4f}  {key}")


@cli.command()
@click.argument("store_path", metavar="STORE")
@click.option("--codec", default=None, help="Codec string, e.g. float16, int8, pca256,int8, pq64, pq128x4.")
@click.option("--name", default=None, help="Tier name (default: the codec string).")
@click.option("--train-size", default=vecstore._build.DEFAULT_TRAIN_SIZE, show_default=True, type=int,
              help="Vectors sampled from the raw tier to train on.")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--params", "params_path", default=None,
              help="JSON from export-params: encode with these parameters, no training.")
@click.option("--replace", is_flag=True, help="Replace an existing tier of that name.")
@click.option("--retrain", "retrain_tier", default=None, metavar="TIER",
              help="Retrain TIER's codec on the current documents and replace it (what `check` advises).")
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True), default=0.95, show_default=True,
              help="Recall@10 the calibrated default search must reach.")
@click.option("--no-calibrate", is_flag=True, help="Skip measuring the tier's default oversampling.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def compress(store_path, codec, name, train_size, seed, params_path, replace, retrain_tier, target_recall,
             no_calibrate, quiet) -> None:
    """Add a compressed tier to STORE (the file is rewritten atomically)."""
    import time

    from .params_json import load_params

    params = None
    if retrain_tier is not None:
        if codec or params_path or name:
            raise click.UsageError("--retrain takes the tier's own codec and name: drop --codec, --params, --name")
        with vecstore.open(store_path) as store:
            codec, name, replace = store.tier(retrain_tier).codec_string, retrain_tier, True
    if codec is None and params_path is None:
        raise click.UsageError("give --codec (to train a new tier) or --params (to reuse exported parameters)")
    if params_path is not None:
        exported = load_params(params_path)
        if codec and vecstore.get_codec(codec, exported.dim).get_config() != exported.get_config():
            raise InvalidInputError(f"--codec {codec!r} differs from the codec in {params_path}")
        codec, params = exported, exported.params()
    if name is None:
        with vecstore.open(store_path) as store:
            name = str(codec if params is not None else vecstore.get_codec(codec, store.dim))
    t0 = time.perf_counter()
    with vecstore.compress(store_path, codec, name=name, train_size=train_size, seed=seed,
                           params=params, replace=replace, calibrate=not no_calibrate,
                           target_recall=target_recall, progress=not quiet) as store:
        tier = store.tier(name)
        click.echo(f"added tier {tier.name!r} ({tier.codec_string}): {tier.bytes_per_vector} bytes/vector, "
                   f"{_human_bytes(tier.codes.nbytes)} in {time.perf_counter() - t0:.1f} s")
        cal = tier.calibration
        if cal:
            verdict = "meets" if cal["meets_target"] else "misses"
            click.echo(f"calibrated: rescoring from {cal['rescore']} with oversample {cal['oversample']} gives "
                       f"recall@10 {cal['recall_at_10']:.3f} on {cal['queries']} stored documents "
                       f"({verdict} the {cal['target_recall_at_10']} target)")


@cli.command("export-params")
@click.argument("store_path", metavar="STORE")
@click.argument("tier_name", metavar="TIER")
@click.argument("out_path", metavar="OUT.json")
def export_params(store_path, tier_name, out_path) -> None:
    """Write TIER's codec chain and every learned array as JSON lists."""
    from .params_json import dump_params

    with vecstore.open(store_path) as store:
        tier = store.tier(tier_name)
        dump_params(tier.codec, out_path)
        click.echo(f"wrote {out_path}: codec {tier.codec_string}, {tier.codec.param_count()} numbers")


@cli.command()
@click.argument("store_path", metavar="STORE")
@click.option("--recall", "recall_check", is_flag=True,
              help="Also measure recall@10 of the default search on held-out stored documents.")
@click.option("--min-recall", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="With --recall: fail below this recall@10.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option("--untrusted", is_flag=True, help="A file from outside: read its header in a limited child process first.")
def verify(store_path, recall_check, min_recall, as_json, untrusted) -> None:
    """Recompute every dataset's checksum (segments too); exit 1 naming any that changed since it was
    written. With --recall, also check the default search's recall on held-out documents."""
    from .verify import verify as run_verify

    checks = run_verify(store_path, raise_on_error=False, untrusted=untrusted)
    recall = None
    if recall_check:
        from .checks import self_check

        with vecstore.open(store_path) as store:
            recall = self_check(store)
    bad = [c for c in checks if not c.ok]
    if as_json:
        click.echo(json.dumps({"ok": not bad and (recall is None or recall["recall"] >= min_recall),
                               "recall_check": recall, "datasets": [
            {"name": c.name, "bytes": c.nbytes, "recorded": c.recorded, "computed": c.computed, "ok": c.ok}
            for c in checks]}))
    else:
        for c in checks:
            click.echo(f"{'ok' if c.ok else 'MISMATCH':>8}  /{c.name}  ({_human_bytes(c.nbytes)})")
    if bad:
        raise click.ClickException(f"{len(bad)} of {len(checks)} datasets do not match their checksum: "
                                   + ", ".join("/" + c.name for c in bad))
    if not as_json:
        click.echo(f"all {len(checks)} datasets match their checksums")
        if recall is not None:
            tier, rescore, factor = recall["plan"]
            plan = f"{tier}" + (f" rescored from {rescore} x{factor:g}" if rescore else " (exact)")
            click.echo(f"recall@10 of the default search ({plan}): {recall['recall']:.3f} on "
                       f"{recall['queries']} held-out documents")
    if recall is not None and recall["recall"] < min_recall:
        raise click.ClickException(f"recall@10 {recall['recall']:.3f} is below --min-recall {min_recall}")


def _load_encoder(source: str, no_idf: bool):
    """An encoder from its JSON export, or word vectors from HDF5 (datasets vocab, embedding[, idf])."""
    from .encoders import WordVectorEncoder, load_encoder_json
    from .errors import FormatError, StoreNotFoundError

    import os

    import h5py

    if not os.path.exists(source):
        raise StoreNotFoundError(f"encoder file {source!r} does not exist")
    if not h5py.is_hdf5(source):
        return load_encoder_json(source)
    with h5py.File(source, "r") as f:
        if "vocab" not in f or "embedding" not in f:
            raise FormatError(f"{source!r}: word-vector HDF5 needs datasets 'vocab' and 'embedding'")
        vocab = [w.decode("utf-8") if isinstance(w, bytes) else str(w) for w in f["vocab"][()]]
        idf = f["idf"][()] if ("idf" in f and not no_idf) else None
        return WordVectorEncoder(vocab, f["embedding"][()], idf)


@cli.command("build-text")
@click.argument("texts_path", metavar="TEXTS")
@click.argument("store_path", metavar="STORE")
@click.option("--encoder", "encoder_path", required=True,
              help="Encoder JSON (export-encoder) or word vectors in HDF5 (vocab, embedding, idf).")
@click.option("--no-idf", is_flag=True, help="Plain mean of word vectors, ignoring the file's IDF weights.")
@click.option("--force", is_flag=True, help="Replace STORE if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def build_text(texts_path, store_path, encoder_path, no_idf, force, quiet) -> None:
    """Encode TEXTS (one title per line, or FILE.h5:/DATASET of strings) into a searchable STORE."""
    from .ingest import read_keys, split_h5_path

    encoder = _load_encoder(encoder_path, no_idf)
    path, dataset = split_h5_path(texts_path)
    if dataset is None:
        import os

        from .errors import StoreNotFoundError

        if not os.path.exists(path):
            raise StoreNotFoundError(f"texts file {path!r} does not exist")
        with open(path, encoding="utf-8") as fh:
            texts = fh.read().splitlines()
    else:
        import h5py

        with h5py.File(path, "r") as f:
            count = f[dataset].shape[0] if dataset in f else 0
        texts = read_keys(texts_path, count)
    store, skipped = vecstore.build_text(store_path, texts, encoder, overwrite=force, progress=not quiet)
    with store:
        click.echo(f"built {store_path}: {store.count} texts encoded to {store.dim} dims "
                   f"({encoder.kind} encoder stored as 'text'); {len(skipped)} texts had no known word "
                   "and were left out")


@cli.command("add-encoder")
@click.argument("store_path", metavar="STORE")
@click.argument("encoder_path", metavar="ENCODER")
@click.option("--name", default="text", show_default=True)
@click.option("--no-idf", is_flag=True, help="For word vectors in HDF5: ignore the IDF weights.")
@click.option("--replace", is_flag=True, help="Replace an encoder of that name.")
def add_encoder(store_path, encoder_path, name, no_idf, replace) -> None:
    """Store a text encoder (JSON export, or word vectors in HDF5) in STORE for `search --text`."""
    encoder = _load_encoder(encoder_path, no_idf)
    vecstore.add_encoder(store_path, encoder, name=name, replace=replace).close()
    click.echo(f"stored {encoder.kind} encoder {name!r} ({len(encoder.vocab)} words, {encoder.dim} dims)")


@cli.command("export-encoder")
@click.argument("store_path", metavar="STORE")
@click.argument("out_path", metavar="OUT.json")
@click.option("--name", default=None, help="Encoder name (default: the only one).")
def export_encoder(store_path, out_path, name) -> None:
    """Write a stored text encoder as one JSON document (vocabulary and arrays as lists)."""
    from .encoders import dump_encoder_json

    with vecstore.open(store_path) as store:
        encoder = store.encoder(name)
        dump_encoder_json(encoder, out_path)
    click.echo(f"wrote {out_path}: {encoder.kind} encoder, {len(encoder.vocab)} words x {encoder.dim} dims")


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
@click.option("--train-size", default=vecstore._build.DEFAULT_TRAIN_SIZE, show_default=True, type=int,
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
    from .bench import report, sweep

    budget_parsed = report.parse_budget(budget) if budget is not None else None
    if target_recall is not None and not 0 < target_recall <= 1:
        raise InvalidInputError(f"--target-recall must be in (0, 1], got {target_recall}")
    doc = sweep.run_sweep(sweep.SweepOptions(
        input_path, queries=queries_path, holdout=holdout, ground_truth=ground_truth, codecs=codecs,
        rescore=rescore, oversample=oversample, k=k, n=n, metric=metric, threads=threads,
        train_size=train_size, seed=seed, single=single, repeats=repeats, progress=not quiet))
    click.echo(report.emit(doc, out_dir=out_dir, as_json=as_json, budget=budget_parsed,
                           target_recall=target_recall), nl=False)


def main() -> None:
    cli(prog_name="vecstore")


def _register_commands() -> None:
    from . import cli_lifecycle, cli_shards

    cli_lifecycle.register(cli)
    cli_shards.register(cli)


_register_commands()


if __name__ == "__main__":
    sys.exit(main())
