"""Text queries through a stored encoder: library and CLI, on the shipped word vectors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import vecstore
from conftest import ROOT, SMALL_REAL
from vecstore.cli import cli
from vecstore.encoders import ElmanEncoder, WordVectorEncoder

WORD_VECTORS = f"{ROOT}/data/wordnet-word2vec-100.h5"


@pytest.fixture(scope="module")
def titles_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("t") / "titles.vs"
    result = CliRunner().invoke(cli, ["build-text", f"{SMALL_REAL}:/train_lemmas", str(path),
                                      "--encoder", WORD_VECTORS, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "texts had no known word and were left out" in result.stdout
    return path


def test_search_text_finds_the_right_titles(titles_store):
    with vecstore.open(titles_store) as store:
        D, I, unknown = store.search_text(["heat measuring instrument", "small dog xyzzy"], k=5)
        keys = store.keys(I)
    assert unknown == [[], ["xyzzy"]]
    assert any("pyrometer" in k for k in keys[0])
    assert any("dog" in k for k in keys[1])
    assert (np.diff(D, axis=1) <= 1e-6).all()


def test_stored_encoder_equals_exported_json(titles_store, tmp_path):
    runner = CliRunner()
    out = tmp_path / "enc.json"
    assert runner.invoke(cli, ["export-encoder", str(titles_store), str(out)]).exit_code == 0
    from vecstore.encoders import load_encoder_json

    with vecstore.open(titles_store) as store:
        a = store.encoder().encode(["sweet dessert", "sailing ship"]).vectors
    b = load_encoder_json(out).encode(["sweet dessert", "sailing ship"]).vectors
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_cli_text_query_and_errors(titles_store):
    runner = CliRunner()
    result = runner.invoke(cli, ["search", str(titles_store), "--text", "sailing ship qqq", "-k", "3", "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["unknown_words"] == ["qqq"]
    assert "skipped unknown words: qqq" in result.stderr
    bad = runner.invoke(cli, ["search", str(titles_store), "--text", "qqq zzz"])
    assert bad.exit_code == 1 and "no word in the vocabulary" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    empty = runner.invoke(cli, ["search", str(titles_store), "--text", ""])
    assert empty.exit_code == 1


def test_search_text_on_empty_error_or_skip(titles_store):
    texts = ["sailing ship", "qqq zzz", "", "small dog"]
    with vecstore.open(titles_store) as store:
        with pytest.raises(vecstore.InvalidInputError, match=r"text 1 \('qqq zzz'\).*on_empty='skip'"):
            store.search_text(texts, k=3)
        D, I, unknown = store.search_text(texts, k=3, on_empty="skip")
        alone = store.search_text([texts[0], texts[3]], k=3)
        assert store.search_text(["qqq", ""], k=2, on_empty="skip").ids.tolist() == [[-1, -1], [-1, -1]]
        with pytest.raises(vecstore.InvalidInputError, match="on_empty"):
            store.search_text(texts, k=3, on_empty="zero")
        with pytest.raises(vecstore.InvalidInputError, match="k must be"):
            store.search_text(["qqq"], k=0, on_empty="skip")
    assert unknown == [[], ["qqq", "zzz"], [], []]
    assert (I[1] == -1).all() and (I[2] == -1).all() and np.isneginf(D[[1, 2]]).all()
    np.testing.assert_array_equal(I[[0, 3]], alone.ids)
    np.testing.assert_array_equal(D[[0, 3]], alone.distances)


def test_cli_several_texts_encoder_and_on_empty(titles_store, tmp_path):
    runner = CliRunner()
    args = ["search", str(titles_store), "--text", "sailing ship", "--text", "qqq zzz", "-k", "2"]
    bad = runner.invoke(cli, args)
    assert bad.exit_code == 1 and "--on-empty skip" in bad.stderr
    result = runner.invoke(cli, [*args, "--on-empty", "skip", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    first, second = data["results"]
    assert first["skipped"] is False and first["text"] == "sailing ship" and first["ids"][0] >= 0
    assert second["skipped"] is True and second["ids"] == [-1, -1] and second["unknown_words"] == ["qqq", "zzz"]
    assert "unknown_words" not in data                     # several texts: per result only
    assert "text 1: no known word" in result.stderr
    text = runner.invoke(cli, [*args, "--on-empty", "skip"])
    assert text.exit_code == 0 and "(no known word: skipped)" in text.stdout
    # a store with two encoders: --encoder picks one, a wrong name is refused
    two = tmp_path / "two.vs"
    vecstore.build(two, np.eye(4, dtype=np.float32), metric="cosine", progress=False).close()
    for name, rows in (("a", np.eye(4)), ("b", np.eye(4)[::-1])):
        vecstore.add_encoder(two, WordVectorEncoder(["w", "x", "y", "z"], rows.astype(np.float32)), name=name).close()
    ids = {name: json.loads(runner.invoke(cli, ["search", str(two), "--text", "w", "-k", "1", "--encoder", name,
                                                "--json"]).stdout)["results"][0]["ids"] for name in "ab"}
    assert ids == {"a": [0], "b": [3]}
    assert "no encoder 'c'" in runner.invoke(cli, ["search", str(two), "--text", "w", "--encoder", "c"]).stderr
    usage = runner.invoke(cli, ["search", str(two), "--vector", "1,0,0,0", "--encoder", "a"])
    assert usage.exit_code == 2


def test_add_encoder_elman_and_dimension_check(tmp_path, rng):
    vocab = ["a", "b", "c"]
    enc = ElmanEncoder(vocab, rng.standard_normal((3, 8)).astype(np.float32),
                       (0.1 * rng.standard_normal((8, 8))).astype(np.float32), np.zeros(8, np.float32))
    x = rng.standard_normal((50, 8)).astype(np.float32)
    vecstore.build(tmp_path / "s.vs", x, metric="cosine", progress=False).close()
    with vecstore.add_encoder(tmp_path / "s.vs", enc, name="rnn") as store:
        assert store.encoder_names == ["rnn"]
        D, I, unknown = store.search_text("a b c", k=3)
        expected = enc.encode(["a b c"]).vectors
        D2, I2 = store.search(expected, 3)
        np.testing.assert_array_equal(I, I2)
    with pytest.raises(vecstore.InvalidInputError, match="already has an encoder 'rnn'"):
        vecstore.add_encoder(tmp_path / "s.vs", enc, name="rnn")
    wide = WordVectorEncoder(vocab, np.ones((3, 5), np.float32))
    with pytest.raises(vecstore.InvalidInputError, match="5-dim vectors"):
        vecstore.add_encoder(tmp_path / "s.vs", wide)
    # compress keeps encoders
    with vecstore.compress(tmp_path / "s.vs", "int8", calibrate=False, progress=False) as store:
        assert store.encoder_names == ["rnn"]


def test_store_without_encoder(tmp_path, rng):
    with vecstore.build(tmp_path / "s.vs", rng.standard_normal((5, 4)), progress=False) as store:
        with pytest.raises(vecstore.UnknownTierError, match="no text encoder"):
            store.search_text("hello")
