"""Append, delete, compact, reload: a store that changes stays one store.

The reference for every change is a store built in one go from the same live documents: a changed
store must give its exact answers (same ids, scores to 1e-5), and its compressed tiers must hold
the codes the main file's parameters give.
"""

from __future__ import annotations

import json
import os
import shutil
import time

import numpy as np
import pytest

import vecstore
from vecstore.format import schema as fmt
from vecstore.format import segments as seg
from vecstore.errors import FormatError, InvalidInputError, ReadOnlyStoreError

N, DIM = 1500, 16
METRICS = ("ip", "cosine", "l2")


def _data(seed: int, n: int = N, shift: float = 0.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, DIM)) + shift).astype(np.float32)


@pytest.fixture
def queries():
    return np.random.default_rng(7).standard_normal((20, DIM)).astype(np.float32)


def _store(tmp_path, metric="ip", codec="pq4", name="s.vs"):
    path = str(tmp_path / name)
    vecstore.build(path, _data(1), metric=metric, keys=[f"doc{i}" for i in range(N)], progress=False).close()
    if codec:
        vecstore.compress(path, codec, calibrate=False, progress=False).close()
    return path


def _reference(tmp_path, metric, vectors, ids, name="ref.vs"):
    return vecstore.build(str(tmp_path / name), vectors, metric=metric, ids=ids, progress=False)


@pytest.mark.parametrize("metric", METRICS)
def test_append_then_delete_answers_like_a_store_built_in_one_go(tmp_path, metric, queries):
    path = _store(tmp_path, metric)
    extra = _data(2, 300)
    with vecstore.open(path, mode="a") as store:
        new_ids = store.add(extra, keys=[f"new{i}" for i in range(300)])
        assert new_ids.tolist() == list(range(N, N + 300))
        assert store.count == N + 300 and store.segment_count == 1
        gone = [0, 5, N + 1, N + 299]
        assert store.delete(gone) == 4
        assert store.count == N + 300 - 4 and store.deleted_count == 4
        everything = np.concatenate([_data(1), extra])
        keep = np.setdiff1d(np.arange(N + 300), gone)
        with _reference(tmp_path, metric, everything[keep], keep) as ref:
            for k in (1, 10, 100):
                d, i = store.search(queries, k, tier="raw")
                rd, ri = ref.search(queries, k)
                np.testing.assert_array_equal(i, ri)
                np.testing.assert_allclose(d, rd, rtol=1e-5, atol=1e-5)
        assert set(store.ids.tolist()) == set(keep.tolist())
        assert store.keys([N + 2, 7]) == ["new2", "doc7"]
        np.testing.assert_allclose(store.vectors([N + 3])[0], _normalised(extra[3], metric), rtol=1e-6)
        with pytest.raises(InvalidInputError, match="deleted"):
            store.keys([5])


def _normalised(x, metric):
    return x / np.linalg.norm(x) if metric == "cosine" else x


def test_appended_documents_are_encoded_with_the_stored_parameters(tmp_path):
    path = _store(tmp_path, "l2", codec="pq4")
    extra = _data(3, 200)
    with vecstore.open(path, mode="a") as store:
        store.add(extra)
        main_codec = store.tier("pq4").codec
        segment = store._now().segments[0]
        np.testing.assert_array_equal(np.asarray(segment.tier("pq4").codes), main_codec.encode(extra))
        # coarse-tier search covers appended documents: each finds itself first
        _, ids = store.search(extra[:20], 1, tier="pq4", rescore="raw", oversample=8)
        assert ids[:, 0].tolist() == list(range(N, N + 20))


def test_deleted_documents_never_appear_and_k_live_results_come_back(tmp_path, queries):
    path = _store(tmp_path, "ip")
    with vecstore.open(path, mode="a") as store:
        _, before = store.search(queries, 50, tier="raw")
        victims = np.unique(before[:, :30])  # most of every query's best answers
        store.delete(victims)
        for plan in ({"tier": "raw"}, {"tier": "pq4"}, {"tier": "pq4", "rescore": "raw", "oversample": 4}, {}):
            _, ids = store.search(queries, 50, **plan)
            assert not np.isin(ids, victims).any()
            assert (ids >= 0).all(), plan  # still k live results per query
        d, ids = store.search(queries, N, tier="raw")  # k beyond the live count pads with -1
        assert ((ids >= 0).sum(axis=1) == N - victims.shape[0]).all()
        assert np.isneginf(d[:, -1]).all()


