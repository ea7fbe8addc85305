"""Bad input: every failure a user can cause is a VecstoreError that says what to do."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

import vecstore
from conftest import make_store


@pytest.fixture
def store(tmp_path, rng):
    s = make_store(tmp_path, rng.standard_normal((100, 8)).astype(np.float32), "cosine")
    yield s
    s.close()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_vectors_names_the_row(tmp_path, rng, bad):
    x = rng.standard_normal((50, 4)).astype(np.float32)
    x[37, 2] = bad
    with pytest.raises(vecstore.InvalidInputError, match="row 37 contains NaN or Inf"):
        make_store(tmp_path, x)
    assert os.listdir(tmp_path) == []  # a failed build leaves no file, and no temporary


def test_failed_build_keeps_the_old_store(tmp_path, rng):
    good = rng.standard_normal((10, 4)).astype(np.float32)
    make_store(tmp_path, good).close()
    bad = good.copy()
    bad[3, 0] = np.nan
    with pytest.raises(vecstore.InvalidInputError):
        make_store(tmp_path, bad)
    with vecstore.open(tmp_path / "s.vs") as s:
        np.testing.assert_array_equal(s.tier().codes, good)
    assert sorted(os.listdir(tmp_path)) == [".s.vs.lock", "s.vs"]  # build over a store takes its writer lock


@pytest.mark.parametrize("queries, message", [
    (np.zeros((2, 5)), "dimension 5, but the store holds dimension 8"),
    (np.array([["a"] * 8]), "not numeric"),
    (np.array([[object()] * 8], dtype=object), "not numeric"),
    (np.zeros((0, 8)), "no queries"),
    (np.zeros((2, 2, 8)), "shape"),
    (np.full((1, 8), np.nan), "row 0 contains NaN or Inf"),
    (np.zeros((1, 8)), "all zeros"),
    ("hello", "not text"),
])
def test_bad_queries(store, queries, message):
    with pytest.raises(vecstore.VecstoreError, match=message):
        store.search(queries, 3)


def test_non_contiguous_and_other_dtypes_are_accepted(store, rng):
    q = rng.standard_normal((8, 16))[:, ::2]  # float64, non-contiguous
    D, I = store.search(q, 3)
    D2, I2 = store.search(np.ascontiguousarray(q, dtype=np.float32), 3)
    np.testing.assert_array_equal(I, I2)
    store.search(np.ones(8, dtype=np.int16), 3)


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3", None, 1 << 40])
def test_bad_k(store, k):
    with pytest.raises(vecstore.InvalidInputError, match="k"):
        store.search(np.ones(8), k)


@pytest.mark.parametrize("x, exc, message", [
    (np.zeros((0, 4), np.float32), vecstore.InvalidInputError, "empty"),
    (np.array([["x", "y"]]), vecstore.InvalidDtypeError, "not numeric"),
    (np.array([[1 + 2j]]), vecstore.InvalidDtypeError, "not numeric"),
    (np.zeros((2, 3, 4), np.float32), vecstore.InvalidInputError, "2-D"),
])
def test_bad_build_input(tmp_path, x, exc, message):
    with pytest.raises(exc, match=message):
        make_store(tmp_path, x)
    assert os.listdir(tmp_path) == []


def test_bad_ids_keys_metadata(tmp_path, rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(vecstore.InvalidInputError, match="id 7 appears more than once"):
        make_store(tmp_path, x, ids=[1, 7, 7, 2])
    with pytest.raises(vecstore.InvalidInputError, match="3 keys for 4 vectors"):
        make_store(tmp_path, x, keys=["a", "b", "c"])
    with pytest.raises(vecstore.InvalidInputError, match="metadata entry 1"):
        make_store(tmp_path, x, metadata=[{}, [1], None, None])
    with pytest.raises(vecstore.InvalidInputError, match="metric"):
        make_store(tmp_path, x, metric="hamming")
    with pytest.raises(vecstore.InvalidInputError, match="all zeros"):
        make_store(tmp_path, np.zeros((2, 3), np.float32), metric="cosine")
    assert os.listdir(tmp_path) == []


def test_existing_target_needs_overwrite(tmp_path, rng):
    x = rng.standard_normal((4, 3)).astype(np.float32)
    vecstore.build(tmp_path / "a.vs", x, progress=False).close()
    with pytest.raises(vecstore.InvalidInputError, match="already exists"):
        vecstore.build(tmp_path / "a.vs", x, progress=False)


def test_missing_path(tmp_path):
    with pytest.raises(vecstore.StoreNotFoundError, match="does not exist"):
        vecstore.open(tmp_path / "nope.vs")
    with pytest.raises(vecstore.StoreNotFoundError):
        vecstore.build(tmp_path / "o.vs", str(tmp_path / "missing.npy"))


def test_not_hdf5(tmp_path):
    (tmp_path / "x.vs").write_bytes(b"hello world" * 100)
    with pytest.raises(vecstore.FormatError, match="not an HDF5 file"):
        vecstore.open(tmp_path / "x.vs")
    (tmp_path / "empty.vs").write_bytes(b"")
    with pytest.raises(vecstore.FormatError):
        vecstore.open(tmp_path / "empty.vs")


def test_foreign_hdf5(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(vecstore.FormatError, match="not a vecstore"):
        vecstore.open(tmp_path / "f.h5")


def test_newer_format_version(tmp_path, rng):
    make_store(tmp_path, rng.standard_normal((4, 3)).astype(np.float32)).close()
    with h5py.File(tmp_path / "s.vs", "r+") as f:
        f.attrs["format_version"] = np.int64(99)
    with pytest.raises(vecstore.UnsupportedVersionError, match="version 99.*upgrade vecstore"):
        vecstore.open(tmp_path / "s.vs")


def test_errors_are_also_builtin_exceptions():
    assert issubclass(vecstore.InvalidInputError, ValueError)
    assert issubclass(vecstore.InvalidDtypeError, TypeError)
    assert issubclass(vecstore.StoreNotFoundError, FileNotFoundError)
    assert issubclass(vecstore.UnknownTierError, KeyError)


def test_raw_tier_must_be_float32(tmp_path, rng):
    make_store(tmp_path, rng.standard_normal((300, 8)).astype(np.float32)).close()
    vecstore.compress(tmp_path / "s.vs", "float16", progress=False, calibrate=False).close()
    with h5py.File(tmp_path / "s.vs", "r+") as f:
        del f["tiers/raw"]
        f.move("tiers/float16", "tiers/raw")
    with pytest.raises(vecstore.FormatError, match="raw tier must hold float32"):
        vecstore.open(tmp_path / "s.vs")


def test_write_failure_is_a_clear_error_and_keeps_the_old_store(tmp_path, rng, monkeypatch):
    import errno

    from vecstore.format import schema as fmt

    x = rng.standard_normal((20, 4)).astype(np.float32)
    make_store(tmp_path, x).close()
    real = fmt.ChecksumWriter.write

    def full_disk(self, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fmt.ChecksumWriter, "write", full_disk)
    with pytest.raises(vecstore.StoreWriteError, match="No space left on device.*nothing was changed"):
        make_store(tmp_path, x * 2)
    monkeypatch.setattr(fmt.ChecksumWriter, "write", real)
    with vecstore.open(tmp_path / "s.vs") as s:
        np.testing.assert_array_equal(s.tier().codes, x)
    assert sorted(os.listdir(tmp_path)) == [".s.vs.lock", "s.vs"]  # build over a store takes its writer lock
