"""Filtered search on a store: where= and allow= against brute force over the admitted rows, for
every tier kind and metric; segments, deletions and compaction; the fields in the file (format,
checksums, identity); shards (local backend); the CLI."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

import vecstore
from vecstore.cli import cli
from vecstore.errors import InvalidInputError
from vecstore.filters import strategy

N, DIM, K = 1200, 16, 10
METRICS = ("ip", "cosine", "l2")
TIERS = ("int8", "float16", "pq8", "pq8x4")
LANGS = ("en", "de", "fr")


def data(seed=1, n=N):
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


def docs(n=N, start=0):
    return [{"lang": LANGS[i % 3], "year": 1990 + i % 40, "tags": ["x"] if i % 4 == 0 else [],
             "ok": i % 2 == 0} for i in range(start, start + n)]


def admitted(meta, where):
    tests = {"lang = 'en'": lambda d: d["lang"] == "en",
             "lang = 'en' and year >= 2020": lambda d: d["lang"] == "en" and d["year"] >= 2020,
             "tags has 'x' and ok = true": lambda d: "x" in d["tags"] and d["ok"],
             "year = 1995": lambda d: d["year"] == 1995}
    return np.array([tests[where](d) for d in meta])


def brute(x, q, allowed, metric, k=K):
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    scores = -(((q[:, None, :] - x[None]) ** 2).sum(-1)) if metric == "l2" else q @ x.T
    rows = np.flatnonzero(allowed)
    order = np.argsort(-scores[:, rows], axis=1, kind="stable")[:, :k]
    out = np.full((q.shape[0], k), -1)
    out[:, :min(k, rows.shape[0])] = rows[order]
    return out


def recall(found, truth):
    return float(np.mean([len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum())
                          for a, b in zip(found, truth)]))


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("filtered")
    out = {}
    for metric in METRICS:
        path = str(root / f"{metric}.vs")
        vecstore.build(path, data(), metric=metric, metadata=docs(), fields=["lang", "year", "tags", "ok"],
                       progress=False).close()
        for codec in TIERS:
            vecstore.compress(path, codec, calibrate=False, progress=False, train_size=1200).close()
        out[metric] = path
    return out


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("tier", ("raw",) + TIERS)
@pytest.mark.parametrize("where", ["lang = 'en' and year >= 2020", "tags has 'x' and ok = true", "year = 1995"])
@pytest.mark.parametrize("force", ["exact", "filtered"])
def test_filtered_search_matches_brute_force(stores, metric, tier, where, force, monkeypatch):
    monkeypatch.setattr(strategy, "EXACT_RATIO", 1e30 if force == "exact" else 0.0)
    q = np.random.default_rng(5).standard_normal((7, DIM)).astype(np.float32)
    allowed = admitted(docs(), where)
    truth = brute(data(), q, allowed, metric)
    with vecstore.open(stores[metric]) as store:
        options = {} if tier == "raw" else {"tier": tier, "rescore": "raw", "oversample": 8}
        result = store.search(q, K, where=where, **options)
        assert np.isin(result.ids[result.ids >= 0], np.flatnonzero(allowed)).all()
        assert ((result.ids >= 0).sum(axis=1) == min(K, allowed.sum())).all()
        if tier == "raw" or force == "exact":
            np.testing.assert_array_equal(result.ids, truth)
        else:
            assert recall(result.ids, truth) >= 0.9
        expected = "filtered-scan" if tier == "raw" else ("exact" if force == "exact" or allowed.sum() <= K
                                                         else "filtered-two-stage")
        assert result.strategy == expected
        same = store.search(q, K, allow=np.flatnonzero(allowed), **options)
        np.testing.assert_array_equal(same.ids, result.ids)
        mask = store.search(q, K, allow=allowed, **options)
        np.testing.assert_array_equal(mask.ids, result.ids)


def test_fewer_than_k_are_padded_and_none_is_empty(stores):
    q = data(9, 2)
    with vecstore.open(stores["l2"]) as store:
        few = store.search(q, K, allow=[3, 5, 999999])
        assert few.allowed == 2 and (few.ids[:, 2:] == -1).all() and np.isinf(few.distances[:, 2:]).all()
        assert sorted(few.ids[0, :2]) == [3, 5]
        none = store.search(q, K, where="lang = 'zz'")
        assert none.strategy == "none" and (none.ids == -1).all()
        text = store.search(q, K, where="lang = 'en'", allow=[0, 1, 2, 3])
        assert set(text.ids[0][text.ids[0] >= 0]) == {0, 3}


@pytest.mark.parametrize("kind", ["rows", "reversed", "sparse"])
def test_allow_ids_find_their_rows_whatever_the_ids(tmp_path, kind):
    """allow= ids reach rows through StoreFile.rows_of: ids that are the row numbers (looked up
    directly), a permutation of them (row 0 holds id n - 1), and arbitrary ids; repeats, unknown,
    negative and out-of-range ids are ignored."""
    n = 300
    ids = {"rows": np.arange(n), "reversed": np.arange(n)[::-1], "sparse": np.arange(n) * 7 + 3}[kind]
    x = data(5, n)
    path = str(tmp_path / "ids.vs")
    vecstore.build(path, x, ids=ids, metric="ip", progress=False).close()
    wanted = [int(ids[10]), int(ids[250]), int(ids[10]), -1, 10**12, int(ids.max()) + 1]
    with vecstore.open(path) as store:
        np.testing.assert_array_equal(store._now().base.rows_of(wanted), [10, 250, 10, -1, -1, -1])
        result = store.search(x[[10, 250]], K, tier="raw", allow=wanted)
        assert result.allowed == 2
        assert result.ids[0, 0] == ids[10] and result.ids[1, 0] == ids[250]
        assert set(result.ids[0, :2]) == {ids[10], ids[250]} and (result.ids[:, 2:] == -1).all()


def test_errors(stores, tmp_path):
    with vecstore.open(stores["ip"]) as store:
        with pytest.raises(InvalidInputError, match="unknown field 'lnag'.*lang \\(string\\)"):
            store.search(data(3, 1), K, where="lnag = 'en'")
        with pytest.raises(InvalidInputError, match="position 5"):
            store.search(data(3, 1), K, where="lang 'en'")
        with pytest.raises(InvalidInputError, match="one entry per live document"):
            store.search(data(3, 1), K, allow=np.ones(3, bool))
    plain = str(tmp_path / "plain.vs")
    vecstore.build(plain, data(), metadata=docs(), progress=False).close()
    with vecstore.open(plain) as store, pytest.raises(InvalidInputError, match="vecstore.add_fields"):
        store.search(data(3, 1), K, where="lang = 'en'")
    with vecstore.add_fields(plain, "lang,year") as store:
        assert store.fields == {"lang": "string", "year": "int"}
        assert store.search(data(3, 1), K, where="lang = 'en'").ids.shape == (1, K)
    with pytest.raises(InvalidInputError, match="document 1 \\(id 1\\), field 'v'"):
        vecstore.build(str(tmp_path / "bad.vs"), data(n=2), metadata=[{"v": 1}, {"v": "a"}], fields=["v"])
    with pytest.raises(InvalidInputError, match="give metadata"):
        vecstore.build(str(tmp_path / "bad.vs"), data(n=2), fields=["v"])


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_segments_deletions_and_compaction(tmp_path, metric):
    path = str(tmp_path / "s.vs")
    x, extra = data(1), data(2, 300)
    meta, extra_meta = docs(), docs(300, start=N)
    vecstore.build(path, x, metric=metric, metadata=meta, fields=["lang", "year", "tags", "ok"], progress=False).close()
    vecstore.compress(path, "pq8", calibrate=False, progress=False).close()
    q = data(4, 6)
    where = "lang = 'en' and year >= 2020"
    with vecstore.open(path, mode="a") as store:
        store.add(extra, metadata=extra_meta)
        dead = list(range(0, 1500, 7))
        store.delete(dead)
        everything = np.concatenate([x, extra])
        allowed = admitted(meta + extra_meta, where)
        allowed[dead] = False
        truth = brute(everything, q, allowed, metric)
        result = store.search(q, K, where=where)
        np.testing.assert_array_equal(result.ids, truth)
        assert len(result.strategies) == 2 and result.allowed == allowed.sum()
        two = store.search(q, K, where=where, tier="pq8", rescore="raw", oversample=10)
        assert np.isin(two.ids, np.flatnonzero(allowed)).all() and recall(two.ids, truth) >= 0.9
        live = np.setdiff1d(np.arange(1500), dead)
        by_mask = store.search(q, K, allow=np.isin(store.ids, np.flatnonzero(allowed)))
        np.testing.assert_array_equal(by_mask.ids, truth)
        assert store.ids.shape == live.shape
        store.compact()
        assert store.fields == {"lang": "string", "year": "int", "tags": "tags", "ok": "bool"}
        np.testing.assert_array_equal(store.search(q, K, where=where).ids, truth)
        np.testing.assert_array_equal(store.search(q, K, where="tags has 'x' and ok = true").ids,
                                      brute(everything, q, admitted(meta + extra_meta, "tags has 'x' and ok = true")
                                            & np.isin(np.arange(1500), live), metric))
    assert all(c.ok for c in vecstore.verify(path, raise_on_error=False))


def test_append_without_metadata_has_missing_values(tmp_path):
    path = str(tmp_path / "s.vs")
    vecstore.build(path, data(), metadata=docs(), fields=["lang"], progress=False).close()
    with vecstore.open(path, mode="a") as store:
        ids = store.add(data(3, 5))
        result = store.search(data(3, 5), K, where="not lang = 'en'")
        assert set(ids) <= set(result.ids.ravel()) or result.allowed == N - N // 3 + 5
        assert not np.isin(ids, store.search(data(3, 5), 50, where="lang != 'en'").ids).any()
        with pytest.raises(InvalidInputError, match="fields are lang"):
            store.add(data(3, 1), metadata=[{"x": 1}], fields=["x"])


def test_fields_in_the_file(stores):
    path = stores["ip"]
    with h5py.File(path, "r") as f:
        assert f["fields/lang"].attrs["type"] == "string"
        assert f["fields/lang/codes"].dtype == np.dtype("<i4")
        assert [bytes(f["fields/lang/dictionary/data"][()]).decode()] == ["deenfr"]
        assert f["fields/year/values"].dtype == np.dtype("<i8") and f["fields/year/present"].dtype == np.dtype("u1")
        assert f["fields/tags/offsets"].shape == (N + 1,) and f["fields/ok/values"].dtype == np.dtype("u1")
        for name in ("fields/lang/codes", "fields/tags/dictionary/offsets", "fields/year/values"):
            assert f[name].attrs["xxh3_64"]
    checks = {c.name: c.ok for c in vecstore.verify(path, raise_on_error=False)}
    assert checks["fields/year/values"] and checks["fields/tags/codes"]
    with vecstore.open(path) as store:
        assert store.info()["fields"] == {"lang": "string", "ok": "bool", "tags": "tags", "year": "int"}


def test_search_text_takes_a_filter(tmp_path):
    from vecstore.encoders import WordVectorEncoder
    words = [f"w{i}" for i in range(30)]
    enc = WordVectorEncoder(words, np.random.default_rng(0).standard_normal((30, DIM)).astype(np.float32))
    texts = [f"w{i % 30} w{(i * 7) % 30}" for i in range(200)]
    store, _ = vecstore.build_text(str(tmp_path / "t.vs"), texts, enc, progress=False)
    store.close()
    with vecstore.open(str(tmp_path / "t.vs")) as store:
        allowed = list(range(0, 200, 3))
        result = store.search_text("w1 w2", K, allow=allowed)
        assert np.isin(result.ids, allowed).all()


def test_shards_evaluate_the_same_filter(tmp_path):
    x = data(1)
    meta = docs()
    manifest = vecstore.shard_build(x, str(tmp_path / "c"), shards=3, codecs=["pq4"], metadata=meta,
                                    fields=["lang", "year"], progress=False, calibrate=False)
    q = data(6, 4)
    where = "lang = 'en' and year >= 2020"
    truth = brute(x, q, admitted(meta, where), "ip")
    with vecstore.open_sharded(manifest.path) as coll:
        result = coll.search(q, K, where=where, tier="raw")
        np.testing.assert_array_equal(result.ids, truth)
        assert result.strategies == ("filtered-scan",) * 3 and result.strategy == "filtered-scan"
        assert result.allowed == admitted(meta, where).sum()
        np.testing.assert_array_equal(coll.search(q, K, allow=admitted(meta, where), tier="raw").ids, truth)
        assert coll.search(q, K, tier="raw").strategy is None                      # unfiltered
        # ids 0..399 are shard 0's: shard 0 searches exactly (few rows), the others admit none
        few = coll.search(q, K, allow=[1, 2, 3], tier="pq4", rescore="raw", oversample=4)
        assert few.strategies == ("exact", "none", "none") and few.strategy == "exact" and few.allowed == 3
        two = coll.search(q, K, where="year >= 1990", tier="pq4", rescore="raw", oversample=4)
        assert two.strategies == ("filtered-two-stage",) * 3 and two.allowed == N
        with pytest.raises(InvalidInputError, match="position"):
            coll.search(q, K, where="lang =")


def _cli_built(tmp_path, fields: str):
    """(vectors, store path, runner): a store built by `vecstore build` with docs() as metadata."""
    x = data(1)
    np.save(tmp_path / "x.npy", x)
    with open(tmp_path / "meta.jsonl", "w") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in docs())
    store = str(tmp_path / "s.vs")
    runner = CliRunner()
    out = runner.invoke(cli, ["build", str(tmp_path / "x.npy"), store, "--metadata", str(tmp_path / "meta.jsonl"),
                              "--fields", fields, "--quiet"])
    assert out.exit_code == 0, out.output
    return x, store, runner


def test_cli(tmp_path):
    x, store, runner = _cli_built(tmp_path, "lang,year")
    out = runner.invoke(cli, ["info", store])
    assert "fields     lang (string), year (int)" in out.output
    vector = ",".join(str(v) for v in x[5])
    out = runner.invoke(cli, ["search", store, "--vector", vector, "--where", "lang = 'fr' and year < 2000", "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    ids = doc["results"][0]["ids"]
    assert doc["strategy"] == "filtered-scan" and ids[0] == 5
    assert all(docs()[i]["lang"] == "fr" and docs()[i]["year"] < 2000 for i in ids)
    out = runner.invoke(cli, ["search", store, "--vector", vector, "--where", "lang = "])
    assert out.exit_code != 0 and "position 7" in out.output
    out = runner.invoke(cli, ["add-fields", store, "year", "--replace"])
    assert out.exit_code == 0 and "year (int)" in out.output, out.output


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("fast_scan", [True, False])
def test_filtered_candidates_of_a_4bit_tier_are_ranked_by_quantised_scores(stores, metric, fast_scan, monkeypatch):
    """docs/format.md, "Candidates of a 4-bit PQ tier": a filtered two-stage search ranks the
    admitted rows by the quantised score, as the unfiltered one does (with the fast scan and with
    the row-by-row kernel of a CPU without it), then rescores them."""
    from vecstore.codecs.pq import unpack_nibbles
    from vecstore.kernels import dispatch, fastscan

    if fast_scan and not dispatch.FAST_SCAN:
        pytest.skip("no fast scan on this CPU")
    monkeypatch.setattr(dispatch, "FAST_SCAN", fast_scan)
    monkeypatch.setattr(strategy, "EXACT_RATIO", 0.0)
    q = np.random.default_rng(8).standard_normal((3, DIM)).astype(np.float32)
    allowed = admitted(docs(), "lang = 'en'")
    k, f = K, 4.0
    width = int(np.ceil(k * f))
    with vecstore.open(stores[metric]) as store:
        tier = store.tiers["pq8x4"]
        prepared = q / np.linalg.norm(q, axis=1, keepdims=True) if metric == "cosine" else q
        folded, _, bias = tier.fold(prepared)
        lut = tier.codec.terminal.lookup_tables(folded)
        lut8, base, scale, _ = fastscan.quantize_tables(lut)
        m = lut.shape[1]
        table8 = lut8.reshape(q.shape[0], -1, fastscan.HALF // 16, 16)[:, :m, 0].astype(np.int64)
        codes = unpack_nibbles(np.asarray(tier.codes), m)
        sums = sum(table8[:, j, codes[:, j]] for j in range(m))
        approx = (base[:, None] + sums / scale[:, None]).astype(np.float32)
        if bias.shape[0]:
            approx = approx + bias
        rows = np.flatnonzero(allowed)
        want = rows[np.argsort(-approx[:, rows], axis=1, kind="stable")[:, :width]]
        _, got = tier.scan_allowed(prepared, width, allowed.view(np.uint8), candidates=True)
        for a, b, s in zip(got, want, approx):
            assert set(a) == set(b) or np.isclose(s[a].min(), s[b].min())   # ties at the cut: either row
        # oversample 1: the results are the k best admitted rows by quantised score, re-ranked
        result = store.search(q, k, tier="pq8x4", rescore="raw", oversample=1.0, where="lang = 'en'")
        assert result.strategy == "filtered-two-stage"
        ids = np.asarray(store.ids)
        for a, b, s in zip(result.ids, want[:, :k], approx):
            assert set(a) == set(ids[b]) or np.isclose(s[a].min(), s[b].min())


def test_cli_allow(tmp_path):
    """--allow takes ids separated by commas or a file of ids (one per line); ids not in the store
    are ignored, as allow= does; anything else is one line on stderr and a non-zero exit."""
    x, store, runner = _cli_built(tmp_path, "lang")
    vector = ",".join(str(v) for v in x[5])
    allowed = [3, 5, 8, 13, 21, 34]
    truth = brute(x, x[5:6], np.isin(np.arange(N), allowed), "ip", k=4)[0].tolist()

    out = runner.invoke(cli, ["search", store, "--vector", vector, "-k", "4", "--allow", "3,5,8,13,21,34,99999",
                              "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.output)
    assert doc["results"][0]["ids"] == truth and doc["allowed"] == 6 and doc["allow_ids"] == 7
    assert doc["strategy"] == "filtered-scan"

    ids_file = tmp_path / "ids.txt"
    ids_file.write_text("3\n5\n\n8\n13, 21\n34\n99999\n")
    out = runner.invoke(cli, ["search", store, "--vector", vector, "-k", "4", "--allow", str(ids_file), "--json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["results"][0]["ids"] == truth

    out = runner.invoke(cli, ["search", store, "--vector", vector, "-k", "4", "--allow", str(ids_file),
                              "--where", "lang = 'de'"])            # 13 and 34 are 'de' (i % 3 == 1)
    assert out.exit_code == 0, out.output
    assert "filter \"lang = 'de'\" and 7 allowed ids admits 2 documents" in out.output
    rows = [line.split() for line in out.output.splitlines() if line.strip()[:1].isdigit()]
    assert sorted(int(r[1]) for r in rows) == [13, 34]

    out = runner.invoke(cli, ["search", store, "--vector", vector, "--allow", "7"])   # one id
    assert out.exit_code == 0 and "admits 1 documents" in out.output, out.output

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    out = runner.invoke(cli, ["search", store, "--vector", vector, "--allow", str(empty), "--json"])
    assert out.exit_code == 0 and json.loads(out.output)["strategy"] == "none"

    bad_file = tmp_path / "bad.txt"
    bad_file.write_text("3\n5\nfive\n")
    for value, message in [("3,x,5", "is neither ids separated by commas"),
                           ("no-such-file.txt", "is neither ids separated by commas"),
                           (str(bad_file), "line 3: 'five' is not an id"),
                           ("1,99999999999999999999", "does not fit in int64"),
                           (str(tmp_path), "cannot read the file of ids")]:
        out = runner.invoke(cli, ["search", store, "--vector", vector, "--allow", value])
        assert out.exit_code != 0, (value, out.output)
        lines = [line for line in out.output.splitlines() if line.strip()]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.output, (value, out.output)
