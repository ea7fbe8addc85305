"""vecstore.format.segments: the manifest and deleted-ids files, the writer lock, garbage collection."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time

import numpy as np
import pytest
from conftest import make_store

import vecstore

from vecstore.errors import FormatError, ReadOnlyStoreError, StoreWriteError
from vecstore.format import schema as fmt
from vecstore.format import segments as seg

N, DIM = 50, 4
BASE = "ab" * 16


@pytest.fixture
def store_path(tmp_path):
    x = np.random.default_rng(3).standard_normal((N, DIM)).astype(np.float32)
    make_store(tmp_path, x).close()
    return str(tmp_path / "s.vs")


def _manifest(**changes) -> seg.Manifest:
    manifest = seg.Manifest(BASE, generation=3, next_id=70,
                            segments=[seg.SegmentEntry(seg.new_file_name("segment"), "cd" * 16, 12, ("keys",)),
                                      seg.SegmentEntry(seg.new_file_name("segment"), "ef" * 8, 8, ())])
    manifest.deleted_file, manifest.deleted_checksum = "deleted-" + "0" * 32 + ".i64", "0123abcd"
    manifest.deleted_count = 4
    for key, value in changes.items():
        setattr(manifest, key, value)
    return manifest


# -- the manifest ----------------------------------------------------------------------------------


@pytest.mark.parametrize("deleted", [True, False])
def test_a_published_manifest_reads_back_equal(tmp_path, deleted):
    path = str(tmp_path / "s.vs")
    manifest = _manifest() if deleted else _manifest(deleted_file=None, deleted_count=0, deleted_checksum=None)
    assert seg.read_manifest(path, BASE) is None  # nothing published yet
    seg.publish(path, manifest)
    assert seg.read_manifest(path, BASE) == manifest
    assert os.listdir(seg.sidecar_dir(path)) == [f"manifest-{BASE}.json"]  # no temporary left
    with open(seg.manifest_path(path, BASE)) as fh:
        assert fh.read() == manifest.to_json()


def test_the_manifest_written_by_append_and_delete_round_trips(store_path):
    with vecstore.open(store_path, mode="a") as writable:
        writable.add(np.ones((6, DIM), np.float32))
        writable.delete([7, 3, 51])
        base = writable._now().base_id
        in_memory = writable._now().manifest
    manifest = seg.read_manifest(store_path, base)
    assert manifest == in_memory
    assert (manifest.base_id, manifest.generation, manifest.next_id) == (base, 2, N + 6)
    assert [s.count for s in manifest.segments] == [6] and manifest.deleted_count == 3
    assert seg.read_deleted(store_path, manifest).tolist() == [3, 7, 51]
    assert seg.manifest_files(manifest) == {manifest.segments[0].file, manifest.deleted_file,
                                            f"manifest-{base}.json"}
    assert set(os.listdir(seg.sidecar_dir(store_path))) == seg.manifest_files(manifest)
    seg.publish(store_path, manifest)  # published again unchanged: the same file
    assert seg.read_manifest(store_path, base) == manifest


def _write_doc(path, doc):
    os.makedirs(seg.sidecar_dir(path), exist_ok=True)
    with open(seg.manifest_path(path, BASE), "w") as fh:
        fh.write(doc if isinstance(doc, str) else json.dumps(doc))


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(format="something-else"), "not a vecstore segment manifest"),
    (lambda d: d.update(version=0), "version: expected an integer >= 1"),
    (lambda d: d.update(version=True), "version: expected an integer"),
    (lambda d: d.update(generation=-2), "generation: expected an integer >= 0"),
    (lambda d: d.update(generation=1.5), "generation: expected an integer"),
    (lambda d: d.update(next_id=2 ** 63), "next_id: expected an integer"),
    (lambda d: d.update(segments={}), "'segments' must be a list"),
    (lambda d: d["segments"][1].update(count=-1), "segment 1: expected an integer"),
    (lambda d: d["segments"][0].update(store_id="XYZ"), "segment 0 must name a file"),
    (lambda d: d["segments"][0].pop("file"), "segment 0 must name a file"),
    (lambda d: d["deleted"].update(file="deleted-1.i64"), "'deleted' must name a file"),
    (lambda d: d["deleted"].update(xxh3_64=17), "'deleted' must name a file"),
    (lambda d: d["deleted"].update(count="4"), "deleted count"),
])
def test_a_manifest_with_a_wrong_field_is_refused(tmp_path, edit, match):
    path = str(tmp_path / "s.vs")
    doc = json.loads(_manifest().to_json())
    edit(doc)
    _write_doc(path, doc)
    with pytest.raises(FormatError, match=f"does not match its checksum|{match}"):  # format/version come first
        seg.read_manifest(path, BASE)
    doc["xxh3_64"] = seg.manifest_checksum(doc)  # and behind a recomputed one, the field is checked
    _write_doc(path, doc)
    with pytest.raises(FormatError, match=match):
        seg.read_manifest(path, BASE)


@pytest.mark.parametrize("text", ["{not json", "\xff\xfe", "[1, 2]", ""])
def test_a_manifest_that_is_not_one_is_refused(tmp_path, text):
    path = str(tmp_path / "s.vs")
    _write_doc(path, text)
    with pytest.raises(FormatError, match=re.escape(seg.manifest_path(path, BASE))):
        seg.read_manifest(path, BASE)


def test_an_oversized_manifest_is_refused_unparsed(tmp_path, monkeypatch):
    path = str(tmp_path / "s.vs")
    _write_doc(path, _manifest().to_json())
    monkeypatch.setattr(seg, "MAX_MANIFEST_BYTES", 100)
    with pytest.raises(FormatError, match="larger than 100 bytes"):
        seg.read_manifest(path, BASE)


# -- deleted ids -----------------------------------------------------------------------------------


def test_deleted_ids_file_holds_the_sorted_ids_as_little_endian_int64(tmp_path):
    path = str(tmp_path / "s.vs")
    ids = np.array([-5, 0, 3, 2 ** 40])
    name, checksum = seg.write_deleted(path, ids)
    assert seg.DELETED_FILE.match(name)
    with open(os.path.join(seg.sidecar_dir(path), name), "rb") as fh:
        assert fh.read() == ids.astype("<i8").tobytes()
    manifest = _manifest(deleted_file=name, deleted_count=4, deleted_checksum=checksum)
    got = seg.read_deleted(path, manifest)
    assert got.dtype == np.int64 and got.tolist() == ids.tolist()


@pytest.mark.parametrize("change, match", [
    (dict(deleted_checksum="0" * 16), "size or checksum"),
    (dict(deleted_count=3), "size or checksum"),
    (dict(deleted_count=5), "size or checksum"),
    (dict(deleted_file="deleted-" + "f" * 32 + ".i64"), "missing"),
])
def test_a_deleted_ids_file_that_does_not_match_its_record_is_refused(tmp_path, change, match):
    path = str(tmp_path / "s.vs")
    name, checksum = seg.write_deleted(path, np.arange(4))
    manifest = _manifest(**{**dict(deleted_file=name, deleted_count=4, deleted_checksum=checksum), **change})
    with pytest.raises(FormatError, match=match):
        seg.read_deleted(path, manifest)


def test_unsorted_deleted_ids_are_refused_even_with_a_matching_checksum(tmp_path):
    path = str(tmp_path / "s.vs")
    name, checksum = seg.write_deleted(path, np.array([4, 2, 9]))
    with pytest.raises(FormatError, match="not sorted and unique"):
        seg.read_deleted(path, _manifest(deleted_file=name, deleted_count=3, deleted_checksum=checksum))
    assert seg.read_deleted(path, _manifest(deleted_file=None)).shape == (0,)


# -- the writer lock -------------------------------------------------------------------------------


def test_the_writer_lock_excludes_a_second_writer_until_the_timeout(tmp_path):
    path = str(tmp_path / "s.vs")
    with seg.writer_lock(path):
        assert os.path.exists(seg.lock_path(path)) and seg.lock_path(path).endswith("/.s.vs.lock")
        started = time.monotonic()
        with pytest.raises(StoreWriteError, match="another process has been writing"):
            with seg.writer_lock(path, timeout=0.3):
                pytest.fail("two writers held the lock")
        assert time.monotonic() - started >= 0.3
    with seg.writer_lock(path, timeout=0):  # released: free at once
        pass


def test_a_waiting_writer_gets_the_lock_when_the_first_releases_it(tmp_path):
    path = str(tmp_path / "s.vs")
    order = []
    holding = threading.Event()

    def first():
        with seg.writer_lock(path):
            holding.set()
            time.sleep(0.2)
            order.append("first done")

    thread = threading.Thread(target=first)
    thread.start()
    holding.wait(5)
    with seg.writer_lock(path, timeout=10):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]


def test_a_lock_that_cannot_be_created_makes_the_store_read_only(tmp_path):
    with pytest.raises(ReadOnlyStoreError, match="not writable"):
        with seg.writer_lock(str(tmp_path / "no-such-dir" / "s.vs")):
            pass


# -- garbage -------------------------------------------------------------------------------------


def _touch(directory, name, age):
    path = os.path.join(directory, name)
    with open(path, "wb") as fh:
        fh.write(b"x")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return name


def _dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_publish_change_retires_by_record_not_by_age(tmp_path):
    path = str(tmp_path / "s.vs")
    directory = seg.sidecar_dir(path)
    os.makedirs(directory)
    ancient = 10 ** 6  # mtime: 11 days ago; age must not matter
    current = seg.Manifest(BASE, segments=[seg.SegmentEntry(_touch(directory, seg.new_file_name("segment"), ancient),
                                                            "ab" * 16, 1, ())])
    stale = _touch(directory, seg.new_file_name("deleted"), ancient)
    expired = _touch(directory, seg.new_file_name("segment"), ancient)
    old_manifest = _touch(directory, seg.manifest_name("cd" * 16), ancient)
    now = 1_000_000
    current.retired = {expired: now - seg.RETIRE_GRACE_S, old_manifest: now - seg.RETIRE_GRACE_S + 1}
    garbage = {_touch(directory, f".seg-x.vs{fmt.TMP_MARK}{_dead_pid()}-0000", 0)}  # its writer died
    stays = {_touch(directory, f".seg-y.vs{fmt.TMP_MARK}{os.getpid()}-0000", ancient),  # its writer lives
             _touch(directory, "notes.txt", ancient), _touch(directory, "seg-123.vs", ancient)}  # not ours
    new = seg.Manifest(BASE, generation=1, segments=list(current.segments))
    removed = seg.publish_change(path, new, current, now=now)
    assert removed == [expired]
    assert new.retired == {stale: now, old_manifest: now - seg.RETIRE_GRACE_S + 1}
    assert set(os.listdir(directory)) == (seg.manifest_files(new) | {stale, old_manifest} | stays)
    assert not garbage & set(os.listdir(directory))
    assert seg.read_manifest(path, BASE).retired == new.retired


def test_publish_change_never_removes_what_the_manifest_names(store_path, monkeypatch):
    with vecstore.open(store_path, mode="a") as writable:
        writable.add(np.ones((3, DIM), np.float32))
        writable.delete([0])
        manifest = writable._now().manifest
    monkeypatch.setattr(seg, "RETIRE_GRACE_S", 0)
    assert seg.publish_change(store_path, manifest, manifest) == []
    with vecstore.open(store_path) as reopened:
        assert reopened.count == N + 3 - 1
