"""Commands on one store: build, info, search, compress, export-params, verify."""

from __future__ import annotations

import json
import time

import click
import numpy as np

import vecstore
from vecstore.errors import InvalidInputError
from vecstore.ingest import open_vectors

from .group import cli
from .options import (echo_results, human_bytes, parse_allow, parse_vector, progress_option, results_json,
                      stored_metadata)

TRAIN_SIZE = vecstore.compress.__kwdefaults__["train_size"]


HINT_ROWS = 4096


def metric_hint(source) -> str | None:
    """One line saying why the default metric (ip) may not be meant, from the first rows of
    ``source``: rows of unit length (cosine likely) or integer values (counts, ids, one-hot codes)."""
    rows = np.asarray(source.reader(0, min(HINT_ROWS, source.shape[0])), dtype=np.float64)
    if rows.size == 0 or not np.isfinite(rows).all():
        return None  # build refuses non-finite rows with its own message
    if np.array_equal(rows, np.round(rows)):
        return ("the vectors hold only integer values (counts? ids?); metric ip ranks them by raw dot "
                "products: pass --metric l2 or --metric cosine if you meant a distance or an angle")
    norms = np.linalg.norm(rows, axis=1)
    if np.abs(norms - 1.0).max() < 1e-3:
        return ("the vectors look unit-normalised, so cosine is likely meant: metric ip ranks these rows as "
                "cosine would, but does not normalise queries or appended vectors; pass --metric cosine "
                "to store the metric")
    return None


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
@click.option("--fields", "fields", default=None, metavar="A,B,...",
              help="Metadata keys to make filterable (search --where); needs --metadata.")
