"""Inverted-file tiers (issue 19): lists in the file, nprobe search, calibration of (nprobe,
oversample), and how they compose with rescoring, filters, appends, deletions and compaction."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import vecstore
from vecstore.cli import cli
from vecstore.codecs import get_codec
from vecstore.errors import FormatError, InvalidInputError, UnknownCodecError
from vecstore.store import quality

NLIST = 16


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(19)
    centers = rng.standard_normal((30, 32)).astype(np.float32)
    x = (centers[rng.integers(0, 30, 3000)] + 0.4 * rng.standard_normal((3000, 32))).astype(np.float32)
    xq = (centers[rng.integers(0, 30, 40)] + 0.4 * rng.standard_normal((40, 32))).astype(np.float32)
    return x, xq


@pytest.fixture(scope="module", params=["ip", "l2"])
def store_path(request, tmp_path_factory, data):
    """A store with flat tiers and their inverted-file twins (same seed: same codebooks)."""
    x, _ = data
    path = tmp_path_factory.mktemp(request.param) / "s.vs"
    vecstore.build(path, x, metric=request.param, progress=False).close()
    for codec in ("pq8x4", f"ivf{NLIST},pq8x4", "pq8", f"ivf{NLIST},pq8", "int8", f"ivf{NLIST},int8"):
        vecstore.compress(path, codec, train_size=2000, progress=False).close()
    return path


def test_codec_strings():
    assert str(get_codec("ivf1024,pq32x4", 64)) == "ivf1024,pq32x4"
    assert str(get_codec("ivf8,pca16,int8", 64)) == "ivf8,pca16,int8"
    assert str(get_codec("ivf8", 64)) == "ivf8"  # lists of float32 vectors
    with pytest.raises(InvalidInputError, match="put it first"):
        get_codec("pca16,ivf8,pq8", 64)
    with pytest.raises(InvalidInputError, match="nlist >= 1"):
        get_codec("ivf0,pq8", 64)
    with pytest.raises(UnknownCodecError, match="ivf<nlist>"):
        get_codec("ivfx,pq8", 64)


@pytest.mark.parametrize("flat", ["pq8x4", "pq8", "int8"])
def test_every_list_probed_answers_as_the_flat_tier(store_path, data, flat):
    _, xq = data
    with vecstore.open(store_path) as store:
        ivf = f"ivf{NLIST},{flat}"
        # the lists hold the flat tier's codes (the ivf stage passes vectors through unchanged)
        order = store.tier(ivf).lists.rows
        assert np.array_equal(np.asarray(store.tier(ivf).codes), np.asarray(store.tier(flat).codes)[order])
        want = store.search(xq, 10, tier=flat)
        got = store.search(xq, 10, tier=ivf, nprobe=NLIST)
        np.testing.assert_allclose(got.distances, want.distances, rtol=1e-5, atol=1e-5)
        _assert_ids_differ_only_in_ties(got, want)  # ties go to the lower position, not the lower row
        one = store.search(xq[:1], 10, tier=ivf, nprobe=NLIST)
        np.testing.assert_array_equal(one.ids, got.ids[:1])


def _assert_ids_differ_only_in_ties(got, want, tol: float = 1e-5) -> None:
    for q, r in zip(*np.nonzero(got.ids != want.ids)):
        tied = np.abs(want.distances[q] - want.distances[q, r]) <= tol
        assert tied.sum() > 1 or r == want.ids.shape[1] - 1, (q, r)
        last = np.abs(want.distances[q] - want.distances[q, -1]) <= tol  # a tie may run past k
        assert got.ids[q, r] in set(want.ids[q][tied].tolist()) or last[r], (q, r)


def test_fewer_lists_scan_fewer_rows_and_recall_grows_with_nprobe(store_path, data):
    _, xq = data
    with vecstore.open(store_path) as store:
        exact = store.search(xq, 10, tier="raw").ids
        recalls = []
        for nprobe in (1, 4, NLIST):
            ids = store.search(xq, 10, tier=f"ivf{NLIST},int8", rescore="raw", oversample=2, nprobe=nprobe).ids
            recalls.append(np.mean([len(set(a) & set(b)) for a, b in zip(ids, exact)]) / 10)
        assert recalls == sorted(recalls)  # (well-separated clusters: one list may already suffice)
        assert recalls[-1] > 0.97
        # one list: every result comes from that query's nearest list
        tier = store.tier(f"ivf{NLIST},int8")
        ranges = tier.probe(xq[:1], 1)
        listed = set(np.asarray(tier.lists.rows)[ranges[0, 0, 0]:ranges[0, 0, 1]].tolist())
        ids = store.search(xq[:1], 10, tier=f"ivf{NLIST},int8", nprobe=1).ids[0]
        assert set(ids[ids >= 0].tolist()) <= {int(store.ids[r]) for r in listed}


def test_calibration_records_nprobe_and_the_default_search_uses_it(store_path, data):
    x, _ = data
    with vecstore.open(store_path) as store:
        cal = store.tier(f"ivf{NLIST},pq8x4").calibration
        assert 1 <= cal["nprobe"] <= NLIST and cal["meets_target"]
        # more stored documents than a flat tier's calibration searches: it compares close plans
        assert cal["queries"] == min(quality.IVF_CALIBRATION_QUERIES, store.count) > quality.CALIBRATION_QUERIES
        assert store.tier("pq8x4").calibration["queries"] == quality.CALIBRATION_QUERIES
        # the lists keep the recall of the flat tier they wrap (every list probed) at the same oversampling
        flat = cal["flat_recall_by_oversample"]
        at = str(min(cal["oversample"], max(int(f) for f in flat)))
        assert cal["recall_at_10"] >= max(cal["target_recall_at_10"], flat[at] - 0.005)
        tried = [r["nprobe"] for r in cal["nprobe_sweep"]]
        assert tried[0] == 1 and all(b == 2 * a or b == NLIST for a, b in zip(tried, tried[1:]))
        # of the plans meeting the target within 10% of the fastest, the fewest bytes a query
        meeting = [r for r in cal["nprobe_sweep"] if r["meets_target"]]
        # only plans that can be chosen are timed
        assert all((r["latency_us"] is None) != r["meets_target"] for r in cal["nprobe_sweep"])
        fastest = min(r["latency_us"] for r in meeting)
        close = [r for r in meeting if r["latency_us"] <= fastest * (1 + quality.LATENCY_NOISE)]
        tier, fine = store.tier(f"ivf{NLIST},pq8x4"), store.tier(cal["rescore"])
        cost = {r["nprobe"]: quality.query_bytes(tier, fine, 10, r["oversample"], r["nprobe"]) for r in close}
        assert cost[cal["nprobe"]] == min(cost.values())
        assert store.tier(f"ivf{NLIST},pq8x4").default_nprobe == cal["nprobe"]
        # the lists' bytes are reported apart: 8 B a row mapped, plus the offsets
        memory = store.memory()["tiers"][f"ivf{NLIST},pq8x4"]
        assert memory["list_bytes"] == 8 * store.count + 8 * (NLIST + 1)
        assert store.memory()["tiers"]["pq8x4"]["list_bytes"] == 0
        plan = ("ivf16,pq8x4", "raw", None)
        default = store.search(x[:20], 10, tier=plan[0], rescore="raw")
        given = store.search(x[:20], 10, tier=plan[0], rescore="raw", oversample=cal["oversample"],
                             nprobe=cal["nprobe"])
        np.testing.assert_array_equal(default.ids, given.ids)
        report = vecstore.self_check(store)
        assert report["recall"] >= 0.9


def test_bad_nprobe_and_ivf_as_rescoring_tier_are_refused(store_path, data):
    _, xq = data
    with vecstore.open(store_path) as store:
        for bad in (0, NLIST + 1, 2.5, True):
            with pytest.raises(InvalidInputError, match="nprobe must be an integer from 1"):
                store.search(xq, 10, tier=f"ivf{NLIST},int8", nprobe=bad)
        with pytest.raises(InvalidInputError, match="nprobe applies to inverted-file tiers"):
            store.search(xq, 10, tier="int8", nprobe=4)
        with pytest.raises(InvalidInputError, match="cannot rescore"):
            store.search(xq, 10, tier=f"ivf{NLIST},pq8x4", rescore=f"ivf{NLIST},int8")


def test_more_lists_than_training_vectors_is_refused(tmp_path, data):
    x, _ = data
    path = tmp_path / "s.vs"
    vecstore.build(path, x[:100], progress=False).close()
    with pytest.raises(InvalidInputError, match="ivf256 needs at least 256 training vectors"):
        vecstore.compress(path, "ivf256,int8", progress=False)


def test_filters_inside_lists(tmp_path, data):
    x, xq = data
    path = tmp_path / "s.vs"
    meta = [{"part": i % 10} for i in range(x.shape[0])]
    vecstore.build(path, x, metadata=meta, fields="part", progress=False).close()
    vecstore.compress(path, f"ivf{NLIST},int8", train_size=2000, progress=False).close()
    with vecstore.open(path) as store:
        got = store.search(xq, 10, tier=f"ivf{NLIST},int8", rescore="raw", where="part = 3")
        assert ((got.ids % 10 == 3) | (got.ids < 0)).all() and (got.ids >= 0).all()
        exact = store.search(xq, 10, tier="raw", where="part = 3").ids
        recall = np.mean([len(set(a) & set(b)) for a, b in zip(got.ids, exact)]) / 10
        assert recall > 0.9
        # the scan with a mask, called directly: a filter admitting 10% probes ten times the lists
        tier = store.tier(f"ivf{NLIST},int8")
        allow = (np.arange(store.count) % 10 == 3).astype(np.uint8)
        _, rows = tier.scan_allowed(xq, 10, allow, nprobe=1)
        assert (rows >= 0).all() and (allow[rows] == 1).all()


def test_append_delete_and_compact_keep_the_lists(tmp_path, data):
    x, xq = data
    path = tmp_path / "s.vs"
    vecstore.build(path, x[:2500], metric="l2", progress=False).close()
    vecstore.compress(path, f"ivf{NLIST},pq8x4", train_size=2000, progress=False).close()
    new_ids = vecstore.append(path, x[2500:])
    vecstore.delete(path, np.arange(0, 100))
    with vecstore.open(path) as store:
        # an appended document is found through its segment's own lists (shared centroids)
        found = store.search(x[2600:2610], 1, tier=f"ivf{NLIST},pq8x4", rescore="raw", nprobe=NLIST).ids[:, 0]
        np.testing.assert_array_equal(found, new_ids[100:110])
        # every list probed, no rescoring: each part's exact top-k, merged = the global top-k
        before = store.search(xq, 10, tier=f"ivf{NLIST},pq8x4", nprobe=NLIST)
        assert not np.isin(before.ids, np.arange(100)).any()
        listed = _list_of_each_id(store, f"ivf{NLIST},pq8x4")
    vecstore.compact(path)
    with vecstore.open(path) as store:
        tier = store.tier(f"ivf{NLIST},pq8x4")
        assert tier.count == 2900 and tier.lists.offsets[-1] == 2900
        after = store.search(xq, 10, tier=f"ivf{NLIST},pq8x4", nprobe=NLIST)
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_allclose(after.distances, before.distances, rtol=1e-6)
        assert _list_of_each_id(store, f"ivf{NLIST},pq8x4") == listed  # nothing was re-assigned
    checks = vecstore.verify(path)  # the rewritten lists carry checksums like every dataset
    assert any(c.name.endswith("lists/rows") for c in checks)


def _list_of_each_id(store, name: str) -> dict[int, int]:
    out = {}
    view = store._now()
    for part, rows in zip(view.parts, (view.live_rows(i) for i in range(len(view.parts)))):
        tier = part.tier(name)
        lists = np.repeat(np.arange(tier.nlist), np.diff(tier.lists.offsets))
        live = set(range(part.count) if rows is None else rows.tolist())
        out.update({int(part.ids[r]): int(l) for r, l in zip(np.asarray(tier.lists.rows), lists) if int(r) in live})
    return out


def test_damaged_lists_are_refused(tmp_path, data):
    x, xq = data
    path = tmp_path / "s.vs"
    vecstore.build(path, x, progress=False).close()
    vecstore.compress(path, f"ivf{NLIST},int8", train_size=2000, calibrate=False, progress=False).close()
    bad = tmp_path / "offsets.vs"
    shutil.copy(path, bad)
    with h5py.File(bad, "r+") as f:
        f[f"tiers/ivf{NLIST},int8/lists/offsets"][3] = 10**9
    with pytest.raises(FormatError, match="lists/offsets"):
        vecstore.open(bad)
    bad = tmp_path / "rows.vs"
    shutil.copy(path, bad)
    with h5py.File(bad, "r+") as f:
        f[f"tiers/ivf{NLIST},int8/lists/rows"][5] = f[f"tiers/ivf{NLIST},int8/lists/rows"][6]
    with vecstore.open(bad) as store, pytest.raises(FormatError, match="lists/rows"):
        store.search(xq, 10, tier=f"ivf{NLIST},int8")


def test_params_export_holds_the_centroids(store_path, tmp_path):
    with vecstore.open(store_path) as store:
        tier = store.tier(f"ivf{NLIST},pq8x4")
        out = tmp_path / "p.json"
        vecstore.dump_params(tier.codec, str(out))
        loaded = vecstore.load_params(str(out))
        np.testing.assert_array_equal(loaded.params()["0.centroids"], tier.codec.params()["0.centroids"])
        assert loaded.params()["0.centroids"].shape == (NLIST, 32)


def test_cli_nprobe(store_path, data):
    _, xq = data
    vector = ",".join(f"{v:.6f}" for v in xq[0])
    runner = CliRunner()
    out = runner.invoke(cli, ["search", str(store_path), "--vector", vector, "--tier", f"ivf{NLIST},int8",
                              "--nprobe", "2"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(cli, ["search", str(store_path), "--vector", vector, "--tier", f"ivf{NLIST},int8",
                              "--nprobe", "99"])
    assert out.exit_code != 0 and "nprobe must be an integer from 1 to the tier's 16 lists" in out.output
    out = runner.invoke(cli, ["info", str(store_path)])
    assert out.exit_code == 0 and f"ivf{NLIST},pq8x4" in out.output


def test_format_version_two_only_with_an_ivf_tier(tmp_path, data):
    x, _ = data
    path = tmp_path / "s.vs"
    vecstore.build(path, x[:500], progress=False).close()
    vecstore.compress(path, "int8", calibrate=False, progress=False).close()
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 1  # version-1 readers still open it
    vecstore.compress(path, "ivf4,int8", train_size=500, calibrate=False, progress=False).close()
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 2
    with h5py.File(path, "r+") as f:
        f.attrs["format_version"] = np.int64(1)
    with pytest.raises(FormatError, match="format version 1 cannot hold an inverted-file tier"):
        vecstore.open(path)


def test_shards_share_the_centroids_and_search_as_one_store(tmp_path):
    from vecstore.shards import open_sharded, shard_build

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2400, 32)).astype(np.float32)
    q = rng.standard_normal((10, 32)).astype(np.float32)
    manifest = shard_build(x, str(tmp_path / "col"), shards=3, codecs=["ivf8,pq8x4"], metric="l2",
                           progress=False, train_size=1200)
    centroids = []
    for shard in manifest.shards:
        with vecstore.open(manifest.shard_path(shard)) as s:
            centroids.append(s.tier("ivf8,pq8x4").codec.params()["0.centroids"])
            assert s.tier("ivf8,pq8x4").lists.offsets[-1] == s.count
    assert all(np.array_equal(c, centroids[0]) for c in centroids)
    single = tmp_path / "one.vs"
    vecstore.build(single, x, metric="l2", progress=False).close()
    vecstore.compress(single, "ivf8,pq8x4", params={"0.centroids": centroids[0], **{
        k: v for k, v in _shard_params(manifest).items() if k != "0.centroids"}}, calibrate=False,
        progress=False).close()
    with open_sharded(manifest.path) as col, vecstore.open(single) as one:
        # every list probed, no rescoring: the shards' exact ADC top-k merged = one store's
        got = col.search(q, 10, tier="ivf8,pq8x4", rescore="raw", oversample=240, nprobe=8)
        want = one.search(q, 10, tier="raw")
        np.testing.assert_allclose(got.distances, want.distances, rtol=1e-5, atol=1e-5)
        got = col.search(q, 10, tier="ivf8,pq8x4", nprobe=8)  # every list: the tier's exact ADC ranking
        want = one.search(q, 10, tier="ivf8,pq8x4", nprobe=8)
        np.testing.assert_allclose(got.distances, want.distances, rtol=1e-5, atol=1e-5)
        with pytest.raises(InvalidInputError, match="nprobe must be an integer from 1 to the tier's 8 lists"):
            col.search(q, 10, tier="ivf8,pq8x4", nprobe=9)
        with pytest.raises(InvalidInputError, match="nprobe applies to inverted-file tiers"):
            col.search(q, 10, tier="raw", nprobe=2)


def _shard_params(manifest) -> dict:
    with vecstore.open(manifest.shard_path(manifest.shards[0])) as s:
        return s.tier("ivf8,pq8x4").codec.params()


def test_probed_lists_are_the_best_scores_ties_to_the_lower_list():
    from vecstore.kernels.dispatch import probe_lists

    offsets = np.array([0, 3, 3, 7, 9, 12], dtype=np.int64)  # list 1 is empty
    scores = np.array([[0.5, 0.9, 0.5, 0.5, 0.1],
                       [1.0, 2.0, 3.0, 4.0, 5.0]], dtype=np.float32)
    got = probe_lists(scores, 2, offsets)
    # query 0: list 1 (0.9), then the first of the tied 0.5s: list 0; in list order
    np.testing.assert_array_equal(got[0], [[0, 3], [3, 3]])
    np.testing.assert_array_equal(got[1], [[7, 9], [9, 12]])
    np.testing.assert_array_equal(probe_lists(scores, 5, offsets)[0, :, 0], offsets[:5])
    rng = np.random.default_rng(0)
    many = rng.integers(0, 4, (50, 40)).astype(np.float32)  # many ties
    want = np.sort(np.argsort(-many, axis=1, kind="stable")[:, :7], axis=1)
    offs = np.arange(41, dtype=np.int64)
    np.testing.assert_array_equal(probe_lists(many, 7, offs)[:, :, 0], want)
