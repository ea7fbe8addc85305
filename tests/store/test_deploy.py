"""Model provenance, re-deploying a new model version with `swap`, and codec drift checks."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

import vecstore
from vecstore.store.quality import check_drift, self_check
from vecstore.cli import cli
from vecstore.store.deploy import swap
from vecstore.errors import IntegrityError, InvalidInputError, ModelMismatchError, StoreNotFoundError
from vecstore.store.provenance import params_fingerprint, parse_model

N, DIM = 1200, 16
NEW_IDS = 1_000_000  # the new version's ids: a result mixing versions would show both ranges


def _data(seed, n=N, dim=DIM, shift=0.0):
    return (np.random.default_rng(seed).standard_normal((n, dim)) + shift).astype(np.float32)


# -- provenance --------------------------------------------------------------------------------


def test_build_records_the_model_and_search_refuses_another_version(tmp_path):
    params = {"w": np.arange(6.0).reshape(2, 3), "b": np.zeros(3)}
    with vecstore.build(str(tmp_path / "s.vs"), _data(1), model="doc-encoder@1.2", model_params=params,
                        progress=False) as store:
        assert store.model == {"name": "doc-encoder", "version": "1.2", "fingerprint": params_fingerprint(params)}
        assert store.info()["model"]["version"] == "1.2"
        store.search(_data(2, 3), 5, model="doc-encoder@1.2")
        with pytest.raises(ModelMismatchError, match="doc-encoder@2.0 but the store holds vectors of doc-encoder@1.2"):
            store.search(_data(2, 3), 5, model="doc-encoder@2.0")
        with pytest.raises(InvalidInputError, match="does not parse"):
            store.search(_data(2, 3), 5, model="doc-encoder 2")


def test_fingerprints_change_with_any_parameter():
    a = {"w": np.ones((2, 2), np.float32)}
    b = {"w": np.ones((2, 2), np.float32)}
    assert params_fingerprint(a) == params_fingerprint(b)
    b["w"][1, 1] = 1.0000001
    assert params_fingerprint(a) != params_fingerprint(b)
    assert params_fingerprint(a) != params_fingerprint({"w": np.ones((4,), np.float32)})  # shape counts


@pytest.mark.parametrize("spec", ["x", "@1", "a@", "a@b@c", "a b@1", "a@1 2", "", None, 3])
def test_model_strings_that_do_not_parse(spec):
    with pytest.raises(InvalidInputError, match="NAME@VERSION"):
        parse_model(spec)


def test_a_store_without_a_model_refuses_a_model_check(tmp_path):
    with vecstore.build(str(tmp_path / "s.vs"), _data(1), progress=False) as store:
        with pytest.raises(ModelMismatchError, match="records no model"):
            store.search(_data(2, 1), 1, model="m@1")


def test_a_replaced_encoder_is_not_the_model_the_vectors_came_from(tmp_path):
    from vecstore.encoders import WordVectorEncoder

    vocab = ["red", "green", "blue", "cat", "dog"]
    enc = WordVectorEncoder(vocab, _data(3, 5, 8))
    other = WordVectorEncoder(vocab, _data(4, 5, 8))
    path = str(tmp_path / "t.vs")
    store, _ = vecstore.build_text(path, ["red cat", "blue dog", "green"], enc, model="words@1", progress=False)
    with store:
        assert store.model["encoder"] == "text"
        assert store.search_text("red dog", 2).ids.shape == (1, 2)
    vecstore.add_encoder(path, other, replace=True).close()
    with vecstore.open(path) as store:
        with pytest.raises(ModelMismatchError, match="not the model that produced"):
            store.search_text("red dog", 2)


# -- swap ----------------------------------------------------------------------------------------


def _version(tmp_path, name, seed, ids_from=0, dim=DIM, model="m@1", codec="pq4"):
    path = str(tmp_path / name)
    ids = np.arange(ids_from, ids_from + N)
    vecstore.build(path, _data(seed, dim=dim), ids=ids, model=model, progress=False).close()
    if codec:
        vecstore.compress(path, codec, progress=False).close()
    return path


def test_swap_replaces_the_store_and_keeps_the_previous_for_rollback(tmp_path):
    current = _version(tmp_path, "current.vs", 1)
    new = _version(tmp_path, "new.vs", 2, ids_from=NEW_IDS, model="m@2")
    with vecstore.open(new, mode="a") as store:  # the new version carries an appended segment
        store.add(_data(9, 10), ids=np.arange(NEW_IDS + N, NEW_IDS + N + 10))
    report = swap(new, current)
    assert report["check"]["recall"] >= 0.9 and not os.path.exists(new)
    with vecstore.open(current) as store:
        assert store.model["version"] == "2" and store.count == N + 10 and store.ids.min() == NEW_IDS
    with vecstore.open(current + ".prev") as store:
        assert store.model["version"] == "1" and store.ids.max() == N - 1
    swap(current + ".prev", current)  # roll back
    with vecstore.open(current) as store:
        assert store.model["version"] == "1"
    with vecstore.open(current + ".prev") as store:
        assert store.model["version"] == "2" and store.count == N + 10


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "link-fallback"])
def test_swap_has_a_rollback_at_every_step_that_changes_current(tmp_path, monkeypatch, exchange):
    """Before any rename or exchange that changes what CURRENT serves, CURRENT.prev already holds
    (and opens as) the version CURRENT serves until then; a rollback is one exchange or rename."""
    from vecstore.format import schema as fmt

    current = _version(tmp_path, "current.vs", 1)
    new = _version(tmp_path, "new.vs", 2, ids_from=NEW_IDS, model="m@2")
    with vecstore.open(current, mode="a") as store:  # the replaced version carries a segment too
        store.add(_data(9, 10), ids=np.arange(N, N + 10))
    current = os.path.abspath(current)
    real_replace, real_exchange = os.replace, fmt.exchange_paths
    seen = []

    def served(path):
        with vecstore.open(path) as store:
            return store.model["version"], store.count

    def replace(src, dst, *a, **kw):
        if os.path.abspath(dst) == current:
            seen.append((served(current), served(current + ".prev")))
        return real_replace(src, dst, *a, **kw)

    def exchange_paths(a, b):
        if not exchange:
            return False
        seen.append((served(current), served(current + ".prev")))
        return real_exchange(a, b)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(fmt, "exchange_paths", exchange_paths)
    swap(new, current)
    assert seen == [(("1", N + 10), ("1", N + 10))]  # published before the one switching rename
    assert served(current) == ("2", N) and served(current + ".prev") == ("1", N + 10)
    seen.clear()
    swap(current + ".prev", current)  # roll back
    assert served(current) == ("1", N + 10) and served(current + ".prev") == ("2", N)
    if exchange:  # both names hold a store at every instant
        assert seen == [(("2", N), ("1", N + 10))]
    else:  # CURRENT.prev takes CURRENT's version first; then one rename switches CURRENT
        assert seen == [(("2", N), ("2", N))]
    assert not [f for f in os.listdir(tmp_path) if fmt.TMP_MARK in f]


def test_swap_refuses_another_dimension_unless_forced(tmp_path):
    current = _version(tmp_path, "current.vs", 1)
    new = _version(tmp_path, "new.vs", 2, dim=8, codec=None)
    with pytest.raises(InvalidInputError, match="8-dim ip vectors but .* 16-dim ip: .* force"):
        swap(new, current)
    assert os.path.exists(new)
    with vecstore.open(current) as store:
        assert store.dim == DIM
    swap(new, current, force=True)
    with vecstore.open(current) as store:
        assert store.dim == 8


def test_swap_refuses_a_store_that_fails_its_checks(tmp_path):
    current = _version(tmp_path, "current.vs", 1)
    new = _version(tmp_path, "new.vs", 2)
    with pytest.raises(IntegrityError, match="below 0.999"):
        swap(new, current, min_recall=0.999)  # pq4 rescored cannot be that good on 16 dims
    with open(new, "r+b") as fh:  # flip one byte of the raw tier
        with vecstore.open(new) as store:
            from vecstore.format import schema as fmt
            span = store._base.header.datasets[f"{fmt.TIERS}/raw/{fmt.CODES}"]
        fh.seek(span.offset + 100)
        byte = fh.read(1)
        fh.seek(span.offset + 100)
        fh.write(bytes([byte[0] ^ 1]))
    with pytest.raises(IntegrityError, match="do not match"):
        swap(new, current)
    with pytest.raises(StoreNotFoundError):
        swap(str(tmp_path / "missing.vs"), current)
    with vecstore.open(current) as store:
        assert store.model["version"] == "1"


def test_readers_move_to_the_new_version_between_queries_without_a_failure(tmp_path):
    current = _version(tmp_path, "current.vs", 1)
    new = _version(tmp_path, "new.vs", 2, ids_from=NEW_IDS, model="m@2")
    queries = _data(5, 8)
    errors, mixed, seen = [], [], set()
    stop = threading.Event()

    def reader(store):
        while not stop.is_set():
            try:
                ids = store.search(queries, 10).ids
            except Exception as exc:  # any failure counts
                errors.append(repr(exc))
                continue
            old = ids < NEW_IDS
            if old.any() and not old.all():
                mixed.append(ids)
            seen.add(bool(old.all()))

    stores = [vecstore.open(current, auto_reload=True) for _ in range(4)]
    threads = [threading.Thread(target=reader, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    time.sleep(0.3)
    swap(new, current)
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    for s in stores:
        assert s.model["version"] == "2"
        s.close()
    assert errors == [] and mixed == [] and seen == {True, False}


# -- drift -----------------------------------------------------------------------------------------


def test_check_advises_retraining_a_tier_trained_before_the_data_moved(tmp_path):
    path = str(tmp_path / "s.vs")
    rng = np.random.default_rng(0)
    old = rng.standard_normal((2000, DIM)).astype(np.float32)
    old[:, DIM // 2:] *= 0.05  # the old documents live in half of the space
    vecstore.build(path, old, metric="l2", progress=False).close()
    vecstore.compress(path, "pq4", calibrate=False, progress=False).close()
    with vecstore.open(path) as store:
        steady = check_drift(store, sample=100)
    assert [t["retrain"] for t in steady["tiers"]] == [False]
    new = rng.standard_normal((400, DIM)).astype(np.float32)
    new[:, :DIM // 2] *= 0.05  # the new ones in the other half: codebooks trained on the old fit badly
    with vecstore.open(path, mode="a") as store:
        store.add(new)
        drift = check_drift(store, sample=100)
    (tier,) = drift["tiers"]
    assert tier["retrain"] and tier["recall_oldest"] - tier["recall_newest"] > 0.05
    assert tier["advice"] == "vecstore compress STORE --retrain pq4"
    result = CliRunner().invoke(cli, ["compress", path, "--retrain", "pq4", "--quiet", "--no-calibrate"])
    assert result.exit_code == 0, result.output
    with vecstore.open(path) as store:
        after = check_drift(store, sample=100)["tiers"][0]
        assert store.segment_count == 0 and store.count == 2400
    assert after["recall_newest"] > tier["recall_newest"] + 0.05


def test_self_check_is_exact_without_compressed_tiers(tmp_path):
    with vecstore.build(str(tmp_path / "s.vs"), _data(1), progress=False) as store:
        report = self_check(store, sample=50)
    assert report["recall"] == 1.0 and report["plan"] == ["raw", None, None]


# -- the CLI ------------------------------------------------------------------------------------


def test_cli_lifecycle_commands(tmp_path):
    run = CliRunner()
    npy = str(tmp_path / "x.npy")
    np.save(npy, _data(1))
    extra = str(tmp_path / "extra.npy")
    np.save(extra, _data(2, 30))
    store = str(tmp_path / "s.vs")
    out = run.invoke(cli, ["build", npy, store, "--quiet", "--model", "enc@3"])
    assert out.exit_code == 0, out.output
    out = run.invoke(cli, ["append", store, extra, "--quiet", "--model", "enc@3"])
    assert out.exit_code == 0 and f"ids {N}..{N + 29}" in out.output, out.output
    out = run.invoke(cli, ["delete", store, "--ids", "1,2"])
    assert out.exit_code == 0 and "deleted 2 document(s)" in out.output
    out = run.invoke(cli, ["delete", store, "--ids", "99999"])
    assert out.exit_code == 1 and "not in the store" in out.output
    out = run.invoke(cli, ["info", store])
    assert "model      enc@3" in out.output and "30 appended in 1 segment(s), 2 deleted" in out.output
    out = run.invoke(cli, ["search", store, "--vector", ",".join(["1"] * DIM), "--model", "enc@4"])
    assert out.exit_code == 1 and "enc@4 but the store holds vectors of enc@3" in out.output
    out = run.invoke(cli, ["verify", store, "--recall", "--json"])
    doc = json.loads(out.output)
    assert out.exit_code == 0 and doc["ok"] and doc["recall_check"]["recall"] == 1.0
    assert any(d["name"].startswith("seg-") for d in doc["datasets"])
    out = run.invoke(cli, ["compact", store, "--quiet"])
    assert out.exit_code == 0 and "1 segment(s) merged, 2 deleted dropped" in out.output
    out = run.invoke(cli, ["check", store])
    assert out.exit_code == 0 and "no compressed tier" in out.output
    new = str(tmp_path / "new.vs")
    assert run.invoke(cli, ["build", npy, new, "--quiet", "--model", "enc@4"]).exit_code == 0
    out = run.invoke(cli, ["swap", new, store])
    assert out.exit_code == 0 and "now serves enc@4" in out.output and "s.vs.prev" in out.output
    out = run.invoke(cli, ["build", npy, new, "--quiet", "--model", "enc"])
    assert out.exit_code == 1 and "does not parse" in out.output
