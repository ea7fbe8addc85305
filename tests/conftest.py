"""Shared fixtures: seeded data, small stores, the bundled real dataset."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

import vecstore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_REAL = os.path.join(ROOT, "data", "wordnet-minilm-384-small.hdf5")


@pytest.fixture(autouse=True, scope="module")
def _environment_as_the_module_found_it():
    """Every test module leaves os.environ as it found it. Dask's nanny sets OMP_NUM_THREADS,
    MKL_NUM_THREADS and OPENBLAS_NUM_THREADS to 1 in the process that starts a LocalCluster (its
    "pre-spawn-environ"), so every process spawned after tests/shards/test_shards_dask.py had one
    BLAS thread; OpenBLAS's one-thread sgemm rounds differently from its two-thread one, and
    tests/robustness/test_concurrency.py, run after it, found its children's 40-query batches
    differing from its own in the last bits."""
    saved = dict(os.environ)
    yield
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def real_small():
    """The bundled real 10,000 x 384 WordNet / MiniLM set with exact ground truth."""
    with h5py.File(SMALL_REAL, "r") as f:
        return {
            "train": f["train"][()],
            "test": f["test"][()],
            "neighbors": f["neighbors"][()],
            "distances": f["distances"][()],
            "lemmas": [s.decode() for s in f["train_lemmas"][()]],
        }


@pytest.fixture(scope="session")
def real_store(tmp_path_factory, real_small):
    """The real small set built as a cosine store with keys, plus float16/int8/pq tiers."""
    path = str(tmp_path_factory.mktemp("real") / "real.vs")
    vecstore.build(path, real_small["train"], metric="cosine", keys=real_small["lemmas"],
                   progress=False).close()
    return path


def make_store(tmp_path, x, metric="ip", name="s.vs", **kw) -> vecstore.Store:
    return vecstore.build(str(tmp_path / name), x, metric=metric, progress=False, overwrite=True, **kw)