def test_compact_keeps_the_answers_and_leaves_one_file(tmp_path, queries):
    path = _store(tmp_path, "cosine")
    with vecstore.open(path, mode="a") as store:
        store.add(_data(4, 100), metadata=[{"n": i} for i in range(100)])
        store.delete([1, 2, N + 5])
        before = {t: store.search(queries, 10, tier=t) for t in ("raw", "pq4")}
        assert store.keys([N + 4, 0]) == ["", "doc0"]
        report = store.compact(progress=False)
        assert report == {**report, "documents": N + 97, "merged_segments": 1, "dropped": 3}
        assert store.segment_count == 0 and store.deleted_count == 0 and store.count == N + 97
        for t, (d, i) in before.items():
            after = store.search(queries, 10, tier=t)
            np.testing.assert_array_equal(after.ids, i)
            np.testing.assert_allclose(after.distances, d, rtol=1e-6)
        assert store.metadata([N + 4]) == [{"n": 4}] and store.keys([N + 4]) == [""]
    assert vecstore.verify(path)


def test_compress_after_append_keeps_the_appended_documents(tmp_path):
    path = _store(tmp_path, "ip", codec=None)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(5, 50))
        store.delete([3])
    with vecstore.compress(path, "int8", calibrate=False, progress=False) as store:
        assert store.count == N + 49 and store.segment_count == 0
        assert store.tier("int8").count == N + 49
        assert 3 not in set(store.ids.tolist())


def test_deleting_everything_then_compacting_leaves_an_empty_store(tmp_path, queries):
    path = _store(tmp_path, "l2", codec=None)
    with vecstore.open(path, mode="a") as store:
        store.delete(np.arange(N))
        d, i = store.search(queries, 3)
        assert (i == -1).all() and np.isposinf(d).all()
        store.compact(progress=False)
        assert store.count == 0 and store.search(queries, 3).ids.tolist() == [[-1] * 3] * 20


# -- bad input: a clear error and the store unchanged ----------------------------------------------


def _state(path):
    with vecstore.open(path) as store:
        return store.count, store.segment_count, store.deleted_count, sorted(os.listdir(seg.sidecar_dir(path))) \
            if os.path.isdir(seg.sidecar_dir(path)) else []


@pytest.mark.parametrize("case, match", [
    ("dim", "dimension 8"),
    ("nan", "row 7 contains NaN"),
    ("dup", "id 5 is already in the store"),
    ("dup_in_batch", "appears more than once"),
    ("empty", "no vectors to append"),
    ("model", "minilm@2 but the store holds vectors of minilm@1"),
])
def test_bad_appends_are_refused_and_change_nothing(tmp_path, case, match):
    path = str(tmp_path / "s.vs")
    vecstore.build(path, _data(1), model="minilm@1", progress=False).close()
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 10))
        before = _state(path)
        x = _data(3, 20)
        kwargs = {}
        if case == "dim":
            x = np.ones((5, 8), np.float32)
        elif case == "nan":
            x[7, 3] = np.nan
        elif case == "dup":
            kwargs["ids"] = np.arange(20) + 3  # 5.. are in the main file
            kwargs["ids"][0] = 10**6
            kwargs["ids"][1] = 10**6 + 1
        elif case == "dup_in_batch":
            kwargs["ids"] = np.full(20, 10**6)
        elif case == "empty":
            x = np.empty((0, DIM), np.float32)
        elif case == "model":
            kwargs["model"] = "minilm@2"
        with pytest.raises(InvalidInputError, match=match):
            store.add(x, **kwargs)
        assert _state(path) == before


def test_appending_a_deleted_id_says_to_compact_first(tmp_path):
    path = _store(tmp_path, codec=None)
    with vecstore.open(path, mode="a") as store:
        store.delete([9])
        with pytest.raises(InvalidInputError, match="compact first"):
            store.add(_data(2, 1), ids=[9])


