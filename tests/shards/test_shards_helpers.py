"""Helpers shared by the shard tests (no tests here): data, a single store of the same documents, checks."""

from __future__ import annotations

import json
import os

import numpy as np

import vecstore
from vecstore.shards import shard_build

N, DIM, NQ, K = 2000, 32, 40, 10
CODECS = ["pq8", "int8"]


def make_data(seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Vectors and queries with norms near 1, so that 1e-5 is a meaningful score tolerance."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, DIM)) / np.sqrt(DIM)).astype(np.float32)
    q = (rng.standard_normal((NQ, DIM)) / np.sqrt(DIM)).astype(np.float32)
    return x, q


def single_like(manifest, x: np.ndarray, path: str, rows=None) -> vecstore.Store:
    """One store holding the same documents (or the ``rows`` of them) with the shards' tiers,
    encoded with the shards' parameters (read from shard 0)."""
    rows = np.arange(x.shape[0]) if rows is None else np.asarray(rows)
    vecstore.build(path, x[rows], metric=manifest.metric, ids=rows, progress=False, overwrite=True).close()
    with vecstore.open(manifest.shard_path(manifest.shards[0])) as s0:
        params = {t.name: s0.tier(t.name).codec.params() for t in manifest.tiers if t.name != "raw"}
    for name, p in params.items():
        vecstore.compress(path, manifest.tier(name).codec, name=name, params=p, calibrate=False,
                          progress=False).close()
    return vecstore.open(path)


def build_collection(x: np.ndarray, outdir: str, metric: str = "ip", shards: int = 4, **kw):
    return shard_build(x, outdir, shards=shards, codecs=kw.pop("codecs", CODECS), metric=metric,
                       progress=False, **kw)


def assert_same_results(got, want, tol: float = 1e-5) -> None:
    """Same shape, distances within ``tol``, and the same ids except where two neighbours are tied
    (their distances within ``tol``), where either order is right."""
    assert got.ids.shape == want.ids.shape
    np.testing.assert_allclose(got.distances, want.distances, rtol=0, atol=tol)
    for q, r in zip(*np.nonzero(got.ids != want.ids)):
        row = want.distances[q]
        tied = np.abs(row - row[r]) <= tol
        assert tied.sum() > 1, f"query {q}, rank {r}: id {got.ids[q, r]} where one store gives {want.ids[q, r]}"
        assert got.ids[q, r] in set(want.ids[q][tied].tolist())
    for row in got.ids:
        real = row[row >= 0]
        assert len(set(real.tolist())) == real.shape[0]


def recall(ids: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(ids.tolist(), truth.tolist())]))


def edit_manifest(path: str, change) -> None:
    """Rewrite the manifest JSON after ``change(doc)`` (a test's forgery)."""
    with open(path) as fh:
        doc = json.load(fh)
    change(doc)
    with open(path, "w") as fh:
        json.dump(doc, fh)


def shard_files(manifest) -> list[str]:
    return [os.path.join(manifest.directory, s.file) for s in manifest.shards]
