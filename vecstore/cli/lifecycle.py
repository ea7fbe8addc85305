"""CLI commands that change a store after it is built: append, delete, compact, swap, check."""

from __future__ import annotations

import json
import time

import click
import numpy as np

import vecstore
from vecstore.errors import InvalidInputError

from .group import cli
from .options import human_bytes, progress_option


@cli.command()
@click.argument("store_path", metavar="STORE")
@click.argument("input_path", metavar="INPUT")
@click.option("--keys", "keys_path", default=None, help="Text file (one key per line) or FILE.h5:/DATASET of strings.")
@click.option("--metadata", "metadata_path", default=None, help="JSON-lines file: one object (or blank line) per vector.")
@click.option("--ids", "ids_path", default=None, help="Text file of integer ids, one per line (default: after the largest id).")
@click.option("--model", "model_spec", default=None, metavar="NAME@VERSION",
              help="The model that produced INPUT: refused if the store's vectors come from another.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def append(store_path, input_path, keys_path, metadata_path, ids_path, model_spec, quiet) -> None:
    """Append INPUT's vectors to STORE as a new segment, encoded into every tier with its stored parameters."""
    import os

    ids = None
    if ids_path is not None:
        try:
            with open(ids_path, encoding="utf-8") as fh:
                ids = [int(line) for line in fh if line.strip()]  # the library checks the range
        except (OSError, ValueError) as exc:
            raise InvalidInputError(f"--ids {ids_path!r}: give one integer per line ({exc})") from None
    t0 = time.perf_counter()
    with vecstore.open(store_path, mode="a") as store:
        new = store.add(input_path, ids=ids, keys=keys_path, metadata=metadata_path, model=model_spec,
                        progress=progress_option(quiet))
        info = store.info()
    written = info["segments"][-1]["file_bytes"]
    click.echo(f"appended {new.shape[0]} vectors to {os.path.basename(store_path)} (ids {new.min()}..{new.max()}): "
               f"{human_bytes(written)} written in {time.perf_counter() - t0:.2f} s; the store now holds "
               f"{info['count']} documents in {len(info['segments']) + 1} file(s)")


def _parse_ids(ids_text: str | None, ids_file: str | None) -> np.ndarray:
    if (ids_text is None) == (ids_file is None):
        raise click.UsageError("give --ids 1,2,3 or --ids-file FILE")
    try:
        if ids_text is not None:
            return [int(v) for v in ids_text.replace(",", " ").split()]  # the library checks the range
        with open(ids_file, encoding="utf-8") as fh:
            return [int(line) for line in fh if line.strip()]
    except (OSError, ValueError) as exc:
        raise InvalidInputError(f"ids must be integers separated by commas, spaces or lines ({exc})") from None


@cli.command()
@click.argument("store_path", metavar="STORE")
@click.option("--ids", "ids_text", default=None, help="Ids to delete, comma-separated.")
@click.option("--ids-file", default=None, help="Text file of ids to delete, one per line.")
def delete(store_path, ids_text, ids_file) -> None:
    """Mark documents of STORE deleted: they never appear in results again (`compact` drops them)."""
    ids = _parse_ids(ids_text, ids_file)
    with vecstore.open(store_path, mode="a") as store:
        removed = store.delete(ids)
        left, gone = store.count, store.deleted_count
    click.echo(f"deleted {removed} document(s); {left} remain, {gone} deleted awaiting `vecstore compact`")


@cli.command()
@click.argument("store_path", metavar="STORE")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def compact(store_path, quiet) -> None:
    """Rewrite STORE as one file: appended segments merged in, deleted documents dropped."""
    with vecstore.open(store_path, mode="a") as store:
        report = store.compact(progress=progress_option(quiet))
        size = store.info()["file_bytes"]
    if not report["merged_segments"] and not report["dropped"]:
        click.echo("nothing to compact: no appended segments, no deleted documents")
        return
    click.echo(f"compacted: {report['documents']} documents in one file ({human_bytes(size)}), "
               f"{report['merged_segments']} segment(s) merged, {report['dropped']} deleted dropped, "
               f"in {report['seconds']:.1f} s")


@cli.command()
@click.argument("new_path", metavar="NEW")
@click.argument("current_path", metavar="CURRENT")
@click.option("--force", is_flag=True, help="Swap even if NEW has another dimension or metric.")
@click.option("--no-check", is_flag=True, help="Skip verifying NEW (checksums and recall self-check).")
@click.option("--min-recall", type=click.FloatRange(0, 1), default=0.9, show_default=True,
              help="Recall@10 NEW's default search must reach on held-out documents.")
def swap(new_path, current_path, force, no_check, min_recall) -> None:
    """Verify NEW, then atomically put it in CURRENT's place, keeping CURRENT as CURRENT.prev.

    Roll back with `vecstore swap CURRENT.prev CURRENT`. Readers move over on reload.
    """
    describe = vecstore.describe_model
    report = vecstore.swap(new_path, current_path, force=force, check=not no_check, min_recall=min_recall)
    check = report.get("check")
    if check:
        click.echo(f"checked {new_path}: {check['datasets_verified']} datasets match their checksums; "
                   f"recall@10 {check['recall']:.3f} on {check['queries']} held-out documents")
    click.echo(f"swapped: {current_path} now serves {describe(report['model'])}"
               + (f"; the previous store ({describe(report.get('previous_model'))}) is {report['previous']}"
                  if report.get("previous") else ""))


@cli.command()
@click.argument("store_path", metavar="STORE")
@click.option("--sample", default=200, show_default=True, type=click.IntRange(min=1),
              help="Newest and oldest documents used as queries.")
@click.option("--threshold", default=0.05, show_default=True, type=click.FloatRange(0, 1),
              help="Advise retraining when recall@10 on the newest falls this far below the oldest.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
def check(store_path, sample, threshold, as_json) -> None:
    """Codec drift: each tier's recall@10 on the newest documents against the oldest."""
    with vecstore.open(store_path) as store:
        report = vecstore.check_drift(store, sample=sample, threshold=threshold)
    if as_json:
        click.echo(json.dumps(report))
        return
    if not report["tiers"]:
        click.echo("no compressed tier: nothing can drift (add one with `vecstore compress`)")
        return
    click.echo(f"recall@10 of each tier alone, {report['queries']} oldest vs {report['queries']} newest documents "
               "as held-out queries")
    for t in report["tiers"]:
        verdict = f"retrain: {t['advice'].replace('STORE', store_path)}" if t["retrain"] else "ok"
        click.echo(f"  {t['tier']:<16} oldest {t['recall_oldest']:.3f}  newest {t['recall_newest']:.3f}  "
                   f"drop {t['drop']:+.3f}  {verdict}")