@pytest.mark.parametrize("ids, match", [([N + 10], r"not in the store \(1510\); nothing was deleted"),
                                        ([4, -3], "not in the store"), ([], "non-empty"),
                                        (["a"], "integers")])
def test_deleting_unknown_ids_is_reported_and_deletes_nothing(tmp_path, ids, match):
    path = _store(tmp_path, codec=None)
    with vecstore.open(path, mode="a") as store:
        with pytest.raises(InvalidInputError, match=match):
            store.delete(ids)
        assert store.deleted_count == 0 and store.count == N
        store.delete([4])
        with pytest.raises(InvalidInputError, match="already deleted"):
            store.delete([4])


def test_a_store_opened_read_only_refuses_changes(tmp_path):
    path = _store(tmp_path, codec=None)
    with vecstore.open(path) as store:
        for change in (lambda: store.add(_data(2, 3)), lambda: store.delete([1]), lambda: store.compact()):
            with pytest.raises(ReadOnlyStoreError, match="mode='a'"):
                change()
    with pytest.raises(InvalidInputError, match="mode must be"):
        vecstore.open(path, mode="w")


def test_a_directory_that_cannot_be_written_makes_the_store_read_only(tmp_path, monkeypatch):
    path = _store(tmp_path, codec=None)
    real_open = os.open

    def refuse(p, flags, *args):
        if str(p).endswith(".lock"):
            raise PermissionError(13, "Permission denied")
        return real_open(p, flags, *args)

    monkeypatch.setattr(os, "open", refuse)
    with vecstore.open(path, mode="a") as store:
        with pytest.raises(ReadOnlyStoreError, match="not writable"):
            store.delete([1])


# -- readers and versions -------------------------------------------------------------------------


def test_open_readers_keep_their_version_until_they_reload(tmp_path, queries):
    path = _store(tmp_path, codec=None)
    reader = vecstore.open(path)
    auto = vecstore.open(path, auto_reload=True)
    before = reader.search(queries, 5)
    with vecstore.open(path, mode="a") as writer:
        writer.add(queries * 100)  # the new documents win every ip query
    assert reader.count == N
    np.testing.assert_array_equal(reader.search(queries, 5).ids, before.ids)
    assert (auto.search(queries, 1).ids[:, 0] >= N).all()
    assert reader.reload() is True and reader.reload() is False
    assert reader.count == N + 20
    reader.close()
    auto.close()


def test_load_applies_to_segments_and_survives_reload(tmp_path):
    path = _store(tmp_path)
    with vecstore.open(path, resident=["pq4"], mode="a") as store:
        store.add(_data(2, 10))
        mem = store.memory()
        assert all(p.tiers["pq4"].resident for p in store._now().parts)
        assert mem["tiers"]["pq4"]["mapped_bytes"] == 0


# -- the files: damaged or edited segment state is refused ---------------------------------------


def _manifest(path):
    directory = seg.sidecar_dir(path)
    name = next(e for e in os.listdir(directory) if e.startswith("manifest-"))
    return os.path.join(directory, name)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(version=9), "upgrade vecstore"),
    (lambda m: m["segments"][0].update(count=11), "identity or count"),
    (lambda m: m["segments"][0].update(file="seg-" + "0" * 32 + ".vs"), "missing"),
    (lambda m: m["segments"][0].update(file="../../etc/passwd"), "seg-<32 hex>"),
    (lambda m: m.update(segments=m["segments"] * 2), "listed twice"),
    (lambda m: m["deleted"].update(count=1), "size or checksum"),
    (lambda m: m.update(next_id=-1), "next_id"),
    (lambda m: m.update(base="f" * 32), "names main file"),
])
def test_an_edited_manifest_is_refused(tmp_path, edit, match):
    path = _store(tmp_path)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 10))
        store.delete([1, 2])
    with open(_manifest(path)) as fh:
        doc = json.load(fh)
    edit(doc)
    doc["xxh3_64"] = seg.manifest_checksum(doc)  # sealed again: the checks behind the checksum
    with open(_manifest(path), "w") as fh:
        json.dump(doc, fh)
    with pytest.raises(FormatError, match=match):
        vecstore.open(path)


def _edit_manifest(path, edit):
    with open(_manifest(path)) as fh:
        doc = json.load(fh)
    edit(doc)
    with open(_manifest(path), "w") as fh:
        json.dump(doc, fh)


