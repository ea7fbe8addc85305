"""Frozen stores of every released format version must keep opening, decoding and searching.

tests/fixtures/v1/ holds stores written by vecstore 0.1.0 (see tests/fixtures/make_fixtures.py) and
expected.npz, the decoded vectors and top-5 results recorded when they were written. These files are
never regenerated: when this test fails, the change broke v1 files in users' hands, and it is the
code that must change, not the fixtures.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import xxhash

import vecstore

V1 = Path(__file__).resolve().parents[1] / "fixtures" / "v1"
METRICS = ("ip", "cosine", "l2")
N, DIM, K = 300, 16, 5


@pytest.fixture(scope="module")
def expected() -> dict[str, np.ndarray]:
    with np.load(V1 / "expected.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def _tiers(expected, metric):
    return [str(t) for t in expected[f"{metric}/tiers"]]


CASES = [(m, t) for m in METRICS for t in ("raw", "float16", "int8", "pca8,int8", "pq4", "pq8x4")]
CASE_IDS = [f"{m}-{t}" for m, t in CASES]


def test_fixture_files_present():
    assert sorted(p.name for p in V1.glob("*.vs")) == sorted(f"{m}.vs" for m in METRICS)


@pytest.mark.parametrize("metric", METRICS)
def test_fixture_opens(expected, metric):
    with vecstore.open(V1 / f"{metric}.vs") as store:
        assert store.format_version == 1
        assert store.written_by == "0.1.0"
        assert (store.count, store.dim, store.metric) == (N, DIM, metric)
        assert store.model == json.loads(str(expected[f"{metric}/model"]))
        assert sorted(store.tiers) == _tiers(expected, metric)
        np.testing.assert_array_equal(store.ids, expected[f"{metric}/ids"])
        assert store.keys(store.ids) == [str(k) for k in expected[f"{metric}/keys"]]
        recorded = [json.loads(str(m)) if str(m) else None for m in expected[f"{metric}/metadata"]]
        assert store.metadata(store.ids) == recorded
        for name, tier in store.tiers.items():
            assert tier.codec_string == str(expected[f"{metric}/{name}/codec_string"])
            assert tier.codec.get_config() == json.loads(str(expected[f"{metric}/{name}/codec"]))


@pytest.mark.parametrize("metric,tier", CASES, ids=CASE_IDS)
def test_fixture_decodes(expected, metric, tier):
    with vecstore.open(V1 / f"{metric}.vs") as store:
        t = store.tier(tier)
        decoded = t.codec.decode(np.asarray(t.codes))
    recorded = expected[f"{metric}/{tier}/decoded"]
    assert decoded.dtype == np.float32 and decoded.shape == recorded.shape == (N, DIM)
    np.testing.assert_allclose(decoded, recorded, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("metric,tier", CASES, ids=CASE_IDS)
def test_fixture_search(expected, metric, tier):
    """The stored queries' top-5: exact ids (the queries were chosen free of near-ties)."""
    queries = expected["queries"]
    want_d = expected[f"{metric}/{tier}/distances"]
    want_i = expected[f"{metric}/{tier}/result_ids"]
    with vecstore.open(V1 / f"{metric}.vs") as store:
        D, I = store.search(queries, K, tier=tier)
        np.testing.assert_array_equal(I, want_i)
        np.testing.assert_allclose(D, want_d, rtol=1e-5, atol=1e-5)
        # one query at a time, and a batch large enough for the blocked (BLAS) path
        for q in range(queries.shape[0]):
            D1, I1 = store.search(queries[q], K, tier=tier)
            np.testing.assert_array_equal(I1[0], want_i[q])
            np.testing.assert_allclose(D1[0], want_d[q], rtol=1e-5, atol=1e-5)
        Db, Ib = store.search(np.tile(queries, (8, 1)), K, tier=tier)
        np.testing.assert_array_equal(Ib, np.tile(want_i, (8, 1)))
        np.testing.assert_allclose(Db, np.tile(want_d, (8, 1)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_fixture_k_above_count(expected, metric):
    with vecstore.open(V1 / f"{metric}.vs") as store:
        D, I = store.search(expected["queries"][0], N + 2, tier="raw")
    assert (I[0, N:] == -1).all()
    assert (D[0, N:] == (np.inf if metric == "l2" else -np.inf)).all()
    assert sorted(I[0, :N].tolist()) == sorted(expected[f"{metric}/ids"].tolist())


@pytest.mark.parametrize("metric", METRICS)
def test_fixture_checksums_intact(metric):
    """Each dataset's bytes still match its xxh3_64: the committed files were not altered."""
    path = V1 / f"{metric}.vs"
    raw = path.read_bytes()
    checked = 0
    with h5py.File(path, "r") as f:
        datasets = []
        f.visititems(lambda _, obj: datasets.append(obj) if isinstance(obj, h5py.Dataset) else None)
        for ds in datasets:
            offset = ds.id.get_offset()
            data = b"" if ds.nbytes == 0 else raw[offset:offset + ds.nbytes]
            assert ds.attrs["xxh3_64"] == xxhash.xxh3_64(data).hexdigest(), ds.name
            checked += 1
    assert checked == 19 + (6 if metric == "l2" else 0)  # + one sqnorms per tier in an l2 store