@click.option("--force", is_flag=True, help="Replace STORE if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def build(input_path, store_path, metric, keys_path, metadata_path, model_spec, model_params_path, fields, force,
          quiet) -> None:
    """Build STORE from INPUT (.npy, .fvecs, FILE.h5:/DATASET or an ann-benchmarks .hdf5)."""
    t0 = time.perf_counter()
    chosen, hint = "", None
    if metric is None:
        source = open_vectors(input_path)
        chosen = (" (the input file's distance; no --metric given)" if source.metric_hint
                  else " (the default: no --metric given)")
        hint = None if source.metric_hint else metric_hint(source)
    params = vecstore.load_model_params(model_params_path) if model_params_path else None
    store = vecstore.build(store_path, input_path, metric=metric, keys=keys_path, metadata=metadata_path,
                           model=model_spec, model_params=params, overwrite=force, progress=progress_option(quiet),
                           fields=fields)
    with store:
        info = store.info()
    click.echo(f"built {store_path}: {info['count']} vectors x {info['dim']} dims, metric {info['metric']}{chosen}, "
               f"{human_bytes(info['file_bytes'])} in {time.perf_counter() - t0:.1f} s")
    if hint:  # after the build: a build that fails prints its one error line and nothing else
        click.echo(f"warning: {hint}", err=True)


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
    if data.get("fields"):
        click.echo("fields     " + ", ".join(f"{n} ({t})" for n, t in data["fields"].items()))
    if data["model"]:
        click.echo(f"model      {vecstore.describe_model(data['model']) if 'name' in data['model'] else json.dumps(data['model'])}")
    click.echo(f"file       {human_bytes(data['file_bytes'])}")
    if data["segments"] or data["deleted"]:
        click.echo(f"changes    {data['main_count']} documents in the main file, "
                   f"{sum(s['count'] for s in data['segments'])} appended in {len(data['segments'])} segment(s), "
                   f"{data['deleted']} deleted (`vecstore compact` merges them)")
    click.echo("")
    rows = [("tier", "codec", "bytes/vector", "codes", "params", "compression")]
    raw = data["dim"] * 4
    for t in data["tiers"]:
        rows.append((t["name"], t["codec"], str(t["bytes_per_vector"]), human_bytes(t["code_bytes"]),
                     human_bytes(t["param_bytes"]), f"{raw / t['bytes_per_vector']:.1f}x"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    click.echo("")
    tier, rescore, oversample = data["default_search"]
    if rescore:
        cal = next(t["calibration"] for t in data["tiers"] if t["name"] == tier)
        probes = f" ({cal['nprobe']} lists probed)" if "nprobe" in cal else ""
        click.echo(f"default search: scan {tier}{probes}, rescore {oversample:g}x candidates from {rescore} "
                   f"(calibrated recall@10 {cal['recall_at_10']:.3f} on {cal['queries']} stored documents)")
    else:
        click.echo("default search: exact, on the raw tier (no calibrated compressed tier yet)")


@cli.command()
@click.argument("store_path", metavar="STORE")
@click.argument("queries_path", metavar="[QUERIES]", required=False)
@click.option("--vector", "vector_text", default=None, help="One query as comma-separated numbers.")
@click.option("--text", "query_texts", multiple=True,
              help="A query as text, encoded by the store's text encoder; repeat for several queries.")
@click.option("--encoder", "encoder_name", default=None, metavar="NAME",
              help="With --text: the stored encoder to use (default: the only one).")
@click.option("--on-empty", type=click.Choice(["error", "skip"]), default="error", show_default=True,
              help="With --text: a text without a known word fails the command, or gets no results.")
@click.option("-k", "--k", "k", default=10, show_default=True, type=int, help="Results per query.")
@click.option("--tier", default=None,
              help="Tier to scan. Default: the store's calibrated two-stage plan (see `info`), else raw.")
@click.option("--rescore", default=None, help="Finer tier that re-scores the candidates (e.g. raw, float16).")
@click.option("--oversample", type=float, default=None,
              help="Candidates per result taken from --tier for rescoring (default: calibrated, else 4).")
@click.option("--nprobe", type=int, default=None,
              help="Lists an inverted-file tier (ivf<nlist>,...) scans (default: calibrated).")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Use only the first N queries.")
@click.option("--model", "model_spec", default=None, metavar="NAME@VERSION",
              help="The model that made the queries: refused if the store's vectors come from another.")
@click.option("--where", "where", default=None, metavar="FILTER",
              help="Only documents matching FILTER, e.g. \"lang = 'en' and year >= 2020\" (docs/filters.md).")
@click.option("--allow", "allow_spec", default=None, metavar="IDS|FILE",
              help="Only these documents: ids separated by commas (3,17,42), or a file of ids, one per line. "
                   "Ids not in the store are ignored. With --where: both must admit a document.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def search(store_path, queries_path, vector_text, query_texts, encoder_name, on_empty, k, tier, rescore,
           oversample, nprobe, limit, model_spec, where, allow_spec, as_json) -> None:
    """Search STORE with QUERIES (.npy, .fvecs, FILE.h5:/DATASET, ann-benchmarks .hdf5: its test set),
    --vector or --text; --where and --allow keep only the documents a filter admits."""
    texts = list(query_texts) or None
    if sum(x is not None for x in (queries_path, vector_text, texts)) != 1:
        raise click.UsageError("give exactly one of a QUERIES file, --vector or --text")
    if texts is None and (encoder_name is not None or on_empty != "error"):
        raise click.UsageError("--encoder and --on-empty apply to --text queries only")
    unknown = None
    allow = parse_allow(allow_spec) if allow_spec is not None else None
    filtered = where is not None or allow is not None
    with vecstore.open(store_path) as store:
        tier, rescore, oversample = store.resolve_plan(tier, rescore, oversample)
        if texts is not None:
            result = store.search_text(
                texts[:limit], k, encoder=encoder_name, model=model_spec, on_empty=on_empty, tier=tier,
                rescore=rescore, oversample=oversample, where=where, allow=allow, nprobe=nprobe)
            distances, ids, unknown = result
        else:
            if vector_text is not None:
                queries = parse_vector(vector_text)
            else:
                source = open_vectors(queries_path, prefer="test")
                queries = source.read_all() if limit is None else source.reader(0, min(limit, source.shape[0]))
            result = store.search(queries, k, tier=tier, rescore=rescore, oversample=oversample,
                                  model=model_spec, where=where, allow=allow, nprobe=nprobe)
            distances, ids = result
        keys = store.keys(ids)
        metadata = stored_metadata(store, ids)
        metric = store.metric
    skipped = set()
    if unknown is not None:
        skipped = {q for q in range(ids.shape[0]) if (ids[q] < 0).all()}
        for q, words in enumerate(unknown):
            label = f"text {q}: " if len(unknown) > 1 else ""
            if q in skipped:
                click.echo(f"{label}no known word, no results (--on-empty skip)", err=True)
            elif words:
                click.echo(f"{label}skipped unknown words: {', '.join(words)}", err=True)
    if as_json:
        results = results_json(distances, ids, keys, metadata)
        if unknown is not None:
            for q, entry in enumerate(results):
                entry.update(text=texts[q], unknown_words=unknown[q], skipped=q in skipped)
        doc = {"k": k, "metric": metric, "tier": tier, "rescore": rescore, "oversample": oversample,
               "results": results}
        if unknown is not None and len(unknown) == 1:
            doc["unknown_words"] = unknown[0]  # kept for scripts written for one --text; see results[0]
        if where is not None:
            doc["where"] = where
        if allow is not None:
            doc["allow_ids"] = int(np.unique(allow).shape[0])
        if filtered and hasattr(result, "strategy"):
            doc.update(allowed=result.allowed, strategy=result.strategy)
        click.echo(json.dumps(doc))
        return
    plan = f"tier {tier}" + (f", rescored from {rescore} with oversample {oversample:g}" if rescore else "")
    if filtered:
        what = " and ".join(([f"{where!r}"] if where is not None else [])
                            + ([f"{np.unique(allow).shape[0]} allowed ids"] if allow is not None else []))
        plan += f"; filter {what}" + (f" admits {result.allowed} documents, searched {result.strategy}"
                                      if hasattr(result, "strategy") else "")
    click.echo(f"# {plan}")
    echo_results(distances, ids, keys, metric, metadata, skipped=skipped)


@cli.command()
@click.argument("store_path", metavar="STORE")
@click.option("--codec", default=None,
              help="Codec string, e.g. float16, int8, pca256,int8, pq64, pq128x4, ivf1024,pq32x4.")
@click.option("--name", default=None, help="Tier name (default: the codec string).")
@click.option("--train-size", default=TRAIN_SIZE, show_default=True, type=int,
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
    params = None
    if retrain_tier is not None:
        if codec or params_path or name:
            raise click.UsageError("--retrain takes the tier's own codec and name: drop --codec, --params, --name")
        with vecstore.open(store_path) as store:
            codec, name, replace = store.tier(retrain_tier).codec_string, retrain_tier, True
    if codec is None and params_path is None:
        raise click.UsageError("give --codec (to train a new tier) or --params (to reuse exported parameters)")
    if params_path is not None:
        exported = vecstore.load_params(params_path)
        if codec and vecstore.get_codec(codec, exported.dim).get_config() != exported.get_config():
            raise InvalidInputError(f"--codec {codec!r} differs from the codec in {params_path}")
        codec, params = exported, exported.params()
    if name is None:
        with vecstore.open(store_path) as store:
            name = str(codec if params is not None else vecstore.get_codec(codec, store.dim))
    t0 = time.perf_counter()
    with vecstore.compress(store_path, codec, name=name, train_size=train_size, seed=seed,
                           params=params, replace=replace, calibrate=not no_calibrate,
                           target_recall=target_recall, progress=progress_option(quiet)) as store:
        tier = store.tier(name)
        click.echo(f"added tier {tier.name!r} ({tier.codec_string}): {tier.bytes_per_vector} bytes/vector, "
                   f"{human_bytes(tier.codes.nbytes)} in {time.perf_counter() - t0:.1f} s")
        cal = tier.calibration
        if cal:
            verdict = "meets" if cal["meets_target"] else "misses"
            probes = f"{cal['nprobe']} lists probed and " if "nprobe" in cal else ""
            click.echo(f"calibrated: {probes}rescoring from {cal['rescore']} with oversample {cal['oversample']} gives "
                       f"recall@10 {cal['recall_at_10']:.3f} on {cal['queries']} stored documents "
                       f"({verdict} the {cal['target_recall_at_10']} target)")


@cli.command("export-params")
@click.argument("store_path", metavar="STORE")
@click.argument("tier_name", metavar="TIER")
@click.argument("out_path", metavar="OUT.json")
def export_params(store_path, tier_name, out_path) -> None:
    """Write TIER's codec chain and every learned array as JSON lists."""
    with vecstore.open(store_path) as store:
        tier = store.tier(tier_name)
        vecstore.dump_params(tier.codec, out_path)
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
    checks = vecstore.verify(store_path, raise_on_error=False, untrusted=untrusted)
    recall = None
    if recall_check:
        with vecstore.open(store_path) as store:
            recall = vecstore.self_check(store)
    bad = [c for c in checks if not c.ok]
    if as_json:
        click.echo(json.dumps({"ok": not bad and (recall is None or recall["recall"] >= min_recall),
                               "recall_check": recall, "datasets": [
            {"name": c.name, "bytes": c.nbytes, "recorded": c.recorded, "computed": c.computed, "ok": c.ok}
            for c in checks]}))
    else:
        for c in checks:
            click.echo(f"{'ok' if c.ok else 'MISMATCH':>8}  /{c.name}  ({human_bytes(c.nbytes)})")
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


@cli.command("add-fields")
@click.argument("store_path", metavar="STORE")
@click.argument("fields", metavar="A,B,...")
@click.option("--replace", is_flag=True, help="Recompute fields the store already has.")
def add_fields(store_path, fields, replace) -> None:
    """Make metadata keys A,B,... of every document filterable (search --where); STORE is rewritten."""
    t0 = time.perf_counter()
    with vecstore.add_fields(store_path, fields, replace=replace) as store:
        types = store.fields
    click.echo(f"fields of {store_path}: " + ", ".join(f"{n} ({t})" for n, t in types.items())
               + f" in {time.perf_counter() - t0:.1f} s")