@pytest.mark.parametrize("edit", [
    lambda m: m.update(segments=[]),
    lambda m: m["segments"].pop(0),
    lambda m: m.update(deleted=None),
    lambda m: m.pop("deleted"),
    lambda m: m.update(generation=m["generation"] + 1),
    lambda m: m["deleted"].update(count=m["deleted"]["count"]),  # unchanged: only the text moves
], ids=["segments-empty", "segment-dropped", "deleted-null", "deleted-removed", "generation", "reformatted"])
def test_a_manifest_is_checksummed(tmp_path, edit):
    """Any edit of a manifest's content is refused (its xxh3_64 covers the canonical JSON), and
    only its content: the same manifest written with other whitespace still opens."""
    path = _store(tmp_path)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 10))
        store.delete([1, 2])
        count = store.count
    _edit_manifest(path, edit)
    with open(_manifest(path)) as fh:
        doc = json.load(fh)
    if doc.get("xxh3_64") == seg.manifest_checksum(doc):
        with vecstore.open(path) as store:
            assert store.count == count
    else:
        with pytest.raises(FormatError, match="checksum|lacks the field"):
            vecstore.open(path)
        with pytest.raises(FormatError, match="checksum|lacks the field"):
            vecstore.verify(path)


@pytest.mark.parametrize("field", ["format", "version", "base", "generation", "next_id", "segments", "deleted",
                                   "xxh3_64"])
def test_a_manifest_lacking_a_field_is_refused(tmp_path, field):
    path = _store(tmp_path)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 10))
    _edit_manifest(path, lambda m: m.pop(field))
    with pytest.raises(FormatError):
        vecstore.open(path)


def test_a_version_1_manifest_without_checksum_still_opens_and_is_upgraded_by_the_next_write(tmp_path):
    path = _store(tmp_path)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 10), keys=[f"k{i}" for i in range(10)])
        store.delete([1])
        count = store.count
    _edit_manifest(path, lambda m: (m.pop("xxh3_64"), m.update(version=1),
                                    [s.pop("columns") for s in m["segments"]]))
    with vecstore.open(path, mode="a") as store:
        assert store.count == count and store.keys([N])[0] == "k0"
        store.delete([2])
    with open(_manifest(path)) as fh:
        doc = json.load(fh)
    assert doc["version"] == seg.MANIFEST_VERSION == 3 and doc["xxh3_64"] == seg.manifest_checksum(doc)
    assert doc["segments"][0]["columns"] == ["keys"]
    # a version-1 manifest that carries a checksum has it checked (a bit flip 2 -> 1 is no way around it)
    _edit_manifest(path, lambda m: m.update(version=1))
    with pytest.raises(FormatError, match="checksum"):
        vecstore.open(path)


def test_a_segment_lacking_a_column_its_manifest_records_is_refused(tmp_path):
    """Parts may differ in their string columns (docs/format.md), so the manifest records each
    segment's; a segment whose /keys group was removed no longer matches it."""
    import h5py

    path = _store(tmp_path)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 10), keys=[f"k{i}" for i in range(10)])
        store.add(_data(3, 5))  # no keys: legitimate, and recorded so
    with open(_manifest(path)) as fh:
        entries = json.load(fh)["segments"]
    assert [e["columns"] for e in entries] == [["keys"], []]
    with vecstore.open(path) as store:
        assert store.keys([N, N + 10]) == ["k0", ""]
    segment = os.path.join(seg.sidecar_dir(path), entries[0]["file"])
    with h5py.File(segment, "r+") as f:
        del f["keys"]
    with pytest.raises(FormatError, match="store_xxh3_64"):  # the file's list of datasets is checksummed
        vecstore.open(path)
    with h5py.File(segment, "r+") as f:  # an edit that also rewrites the checksum: the manifest still tells
        listing = []
        f.visititems(lambda name, obj: listing.append((name, obj.dtype.str, obj.shape))
                     if isinstance(obj, h5py.Dataset) else None)
        f.attrs["store_xxh3_64"] = fmt.store_checksum(f.attrs["store_id"], listing)
    with pytest.raises(FormatError, match=r"holds the string columns \[\] but its manifest records \['keys'\]"):
        vecstore.open(path)


