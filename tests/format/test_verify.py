"""Integrity: a checksum per dataset, recomputed by verify; one flipped byte anywhere is caught."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import vecstore
from conftest import make_store
from vecstore.cli import cli


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    rng = np.random.default_rng(3)
    path = tmp_path_factory.mktemp("v") / "s.vs"
    x = rng.standard_normal((600, 16)).astype(np.float32)
    vecstore.build(path, x, metric="l2", keys=[f"k{i}" for i in range(600)],
                   metadata=[{"i": i} for i in range(600)], progress=False).close()
    vecstore.compress(path, "pq4", calibrate=False, train_size=600, progress=False).close()
    vecstore.compress(path, "pca8,int8", calibrate=False, progress=False).close()
    return path


def test_clean_store_verifies(store_path):
    checks = vecstore.verify(store_path)
    assert all(c.ok for c in checks)
    names = {c.name for c in checks}
    assert {"ids", "tiers/raw/codes", "tiers/pq4/params/0.codebooks", "tiers/pca8,int8/params/1.scale",
            "keys/data", "metadata/offsets", "tiers/raw/sqnorms"} <= names


def _offsets(path):
    with h5py.File(path, "r") as f:
        out = {}
        f.visititems(lambda name, obj: out.__setitem__(name, (obj.id.get_offset(), obj.id.get_storage_size()))
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def test_one_flipped_byte_in_any_dataset_is_caught(store_path, tmp_path):
    data = store_path.read_bytes()
    for name, (offset, size) in _offsets(store_path).items():
        if not size:
            continue
        damaged = bytearray(data)
        damaged[offset + size // 2] ^= 0x40
        path = tmp_path / "d.vs"
        path.write_bytes(bytes(damaged))
        with pytest.raises(vecstore.IntegrityError, match=f"/{name}"):
            vecstore.verify(path)


def test_cli_verify(store_path, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(cli, ["verify", str(store_path)])
    assert ok.exit_code == 0 and "datasets match their checksums" in ok.stdout
    offset, size = _offsets(store_path)["tiers/pq4/codes"]
    damaged = bytearray(store_path.read_bytes())
    damaged[offset] ^= 1
    (tmp_path / "d.vs").write_bytes(bytes(damaged))
    bad = runner.invoke(cli, ["verify", str(tmp_path / "d.vs")])
    assert bad.exit_code == 1 and "MISMATCH  /tiers/pq4/codes" in bad.stdout
    assert "/tiers/pq4/codes" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_missing_checksum_is_reported(tmp_path, rng):
    make_store(tmp_path, rng.standard_normal((5, 3)).astype(np.float32)).close()
    with h5py.File(tmp_path / "s.vs", "r+") as f:
        del f["ids"].attrs["xxh3_64"]
    with pytest.raises(vecstore.IntegrityError, match="no checksum recorded"):
        vecstore.verify(tmp_path / "s.vs")
