"""vecstore.format.writer: write_store writes exactly what it is given, atomically."""

from __future__ import annotations

import errno
import json
import os

import h5py
import numpy as np
import pytest

import vecstore
from vecstore.errors import StoreWriteError
from vecstore.format import schema as fmt
from vecstore.format.writer import StoreContents, TierPlan, write_store

N, DIM = 40, 6


@pytest.fixture
def x():
    return np.random.default_rng(11).standard_normal((N, DIM)).astype(np.float32)


def _source(x, step=16, fail_at=None, error=None):
    """A chunk source of ``x``; raises ``error`` instead of yielding the chunk at ``fail_at``."""

    def chunks():
        for start in range(0, x.shape[0], step):
            if start == fail_at:
                raise error
            yield start, x[start:start + step]

    return chunks


def _contents(metric="l2", **kw):
    return StoreContents(dim=DIM, count=N, metric=metric, ids=np.arange(N, dtype=np.int64) * 3 + 5, **kw)


def _tiers(x):
    return [TierPlan(fmt.RAW_TIER, vecstore.get_codec("float32", DIM)),
            TierPlan("int8", vecstore.get_codec("int8", DIM).fit(x), calibration={"rescore": "raw", "oversample": 4})]


def test_the_file_holds_exactly_the_given_contents(tmp_path, x):
    path = str(tmp_path / "w.vs")
    keys = [f"doc {i} é" for i in range(N)]
    metadata = [json.dumps({"i": i}) if i % 3 else "" for i in range(N)]
    model = {"name": "enc", "version": "2", "fingerprint": None}
    contents = _contents(keys=keys, metadata=metadata, model=model)
    tiers = _tiers(x)
    write_store(path, contents, tiers, _source(x))
    with vecstore.open(path) as store:
        ids = contents.ids
        assert (store.count, store.tier().codes.shape, store.metric) == (N, (N, DIM), "l2")
        np.testing.assert_array_equal(store.ids, ids)
        assert store.keys(ids) == keys
        assert store.metadata(ids) == [{"i": i} if i % 3 else None for i in range(N)]
        assert store.model == model
        assert set(store.tiers) == {"raw", "int8"}
        np.testing.assert_array_equal(store.vectors(ids), x)
        int8 = store.tier("int8")
        np.testing.assert_array_equal(int8.codes, tiers[1].codec.encode(x))
        assert int8.codec == tiers[1].codec and int8.calibration == {"rescore": "raw", "oversample": 4}
        decoded = tiers[1].codec.decode(tiers[1].codec.encode(x)).astype(np.float64)
        np.testing.assert_allclose(int8.sqnorms, (decoded ** 2).sum(axis=1), rtol=1e-5)
        np.testing.assert_allclose(store.tier().sqnorms, (x.astype(np.float64) ** 2).sum(axis=1), rtol=1e-6)
    with h5py.File(path, "r") as f:
        assert f.attrs["store_id"] == contents.store_id
        assert set(f) == {fmt.IDS, fmt.KEYS, fmt.METADATA, fmt.TIERS}
        assert set(f["tiers/raw"]) == {fmt.CODES, fmt.SQNORMS}


def test_ip_stores_have_no_norms_and_no_optional_columns(tmp_path, x):
    path = str(tmp_path / "w.vs")
    write_store(path, _contents("ip"), _tiers(x)[:1], _source(x))
    with h5py.File(path, "r") as f:
        assert set(f) == {fmt.IDS, fmt.TIERS} and set(f["tiers/raw"]) == {fmt.CODES}
    with vecstore.open(path) as store:
        assert store.keys([5]) == [None] and store.metadata([5]) == [None] and store.model is None


def test_a_copied_tier_is_written_unchanged_without_reading_the_source(tmp_path, x):
    path = str(tmp_path / "w.vs")
    codec = vecstore.get_codec("float16", DIM)
    codes = codec.encode(x)
    norms = np.arange(N, dtype=np.float32)  # not the real norms: a copy must not recompute them

    def no_source():
        raise AssertionError("a write of copied tiers only must not read the source")

    write_store(path, _contents(), [TierPlan(fmt.RAW_TIER, vecstore.get_codec("float32", DIM), (x, norms)),
                                    TierPlan("float16", codec, (codes, norms))], no_source)
    with vecstore.open(path) as store:
        np.testing.assert_array_equal(store.tier("float16").codes, codes)
        np.testing.assert_array_equal(store.tier("float16").sqnorms, norms)
        np.testing.assert_array_equal(store.tier().codes, x)


def _listing(tmp_path):
    return sorted(os.listdir(tmp_path))


@pytest.mark.parametrize("error, raised", [(RuntimeError("the source broke"), RuntimeError),
                                           (OSError(errno.ENOSPC, "No space left on device"), StoreWriteError)])
def test_a_failing_source_leaves_the_old_file_byte_identical_and_no_temporary(tmp_path, x, error, raised):
    path = str(tmp_path / "w.vs")
    write_store(path, _contents(), _tiers(x), _source(x))
    with open(path, "rb") as fh:
        before = fh.read()
    listing = _listing(tmp_path)
    with pytest.raises(raised) as info:
        write_store(path, _contents(keys=["k"] * N), _tiers(x * 2), _source(x * 2, fail_at=32, error=error))
    if raised is StoreWriteError:
        assert "No space left on device" in str(info.value) and "nothing was changed" in str(info.value)
    with open(path, "rb") as fh:
        assert fh.read() == before
    assert _listing(tmp_path) == listing


def test_a_source_with_missing_rows_leaves_no_file(tmp_path, x):
    path = str(tmp_path / "new.vs")
    with pytest.raises(RuntimeError, match="source yielded 32 rows, expected 40"):
        write_store(path, _contents(), _tiers(x), _source(x[:32]))
    assert _listing(tmp_path) == []


def test_every_new_file_gets_a_new_store_id(tmp_path, x):
    first, second = _contents(), _contents()
    assert first.store_id != second.store_id and fmt.STORE_ID.match(first.store_id)
    ids = set()
    for contents in (first, second):
        write_store(str(tmp_path / "w.vs"), contents, _tiers(x), _source(x))
        with vecstore.open(str(tmp_path / "w.vs")) as store:
            ids.add(store._now().base_id)
    assert ids == {first.store_id, second.store_id}