def test_a_segment_encoded_with_other_parameters_is_refused(tmp_path):
    path = _store(tmp_path)
    other = _store(tmp_path / "..", name="other.vs")  # same codec string, other training sample
    vecstore.compress(other, "pq4", replace=True, seed=5, calibrate=False, progress=False).close()
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 10))
        name = store._now().manifest.segments[0].file
    with vecstore.open(other, mode="a") as donor:
        donor.add(_data(2, 10))
        donor_file = os.path.join(seg.sidecar_dir(other), donor._now().manifest.segments[0].file)
    target = os.path.join(seg.sidecar_dir(path), name)
    shutil.copyfile(donor_file, target)
    with pytest.raises(FormatError, match="identity or count|parameters"):
        vecstore.open(path)


def _age_everything(path, seconds=7200):
    """Set every file of the store into the past (their age must not matter: only retirement does)."""
    then = time.time() - seconds
    for directory in (os.path.dirname(path), seg.sidecar_dir(path)):
        for name in os.listdir(directory):
            os.utime(os.path.join(directory, name), (then, then))


def test_replaced_files_are_retired_and_removed_only_after_the_grace_period(tmp_path, monkeypatch):
    path = _store(tmp_path, codec=None)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 5))
        store.delete([0])
        first = store._now().manifest.deleted_file
        _age_everything(path)
        store.delete([1])  # replaces the deleted-ids file, whose mtime is two hours old
        manifest = store._now().manifest
    directory = seg.sidecar_dir(path)
    assert first in os.listdir(directory) and first in manifest.retired  # retired now, not removed
    assert abs(manifest.retired[first] - time.time()) < 60
    with vecstore.open(path, mode="a") as store:
        _age_everything(path)
        store.compact(progress=False)
    names = set(os.listdir(directory))
    assert first in names and len([n for n in names if n.startswith("manifest-")]) == 2
    with vecstore.open(path) as store:
        current = store._now().manifest  # compaction published the new main file's manifest first
        assert current is not None and not current.segments and current.deleted_file is None
        assert store.count == N + 5 - 2
    monkeypatch.setattr(seg, "RETIRE_GRACE_S", 0)
    with vecstore.open(path, mode="a") as store:
        store.delete([2])
        kept = seg.manifest_files(store._now().manifest)
    assert set(os.listdir(directory)) - {".lock"} == kept  # everything retired is gone now


def test_retired_time_is_kept_from_the_previous_manifest(tmp_path):
    path = _store(tmp_path, codec=None)
    with vecstore.open(path, mode="a") as store:
        store.delete([0])
        old = store._now().manifest.deleted_file
        store.delete([1])
        since = store._now().manifest.retired[old]
    with open(_manifest(path)) as fh:
        doc = json.load(fh)
    for entry in doc["retired"]:
        entry["since"] -= 100
    doc["xxh3_64"] = seg.manifest_checksum(doc)
    with open(_manifest(path), "w") as fh:
        json.dump(doc, fh)
    with vecstore.open(path, mode="a") as store:
        store.delete([2])
        assert store._now().manifest.retired[old] == since - 100


def _rename_manifest_to(path, other_id):
    directory = seg.sidecar_dir(path)
    [name] = [n for n in os.listdir(directory) if n.startswith("manifest-")]
    os.rename(os.path.join(directory, name), os.path.join(directory, seg.manifest_name(other_id)))


def test_a_segment_directory_whose_manifests_match_no_main_file_is_refused(tmp_path, monkeypatch):
    path = _store(tmp_path, codec=None)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 5))
        store.delete([0])
    _rename_manifest_to(path, "ab" * 16)
    before = sorted(os.listdir(seg.sidecar_dir(path)))
    for call in (vecstore.open, vecstore.verify):
        with pytest.raises(FormatError, match="no segment manifest matches the main file.*move"):
            call(path)
    monkeypatch.setattr(seg, "RETIRE_GRACE_S", 0)
    _age_everything(path)
    with pytest.raises(FormatError, match="no segment manifest matches"):
        vecstore.delete(path, [3])  # a writer refuses too: nothing is cleaned up
    assert sorted(os.listdir(seg.sidecar_dir(path))) == before


