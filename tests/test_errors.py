"""Bad input: every failure a user can cause is a VecstoreError that says what to do."""

from __future__ import annotations

import errno
import os

import h5py
import numpy as np
import pytest

import vecstore
from click.testing import CliRunner
from conftest import make_store
from vecstore.cli import cli


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


H5PY_FULL = ("Can't decrement id ref count (file write failed: time = Sun Nov 29 18:34:51 2026\n, "
             "filename = 'x', file descriptor = 3, errno = 28, error message = 'No space left on device', "
             "buf = 0x5638, total write size = 328, bytes this sub-write = 328, offset = 4022272)")
WRITE_FAILURES = {
    "ENOSPC": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "h5py-RuntimeError": lambda: RuntimeError(H5PY_FULL),
    "h5py-OSError": lambda: OSError(H5PY_FULL.replace("Can't decrement id ref count", "Unable to extend file")),
    "EDQUOT": lambda: OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
}
WRITES = {
    "build": lambda path, x: make_store(path.parent, x * 2).close(),
    "compress": lambda path, x: vecstore.compress(path, "float16", progress=False, calibrate=False).close(),
    "append": lambda path, x: vecstore.append(path, x[:3] * 3, progress=False),
    "delete": lambda path, x: vecstore.delete(path, [2, 3]),
}


def _files(root):
    return {p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file() and p.suffix != ".lock"}


@pytest.mark.parametrize("where", ["dataset", "fsync"])
@pytest.mark.parametrize("failure", WRITE_FAILURES)
@pytest.mark.parametrize("write", WRITES)
def test_write_failure_is_a_clear_error_and_keeps_the_old_store(tmp_path, rng, monkeypatch, write, failure, where):
    """A full disk (OSError ENOSPC, or h5py's RuntimeError/OSError naming errno 28) while writing a
    dataset or at the final fsync: one-line StoreWriteError, the store unchanged, no temporary left."""
    from vecstore.format import schema as fmt

    x = rng.standard_normal((20, 4)).astype(np.float32)
    make_store(tmp_path, x).close()
    vecstore.delete(tmp_path / "s.vs", [7])  # a manifest and a deleted-ids file to keep
    before = _files(tmp_path)
    if where == "dataset":
        if write == "delete":
            pytest.skip("delete writes no HDF5 dataset")

        def full_disk(self, rows):
            raise WRITE_FAILURES[failure]()

        monkeypatch.setattr(fmt.ChecksumWriter, "write", full_disk)
    else:
        real_fsync = fmt._fsync_path

        def full_disk(path, directory=False):
            if fmt.TMP_MARK in path:
                raise WRITE_FAILURES[failure]()
            real_fsync(path, directory)

        monkeypatch.setattr(fmt, "_fsync_path", full_disk)
    with pytest.raises(vecstore.StoreWriteError) as info:
        WRITES[write](tmp_path / "s.vs", x)
    message = str(info.value)
    assert "\n" not in message
    assert message.endswith("check free space and permissions (nothing was changed)"), message
    assert ("Disk quota exceeded" if failure == "EDQUOT" else "No space left on device") in message
    monkeypatch.undo()
    assert _files(tmp_path) == before  # nothing changed, no temporary left


def test_write_failure_in_the_cli_is_one_line(tmp_path, rng, monkeypatch):
    from vecstore.format import schema as fmt

    make_store(tmp_path, rng.standard_normal((20, 4)).astype(np.float32)).close()

    def full_disk(path, directory=False):
        raise RuntimeError(H5PY_FULL)

    monkeypatch.setattr(fmt, "_fsync_path", full_disk)
    _one_line_error(["delete", str(tmp_path / "s.vs"), "--ids", "3"], "No space left on device")


def test_other_runtime_errors_are_not_hidden(tmp_path, rng, monkeypatch):
    from vecstore.format import schema as fmt

    def bug(self, rows):
        raise RuntimeError("a bug")

    monkeypatch.setattr(fmt.ChecksumWriter, "write", bug)
    with pytest.raises(RuntimeError, match="a bug"):
        make_store(tmp_path, rng.standard_normal((20, 4)).astype(np.float32))
    assert os.listdir(tmp_path) == []


