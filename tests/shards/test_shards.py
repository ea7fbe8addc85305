"""Sharded collections without a cluster: build, the manifest and its refusals, search from a thread pool."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

import vecstore
from test_shards_helpers import (
    CODECS,
    DIM,
    K,
    N,
    assert_same_results,
    build_collection,
    edit_manifest,
    make_data,
    recall,
    shard_files,
    single_like,
)
from vecstore.format.digest import codec_digest
from vecstore.errors import (
    ClosedStoreError,
    FormatError,
    InvalidInputError,
    StoreNotFoundError,
    UnknownTierError,
    UnsupportedVersionError,
)
from vecstore.ingest import VectorSource
from vecstore.shards import ShardUnavailableError, open_sharded, read_manifest, shard_build
from vecstore.shards.build import training_sample
from vecstore.shards.worker import slice_source
from vecstore.shards.manifest import params_digest

METRICS = ["ip", "cosine", "l2"]


def listing(directory) -> list[str]:
    """The directory's files, without the hidden lock files vecstore's writers leave beside a store."""
    return sorted(f for f in os.listdir(directory) if not (f.startswith(".") and f.endswith(".lock")))


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def built(tmp_path_factory, data):
    """Per metric: (manifest, single store of the same documents with the same parameters)."""
    x, _ = data
    out = {}
    for metric in METRICS:
        root = tmp_path_factory.mktemp(f"shards-{metric}")
        manifest = build_collection(x, str(root / "col"), metric=metric)
        out[metric] = (manifest, single_like(manifest, x, str(root / "single.vs")))
    yield out
    for _, single in out.values():
        single.close()


@pytest.fixture
def copy_of(built, tmp_path):
    """A private copy of the ip collection that a test may damage."""
    manifest, _ = built["ip"]
    target = tmp_path / "col"
    shutil.copytree(manifest.directory, target)
    return read_manifest(str(target))


# -- building ---------------------------------------------------------------------------------


def test_each_shard_is_an_ordinary_store_with_the_shared_parameters(built, data):
    x, _ = data
    manifest, _ = built["ip"]
    assert [s.count for s in manifest.shards] == [500] * 4
    assert [(s.id_start, s.id_stop) for s in manifest.shards] == [(0, 500), (500, 1000), (1000, 1500), (1500, 2000)]
    digests = None
    for entry, path in zip(manifest.shards, shard_files(manifest)):
        with vecstore.open(path) as store:
            assert store.count == entry.count and store.dim == DIM and store.metric == "ip"
            np.testing.assert_array_equal(store.ids, np.arange(entry.id_start, entry.id_stop))
            np.testing.assert_array_equal(store.tier("raw").codes, x[entry.id_start:entry.id_stop])
            mine = {name: codec_digest(t.codec) for name, t in store.tiers.items()}
            assert set(mine) == {"raw", *CODECS}
            assert digests is None or mine == digests  # trained once: every shard has the same arrays
            digests = mine
            # calibration lives in the manifest, so every shard opened alone searches the same way
            assert all(t.calibration is None for t in store.tiers.values())
    assert {t.name: t.digest for t in manifest.tiers} == digests
    assert manifest.params_digest == params_digest(DIM, "ip", manifest.tiers)
    assert manifest.default_search["tier"] in CODECS and manifest.default_search["rescore"] == "raw"


def test_manifest_json_is_what_the_spec_lists(built):
    manifest, _ = built["l2"]
    with open(manifest.path) as fh:
        doc = json.load(fh)
    assert set(doc) == {"format", "version", "written_by", "dim", "metric", "count", "params_digest", "tiers",
                        "default_search", "training", "shards"}
    assert doc["format"] == "vecstore-shards" and doc["version"] == 1 and doc["metric"] == "l2"
    assert doc["count"] == N and sum(s["count"] for s in doc["shards"]) == N
    assert all(set(s) == {"file", "count", "id_start", "id_stop"} for s in doc["shards"])
    assert all(set(t) == {"name", "codec", "config", "digest", "calibration"} for t in doc["tiers"])
    # nothing but the manifest and the shards in the directory: the temporary file was renamed
    assert listing(manifest.directory) == sorted(["manifest.json", *[s["file"] for s in doc["shards"]]])


def test_a_path_and_an_array_give_the_same_parameters(tmp_path, data):
    x, _ = data
    np.save(tmp_path / "x.npy", x)
    a = build_collection(x, str(tmp_path / "a"), shards=3)
    b = build_collection(str(tmp_path / "x.npy"), str(tmp_path / "b"), shards=3)
    assert a.params_digest == b.params_digest
    assert [(s.count, s.id_start) for s in a.shards] == [(666, 0), (667, 666), (667, 1333)]


def test_a_shard_reads_only_its_rows_and_the_sample_is_bounded():
    x = np.arange(10_000 * 4, dtype=np.float32).reshape(10_000, 4)
    calls = []

    def reader(a, b):
        calls.append((a, b))
        return x[a:b]

    source = VectorSource("counted", x.shape, x.dtype, reader)
    part = slice_source(source, 3000, 4000)
    rows = np.concatenate([r for _, r in part.chunks(chunk_rows=300)])
    np.testing.assert_array_equal(rows, x[3000:4000])
    assert calls and all(3000 <= a < b <= 4000 for a, b in calls)
    calls.clear()
    sample = training_sample(source, 50, seed=0, metric="ip")
    assert sample.shape == (50, 4)
    assert sum(b - a for a, b in calls) <= 50 * 65  # nearby rows share a read; far ones do not
    assert set(map(tuple, sample.tolist())) <= set(map(tuple, x.tolist()))


def test_build_refuses_bad_requests(tmp_path, data):
    x, _ = data
    with pytest.raises(InvalidInputError, match="shards must be an integer from 1 to 2000"):
        shard_build(x, str(tmp_path / "a"), shards=0)
    with pytest.raises(InvalidInputError, match="shards must be"):
        shard_build(x[:3], str(tmp_path / "a"), shards=4)
    with pytest.raises(InvalidInputError, match="with a Dask client, give the input as a path"):
        shard_build(x, str(tmp_path / "a"), shards=2, client=object())
    with pytest.raises(InvalidInputError, match="given twice"):
        shard_build(x, str(tmp_path / "a"), shards=2, codecs=["pq8", "pq8"])
    with pytest.raises(InvalidInputError, match="metric"):
        shard_build(x, str(tmp_path / "a"), shards=2, metric="hamming")
    assert not os.path.exists(tmp_path / "a" / "manifest.json")


def test_rebuild_needs_overwrite_and_a_failed_build_leaves_the_old_collection(tmp_path, data):
    x, q = data
    first = build_collection(x, str(tmp_path / "col"), shards=2, codecs=[])
    with pytest.raises(InvalidInputError, match="already holds a sharded collection"):
        build_collection(x, str(tmp_path / "col"), shards=2, codecs=[])
    bad = x.copy()
    bad[1700, 3] = np.nan
    with pytest.raises(InvalidInputError, match=r"\[1000:2000\]: row 700 contains NaN"):
        build_collection(bad, str(tmp_path / "col"), shards=2, codecs=[], overwrite=True, calibrate=False)
    assert listing(tmp_path / "col") == sorted(["manifest.json", *[s.file for s in first.shards]])
    second = build_collection(x, str(tmp_path / "col"), shards=3, codecs=[], overwrite=True)
    assert listing(tmp_path / "col") == sorted(["manifest.json", *[s.file for s in second.shards]])
    with open_sharded(str(tmp_path / "col")) as store:
        assert len(store.shards) == 3 and store.count == N
        assert store.search(q[:1], 1).ids[0, 0] >= 0


def test_keys_follow_their_documents(tmp_path, data):
    x, q = data
    keys = [f"doc-{i}" for i in range(N)]
    build_collection(x, str(tmp_path / "col"), shards=3, codecs=[], keys=keys)
    with open_sharded(str(tmp_path / "col")) as store:
        result = store.search(q[:3], 5)
        assert store.keys(result.ids) == [[f"doc-{i}" for i in row] for row in result.ids.tolist()]
        assert store.keys([0, 1999, -1]) == ["doc-0", "doc-1999", None]
        with pytest.raises(InvalidInputError, match="id 2000 is not in this collection"):
            store.keys([2000])


# -- search equals one store ---------------------------------------------------------------------


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("tier", ["raw", "pq8", "int8"])
def test_exact_and_coarse_plans_equal_one_store(built, data, metric, tier):
    _, q = data
    manifest, single = built[metric]
    with open_sharded(manifest.path) as store:
        got = store.search(q, K, tier=tier)
        assert got.missing_shards == ()
        assert_same_results(got, single.search(q, K, tier=tier))
        # one query, and the scan path of small batches
        assert_same_results(store.search(q[3], K, tier=tier), single.search(q[3], K, tier=tier))


@pytest.mark.parametrize("metric", METRICS)
def test_two_stage_is_at_least_as_good_and_equal_when_candidates_cover_all(built, data, metric):
    _, q = data
    manifest, single = built[metric]
    truth = single.search(q, K, tier="raw").ids
    with open_sharded(manifest.path) as store:
        for oversample in (1, 2):
            sharded = store.search(q, K, tier="pq8", rescore="raw", oversample=oversample)
            one = single.search(q, K, tier="pq8", rescore="raw", oversample=oversample)
            assert recall(sharded.ids, truth) >= recall(one.ids, truth)
        assert recall(store.search(q, K, tier="pq8", rescore="raw", oversample=1).ids, truth) < 1.0  # not trivial
        cover = N / K  # each shard takes all its documents as candidates
        assert_same_results(store.search(q, K, tier="pq8", rescore="raw", oversample=cover),
                            single.search(q, K, tier="raw"))


def test_default_plan_comes_from_the_manifest(built, data):
    _, q = data
    manifest, _ = built["ip"]
    plan = manifest.default_search
    with open_sharded(manifest.path) as store:
        assert store.default_plan() == (plan["tier"], "raw", plan["oversample"])
        assert_same_results(store.search(q, K), store.search(q, K, tier=plan["tier"], rescore="raw",
                                                             oversample=plan["oversample"]))
        assert store.resolve_plan("pq8", "raw") == ("pq8", "raw", float(manifest.tier("pq8").calibration["oversample"]))
        with pytest.raises(InvalidInputError, match="cannot rescore its own candidates"):  # as one store: raw cannot rescore raw
            store.resolve_plan(oversample=3)


def test_k_beyond_the_collection_pads_like_one_store(built, data):
    _, q = data
    manifest, single = built["l2"]
    with open_sharded(manifest.path) as store:
        got = store.search(q[:2], N + 5, tier="raw")
    want = single.search(q[:2], N + 5, tier="raw")
    assert (got.ids[:, N:] == -1).all() and np.isinf(got.distances[:, N:]).all()
    assert_same_results(got, want)


def test_queries_and_options_are_validated_before_any_shard(built):
    manifest, _ = built["ip"]
    with open_sharded(manifest.path) as store:
        bad = np.zeros((2, DIM), dtype=np.float32)
        bad[1, 0] = np.nan
        with pytest.raises(InvalidInputError, match="row 1 contains NaN"):
            store.search(bad, K)
        with pytest.raises(InvalidInputError, match="dimension 5"):
            store.search(np.ones(5), K)
        with pytest.raises(InvalidInputError, match="k must be >= 1"):
            store.search(np.ones(DIM), 0)
        with pytest.raises(UnknownTierError, match="no tier 'pq99'"):
            store.search(np.ones(DIM), K, tier="pq99")
        with pytest.raises(InvalidInputError, match="oversample must be a number >= 1"):
            store.search(np.ones(DIM), K, tier="pq8", oversample=0.5)
        with pytest.raises(InvalidInputError, match="cannot rescore its own candidates"):
            store.search(np.ones(DIM), K, tier="raw", rescore="raw")
        with pytest.raises(InvalidInputError, match="cannot rescore"):
            store.search(np.ones(DIM), K, tier="int8", rescore="pq8")
    with pytest.raises(UnknownTierError, match="no tier 'float16'"):
        open_sharded(manifest.path, resident=["float16"])


def test_closed_store_and_repr(built):
    manifest, _ = built["ip"]
    store = open_sharded(manifest.directory, resident=["pq8"])
    assert "shards=4" in repr(store) and "backend='local'" in repr(store)
    info = store.info()
    assert info["count"] == N and len(info["shards"]) == 4 and info["params_digest"] == manifest.params_digest
    store.close()
    store.close()
    assert repr(store).startswith("<closed vecstore.ShardedStore")
    with pytest.raises(ClosedStoreError):
        store.search(np.ones(DIM), K)


def test_a_shard_that_fails_is_named_unless_partial_results_are_allowed(copy_of, data):
    x, q = data
    with open_sharded(copy_of.path) as store:
        store._backend.stores[2].close()  # as if its file became unreadable after open
        with pytest.raises(ShardUnavailableError, match=copy_of.shards[2].file) as info:
            store.search(q, K, tier="raw")
        assert info.value.shards == (copy_of.shards[2].file,)
        got = store.search(q, K, tier="raw", allow_partial=True)
    assert got.missing_shards == (copy_of.shards[2].file,)
    keep = np.r_[0:1000, 1500:2000]
    assert not np.isin(got.ids, np.arange(1000, 1500)).any()
    with single_like(copy_of, x, os.path.join(copy_of.directory, "..", "rest.vs"), rows=keep) as rest:
        assert_same_results(got, rest.search(q, K, tier="raw"))


# -- what readers must refuse --------------------------------------------------------------------


def test_missing_shard_file_is_named(copy_of):
    os.unlink(shard_files(copy_of)[1])
    with pytest.raises(StoreNotFoundError, match=f"shard 1 \\({copy_of.shards[1].file}\\).*missing"):
        open_sharded(copy_of.path)


def test_damaged_shard_file_is_named(copy_of):
    path = shard_files(copy_of)[3]
    with open(path, "r+b") as fh:
        fh.write(b"not hdf5 at all")
    with pytest.raises(FormatError, match=f"shard 3 \\({copy_of.shards[3].file}\\)"):
        open_sharded(copy_of.path)


def test_manifest_that_lies_about_counts_is_refused(copy_of):
    def shift(doc):  # internally consistent, but not what the files hold
        doc["shards"][0]["count"] -= 1
        doc["shards"][0]["id_stop"] -= 1
        doc["shards"][1]["count"] += 1
        doc["shards"][1]["id_start"] -= 1
    edit_manifest(copy_of.path, shift)
    with pytest.raises(FormatError, match="holds 500 documents, the manifest says 499"):
        open_sharded(copy_of.path)


def test_manifest_that_swaps_shards_is_refused(copy_of):
    def swap(doc):
        doc["shards"][0]["file"], doc["shards"][1]["file"] = doc["shards"][1]["file"], doc["shards"][0]["file"]
    edit_manifest(copy_of.path, swap)
    with pytest.raises(FormatError, match="holds ids 500 .. 999, the manifest says 0 .. 499"):
        open_sharded(copy_of.path)


def test_manifest_with_forged_digests_is_refused(copy_of):
    def forge(doc):
        doc["tiers"][1]["digest"] = "0" * 16
    edit_manifest(copy_of.path, forge)
    with pytest.raises(FormatError, match="params_digest .* does not match"):
        open_sharded(copy_of.path)

    def forge_both(doc):  # a careful forger recomputes the summary: the shards still disagree
        tiers = [vecstore.shards.TierEntry(t["name"], t["codec"], t["config"], t["digest"]) for t in doc["tiers"]]
        doc["params_digest"] = params_digest(doc["dim"], doc["metric"], tiers)
    edit_manifest(copy_of.path, forge_both)
    with pytest.raises(FormatError, match="encoded with other parameters"):
        open_sharded(copy_of.path)


def test_shard_from_another_training_is_refused(copy_of, tmp_path, data):
    x, _ = data
    other = build_collection(x, str(tmp_path / "other"), seed=5, calibrate=False)
    assert other.params_digest != copy_of.params_digest
    shutil.copyfile(shard_files(other)[1], shard_files(copy_of)[1])
    with pytest.raises(FormatError, match=f"{copy_of.shards[1].file}.*encoded with other parameters"):
        open_sharded(copy_of.path)


@pytest.mark.parametrize("what", ["dim", "metric"])
def test_shard_of_another_dim_or_metric_is_refused(copy_of, tmp_path, data, what):
    x, _ = data
    rows = x[500:1000, :16] if what == "dim" else x[500:1000]
    metric = "l2" if what == "metric" else "ip"
    vecstore.build(shard_files(copy_of)[1], rows, metric=metric, ids=np.arange(500, 1000), overwrite=True,
                   progress=False).close()
    expected = "16-dim ip vectors" if what == "dim" else "32-dim l2 vectors"
    with pytest.raises(FormatError, match=f"shard 1 .*{expected}, the manifest says 32-dim ip"):
        open_sharded(copy_of.path)


@pytest.mark.parametrize("change, error, message", [
    (lambda d: d.update(version=2), UnsupportedVersionError, "version 2; this vecstore reads up to 1"),
    (lambda d: d.update(version="1"), FormatError, "version"),
    (lambda d: d.update(format="something"), FormatError, "not a vecstore shard manifest"),
    (lambda d: d.update(metric="hamming"), FormatError, "metric 'hamming'"),
    (lambda d: d.update(count=1999), FormatError, "not the sum of the shards' counts"),
    (lambda d: d["shards"][2].update(file="../escape.vs"), FormatError, "plain file name"),
    (lambda d: d["shards"][2].update(file=d["shards"][1]["file"]), FormatError, "listed twice"),
    (lambda d: d["shards"][2].update(id_start=1001, id_stop=1501), FormatError, "contiguous"),
    (lambda d: d["shards"][2].update(count=0), FormatError, "count"),
    (lambda d: d["tiers"][1]["config"]["stages"][0].update(id="zstd"), FormatError, "invalid codec config"),
    (lambda d: d.update(default_search={"tier": "pq8", "rescore": "raw", "oversample": -1}), FormatError,
     "oversample"),
    (lambda d: d.update(tiers=[t for t in d["tiers"] if t["name"] != "raw"]), FormatError, "no 'raw' tier"),
])
def test_malformed_manifest_is_refused_before_any_shard_opens(copy_of, change, error, message):
    for path in shard_files(copy_of):  # a shard that cannot open would fail first if shards were opened first
        os.unlink(path)
    edit_manifest(copy_of.path, change)
    with pytest.raises(error, match=message):
        open_sharded(copy_of.path)


def test_manifest_that_is_not_json_or_missing(copy_of, tmp_path):
    with open(copy_of.path, "w") as fh:
        fh.write("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        open_sharded(copy_of.path)
    with pytest.raises(StoreNotFoundError, match="shard manifest .* does not exist"):
        open_sharded(str(tmp_path / "nowhere"))