def test_a_removed_segment_directory_is_noticed_through_the_marker(tmp_path):
    path = _store(tmp_path, codec=None)
    marker = seg.marker_path(path)
    with vecstore.open(path, mode="a") as store:
        store.delete([0])
    assert os.path.basename(marker) == ".s.vs.segmented" and os.path.exists(marker)
    shutil.rmtree(seg.sidecar_dir(path))
    for call in (vecstore.open, vecstore.verify):
        with pytest.raises(FormatError, match="appended documents or deletions are missing.*segmented"):
            call(path)
    with pytest.raises(FormatError, match="are missing"):
        vecstore.delete(path, [3])  # and a writer does not start afresh over it
    os.unlink(marker)  # dropped on purpose, as the message says
    with vecstore.open(path) as store:
        assert store.count == N and store.deleted_count == 0


def test_the_marker_follows_the_main_file_that_has_segments(tmp_path):
    path = _store(tmp_path, codec=None)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 5))
        first = store._now().base_id
        with open(seg.marker_path(path)) as fh:
            assert fh.read().strip() == first
        store.compact()  # a new main file with nothing appended: the marker names the old one, ignored
        assert store._now().base_id != first
    shutil.rmtree(seg.sidecar_dir(path))
    with vecstore.open(path) as store:
        assert store.count == N + 5


def test_a_main_file_with_an_edited_identity_is_refused(tmp_path):
    import h5py

    path = _store(tmp_path, codec=None)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 5))
    for edit in ("flip", "other", "remove"):
        copy = str(tmp_path / f"{edit}.vs")
        shutil.copyfile(path, copy)
        shutil.copytree(seg.sidecar_dir(path), seg.sidecar_dir(copy))
        with h5py.File(copy, "r+") as f:
            if edit == "remove":
                del f.attrs["store_id"]
            else:
                old = f.attrs["store_id"]
                f.attrs["store_id"] = ("0" if old[0] != "0" else "1") + old[1:] if edit == "flip" else "cd" * 16
        with pytest.raises(FormatError, match="store_xxh3_64"):
            vecstore.open(copy)
        with pytest.raises(FormatError, match="store_xxh3_64"):
            vecstore.verify(copy)


def test_a_removed_or_dangling_manifest_is_refused(tmp_path):
    path = _store(tmp_path, codec=None)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 5))
    manifest = _manifest(path)
    os.rename(manifest, manifest + ".moved")
    with pytest.raises(FormatError, match="no manifest"):
        vecstore.open(path)
    os.symlink(manifest + ".gone", manifest)
    with pytest.raises(FormatError, match="link to a missing file"):
        vecstore.open(path)


def test_a_leftover_manifest_of_an_older_version_is_ignored(tmp_path):
    """Older vecstore's compaction replaced the main file first and left the old manifest (version
    2) behind: such a store opens as its main file, and the next write retires the leftovers."""
    path = _store(tmp_path, codec=None)
    directory = seg.sidecar_dir(path)
    os.makedirs(directory)
    doc = {"format": "vecstore-segments", "version": 2, "base": "ef" * 16, "generation": 3, "next_id": 7,
           "segments": [], "deleted": None}
    doc["xxh3_64"] = seg.manifest_checksum(doc)
    with open(os.path.join(directory, seg.manifest_name("ef" * 16)), "w") as fh:
        json.dump(doc, fh)
    with vecstore.open(path) as store:
        assert store.count == N
    vecstore.verify(path)
    with vecstore.open(path, mode="a") as store:
        store.delete([0])
        assert seg.manifest_name("ef" * 16) in store._now().manifest.retired


def test_cleanup_keeps_what_another_current_manifest_names(tmp_path, monkeypatch):
    """A manifest of this version that is neither the main file's nor retired (a swap killed before
    its rename, or damage) keeps its files whatever their age."""
    path = _store(tmp_path, codec=None)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 5))
        manifest = store._now().manifest
    foreign = seg.Manifest("ab" * 16, segments=list(manifest.segments), next_id=manifest.next_id)
    seg.publish(path, foreign)
    with open(_manifest(path)) as fh:
        doc = json.load(fh)
    monkeypatch.setattr(seg, "RETIRE_GRACE_S", 0)
    with vecstore.open(path, mode="a") as store:
        store.delete([0])
        store.add(_data(3, 2))
        store.compact(progress=False)
        store.delete([1])
    names = set(os.listdir(seg.sidecar_dir(path)))
    assert seg.manifest_name("ab" * 16) in names and manifest.segments[0].file in names
    assert doc["segments"][0]["file"] in names


