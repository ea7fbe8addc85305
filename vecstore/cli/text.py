"""Commands for text search: build-text, add-encoder, export-encoder (search --text is in store.py)."""

from __future__ import annotations

import os

import click
import h5py

import vecstore
from vecstore.encoders import WordVectorEncoder, dump_encoder_json, load_encoder_json
from vecstore.errors import FormatError, StoreNotFoundError
from vecstore.ingest import read_keys, split_h5_path

from .group import cli
from .options import progress_option


def _load_encoder(source: str, no_idf: bool):
    """An encoder from its JSON export, or word vectors from HDF5 (datasets vocab, embedding[, idf])."""
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
    encoder = _load_encoder(encoder_path, no_idf)
    path, dataset = split_h5_path(texts_path)
    if dataset is None:
        if not os.path.exists(path):
            raise StoreNotFoundError(f"texts file {path!r} does not exist")
        with open(path, encoding="utf-8") as fh:
            texts = fh.read().splitlines()
    else:
        with h5py.File(path, "r") as f:
            count = f[dataset].shape[0] if dataset in f else 0
        texts = read_keys(texts_path, count)
    store, skipped = vecstore.build_text(store_path, texts, encoder, overwrite=force, progress=progress_option(quiet))
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
    with vecstore.open(store_path) as store:
        encoder = store.encoder(name)
        dump_encoder_json(encoder, out_path)
    click.echo(f"wrote {out_path}: {encoder.kind} encoder, {len(encoder.vocab)} words x {encoder.dim} dims")