def _one_line_error(args, message):
    """Run the CLI: exit 1, exactly one line on stderr, ``Error: ...message...``, no traceback."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize("untrusted", [False, True])
def test_deeply_nested_manifest_is_damaged(tmp_path, rng, untrusted):
    make_store(tmp_path, rng.standard_normal((20, 4)).astype(np.float32)).close()
    vecstore.delete(tmp_path / "s.vs", [3])
    (manifest,) = (tmp_path / "s.vs.segments").glob("manifest-*.json")
    manifest.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(vecstore.FormatError, match="not valid JSON; the segment manifest is damaged"):
        vecstore.open(tmp_path / "s.vs", untrusted=untrusted)
    _one_line_error(["info", str(tmp_path / "s.vs")], "the segment manifest is damaged")


def test_deeply_nested_shard_manifest_is_damaged():
    from vecstore.shards.manifest import parse_manifest

    with pytest.raises(vecstore.FormatError, match="the shard manifest is damaged"):
        parse_manifest("[" * 100_000, "m.json")


def _special_paths(tmp_path):
    os.symlink("loop.vs", tmp_path / "loop.vs")
    os.mkfifo(tmp_path / "fifo.vs")
    return {"loop.vs": (vecstore.StoreNotFoundError, "cannot be reached (Too many levels of symbolic links)"),
            "fifo.vs": (vecstore.FormatError, "not a regular file"),
            "/dev/zero": (vecstore.FormatError, "not a regular file"),
            ".": (vecstore.StoreNotFoundError, "is a directory")}


def test_special_paths_are_refused_before_hdf5(tmp_path, monkeypatch):
    """A symlink loop, a FIFO (which must not block), a device, a directory: refused before h5py runs."""
    cases = _special_paths(tmp_path)

    def trap(*args, **kwargs):
        raise AssertionError("h5py was called")

    monkeypatch.setattr(h5py, "File", trap)
    for name, (exc, message) in cases.items():
        for untrusted in (False, True):
            with pytest.raises(exc, match=message.replace("(", r"\(").replace(")", r"\)")):
                vecstore.open(tmp_path / name, untrusted=untrusted)


def test_special_paths_in_the_cli_are_one_line(tmp_path):
    for name, (_, message) in _special_paths(tmp_path).items():
        _one_line_error(["info", str(tmp_path / name)], message)


def test_ids_beyond_int64_or_the_padding_id_are_named(tmp_path, rng):
    x = rng.standard_normal((20, 4)).astype(np.float32)
    make_store(tmp_path, x).close()
    path = tmp_path / "s.vs"
    before = _files(tmp_path)
    with vecstore.open(path, mode="a") as s:
        for ids in ([2**70], [3, 2**64 - 1], np.array([2**63], dtype=np.uint64)):
            with pytest.raises(vecstore.InvalidInputError, match=r"id \d+ does not fit in int64"):
                s.delete(ids)
        with pytest.raises(vecstore.InvalidInputError, match=r"id -1 \(row 1\) is reserved"):
            s.add(x[:2], ids=[-5, -1])
        with pytest.raises(vecstore.InvalidInputError, match="id 1180591620717411303424 does not fit"):
            s.add(x[:1], ids=[2**70])
    assert _files(tmp_path) == before
    _one_line_error(["delete", str(path), "--ids", "99999999999999999999"], "id 99999999999999999999 does not fit in int64")
    with pytest.raises(vecstore.InvalidInputError, match="it marks padding in search results"):
        make_store(tmp_path, x, name="n.vs", ids=list(range(-1, 19)))
    with make_store(tmp_path, x, name="m.vs", ids=list(range(-21, -1))) as s:  # other negative ids are ids
        assert s.search(x[0], 1).ids[0, 0] == -21


def test_export_into_a_missing_directory(tmp_path, rng):
    make_store(tmp_path, rng.standard_normal((20, 4)).astype(np.float32)).close()
    out = tmp_path / "missing" / "dir" / "out.json"
    _one_line_error(["export-params", str(tmp_path / "s.vs"), "raw", str(out)], "does not exist; create it first")
    from vecstore.encoders import WordVectorEncoder, dump_encoder_json

    encoder = WordVectorEncoder(["a", "b"], np.eye(2, dtype=np.float32))
    with pytest.raises(vecstore.StoreWriteError, match="missing/dir' does not exist; create it first"):
        dump_encoder_json(encoder, out)
    assert sorted(os.listdir(tmp_path)) == ["s.vs"]


def test_text_that_utf8_cannot_store_names_its_row(tmp_path, rng):
    x = rng.standard_normal((3, 4)).astype(np.float32)
    with pytest.raises(vecstore.InvalidInputError, match=r"key 2 is not valid Unicode text"):
        make_store(tmp_path, x, keys=["a", "é", "\ud800"])
    with pytest.raises(vecstore.InvalidInputError, match=r"metadata entry 1 is not valid Unicode text"):
        make_store(tmp_path, x, metadata=[None, {"t": "\udfff"}, {}])
    assert os.listdir(tmp_path) == []


def test_one_dimensional_vectors_are_refused(tmp_path, rng):
    x = rng.standard_normal((5, 4)).astype(np.float32)
    with pytest.raises(vecstore.InvalidInputError, match=r"expected a 2-D array \(n, dim\), got shape \(4,\)"):
        make_store(tmp_path, x[0])
    make_store(tmp_path, x).close()
    with pytest.raises(vecstore.InvalidInputError, match="x.reshape"):
        vecstore.append(tmp_path / "s.vs", x[0], progress=False)


def test_a_file_that_is_not_npy(tmp_path):
    (tmp_path / "bad.npy").write_bytes(b"hello, not numpy\n" * 10)
    line = _one_line_error(["build", str(tmp_path / "bad.npy"), str(tmp_path / "o.vs")], "is not a valid .npy file")
    assert "pickle" not in line