def test_segments_follow_the_spec(tmp_path):
    """docs/format.md "Segments", checked with json, h5py and xxhash only."""
    import h5py
    import xxhash

    path = _store(tmp_path)
    with vecstore.open(path, mode="a") as store:
        store.add(_data(2, 10))
        store.delete([4, 2])
    with h5py.File(path, "r") as f:
        base_id = f.attrs["store_id"]
        main_params = {k: f[f"tiers/pq4/params/{k}"][()] for k in f["tiers/pq4/params"]}
        main_codec = f["tiers/pq4"].attrs["codec"]
    with open(os.path.join(path + ".segments", f"manifest-{base_id}.json")) as fh:
        doc = json.load(fh)
    assert doc["format"] == "vecstore-segments" and doc["version"] == 3 and doc["base"] == base_id
    assert doc["next_id"] == N + 10 and doc["generation"] == 2
    (entry,) = doc["segments"]
    assert entry["columns"] == []  # appended without keys or metadata
    body = {k: v for k, v in doc.items() if k != "xxh3_64"}  # docs/format.md: the canonical JSON
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    assert doc["xxh3_64"] == xxhash.xxh3_64_hexdigest(canonical)
    with open(os.path.join(path + ".segments", doc["deleted"]["file"]), "rb") as fh:
        raw = fh.read()
    assert np.frombuffer(raw, "<i8").tolist() == [2, 4] and doc["deleted"]["count"] == 2
    assert xxhash.xxh3_64_hexdigest(raw) == doc["deleted"]["xxh3_64"]

    def digest(text, arrays):
        h = xxhash.xxh3_64()
        h.update(text.encode())
        for name in sorted(arrays):
            a = arrays[name]
            h.update(f"\0{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode())
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()

    with h5py.File(os.path.join(path + ".segments", entry["file"]), "r") as f:
        assert f.attrs["store_id"] == entry["store_id"] and f.attrs["count"] == entry["count"] == 10
        seg_params = {k: f[f"tiers/pq4/params/{k}"][()] for k in f["tiers/pq4/params"]}
        seg_codec = f["tiers/pq4"].attrs["codec"]
    assert digest(seg_codec, seg_params) == digest(main_codec, main_params)
    from vecstore.format.digest import codec_digest
    with vecstore.open(path) as store:
        assert codec_digest(store.tier("pq4").codec) == digest(json.dumps(json.loads(main_codec), sort_keys=True),
                                                               main_params)


def test_the_identity_of_a_file_without_store_id_is_derived_as_specified(tmp_path):
    import h5py
    import xxhash

    from vecstore.format import schema as fmt

    path = _store(tmp_path, codec=None)
    with h5py.File(path, "r+") as f:  # as written before store_id existed
        del f.attrs["store_id"]
        del f.attrs["store_xxh3_64"]  # (and its checksum, written since)
    names = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        h = xxhash.xxh3_128()
        for name in sorted(names):
            ds = f[name]
            h.update(f"{name}\0{ds.dtype.str}\0{ds.shape}\0{ds.attrs['xxh3_64']}\0".encode())
    header, file_map = fmt.open_store_file(path)
    file_map.close()
    assert fmt.store_identity(header) == h.hexdigest()
    with vecstore.open(path, mode="a") as store:  # and appending to such a file works
        store.add(_data(2, 3))
        assert os.path.exists(seg.manifest_path(path, h.hexdigest()))


def test_a_deleted_ids_file_that_is_a_link_loop_is_refused(tmp_path):
    path = _store(tmp_path, codec=None)
    with vecstore.open(path, mode="a") as store:
        store.delete([0])
        name = store._now().manifest.deleted_file
    target = os.path.join(seg.sidecar_dir(path), name)
    os.unlink(target)
    os.symlink(target, target)
    with pytest.raises(FormatError, match="cannot be read"):
        vecstore.open(path)
