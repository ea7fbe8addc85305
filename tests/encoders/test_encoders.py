"""Text encoders: tokenizer, word-vector mean, Elman RNN, PyTorch import, JSON, bad input, threads."""

from __future__ import annotations

import ast
import gzip
import json
import math
import os
import threading
import unicodedata

import numpy as np
import pytest

from vecstore.encoders import (
    ElmanEncoder,
    WordVectorEncoder,
    _common,
    dump_encoder_json,
    encoder_document,
    encoder_from_document,
    encoder_from_parts,
    load_encoder_json,
    tokenize,
)
from vecstore.encoders.tokenize import token_regex
from vecstore.errors import FormatError, InvalidDtypeError, InvalidInputError, StoreNotFoundError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORD_VECTORS = os.path.join(ROOT, "data", "wordnet-word2vec-100.h5")
SMALL_REAL = os.path.join(ROOT, "data", "wordnet-minilm-384-small.hdf5")


# -- tokenizer -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, tokens", [
    ("Hello, World!", ["hello", "world"]),
    ("don't stop", ["don", "t", "stop"]),                      # apostrophes separate
    ("it\u2019s", ["it", "s"]),                                 # so does the typographic one
    ("out-of-bounds", ["out", "of", "bounds"]),
    ("snake_case", ["snake", "case"]),                          # underscore separates
    ("3.14 x2 2nd", ["3", "14", "x2", "2nd"]),
    ("\uff26\uff35\uff2c\uff2c width \uff12\uff10\uff12\uff14", ["full", "width", "2024"]),  # NFKC
    ("\ufb01sh", ["fish"]),                                     # ligature fi
    ("nai\u0308ve cafe\u0301", ["na\u00efve", "caf\u00e9"]),    # composed by NFKC
    ("Stra\u00dfe", ["stra\u00dfe"]),                           # lowercase, not casefold
    ("\u03a3\u039f\u03a6\u039f\u03a3", ["\u03c3\u03bf\u03c6\u03bf\u03c2"]),  # final sigma
    ("\u0130stanbul", ["i\u0307stanbul"]),                      # dotted I keeps its mark
    ("\u0939\u093f\u0928\u094d\u0926\u0940 \u092d\u093e\u0937\u093e",         # Hindi: vowel signs and
     ["\u0939\u093f\u0928\u094d\u0926\u0940", "\u092d\u093e\u0937\u093e"]),  # virama are marks
    ("\u00bd \u2163", ["1", "2", "iv"]),                        # NFKC: 1/2 -> 1\u20442, IV -> iv
    ("a\tb\nc  d", ["a", "b", "c", "d"]),
    ("\U0001f600 emoji", ["emoji"]),                            # symbols separate
    ("", []),
    ("  ... !!", []),
])
def test_tokenize(text, tokens):
    assert tokenize(text) == tokens


def test_token_class_is_letters_marks_numbers():
    """The Python class is exactly [\\p{L}\\p{M}\\p{N}] for this Unicode version."""
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    matched = set(token_regex().findall("\n".join(chars)))
    expected = {ch for ch in chars if unicodedata.category(ch)[0] in "LMN"}
    assert matched == expected


@pytest.mark.parametrize("bad", [b"bytes", None, 3])
def test_tokenize_refuses_non_str(bad):
    with pytest.raises(InvalidInputError, match="must be a str"):
        tokenize(bad)


# -- word vectors ----------------------------------------------------------------------------------

VOCAB = ["a", "b", "c"]
E3 = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0]], dtype=np.float32)


def test_wordvec_mean_by_hand():
    enc = WordVectorEncoder(VOCAB, E3)
    v, unknown = enc.encode(["a b", "a a b", "C, c!", "b zz a yy zz"])
    r5, r2 = 1 / math.sqrt(5), 1 / math.sqrt(2)
    np.testing.assert_allclose(v, [[r5, 2 * r5, 0],       # mean (0.5, 1, 0)
                                   [r2, r2, 0],           # repeats count: (2, 2, 0) / 3
                                   [0, 0, 1],
                                   [r5, 2 * r5, 0]], atol=1e-7)
    assert v.dtype == np.float32 and v.flags.c_contiguous
    assert unknown == [[], [], [], ["zz", "yy"]]           # each unknown word once, in order


def test_wordvec_idf_by_hand():
    enc = WordVectorEncoder(VOCAB, E3, idf=np.array([2.0, 1.0, 0.5], dtype=np.float32))
    v = enc.encode(["a b", "b c", "a"]).vectors
    r2 = 1 / math.sqrt(2)
    # (2*(1,0,0) + 1*(0,2,0)) / 3 = (2/3, 2/3, 0); (1*(0,2,0) + 0.5*(0,0,3)) / 1.5 = (0, 4/3, 1)
    np.testing.assert_allclose(v, [[r2, r2, 0], [0, 0.8, 0.6], [1, 0, 0]], atol=1e-7)
    assert enc.config()["weighting"] == "idf"


def test_single_string_gives_one_row():
    enc = WordVectorEncoder(VOCAB, E3)
    v, unknown = enc.encode("b")
    assert v.shape == (1, 3) and unknown == [[]]


def test_on_empty_zero():
    enc = WordVectorEncoder(VOCAB, E3)
    v, unknown = enc.encode(["a", "", "zz"], on_empty="zero")
    np.testing.assert_array_equal(v[1:], 0)
    assert unknown == [[], [], ["zz"]]


def test_from_hdf5_arrays_decodes_bytes():
    enc = WordVectorEncoder.from_hdf5_arrays(np.array([b"a", "b".encode(), "\u00e9".encode()], dtype=object), E3)
    assert enc.vocab == ["a", "b", "\u00e9"]


# -- Elman RNN -------------------------------------------------------------------------------------

def reference_elman(vocab, E, W, b, text, output):
    """The forward pass of docs/encoders.md in plain Python (lists, math.tanh, no numpy)."""
    index = {w: i for i, w in enumerate(vocab)}
    ids = [index[w] for w in tokenize(text) if w in index]
    size = len(b)
    state = [0.0] * size
    total = [0.0] * size
    for w in ids:
        state = [math.tanh(E[w][r] + sum(W[r][c] * state[c] for c in range(size)) + b[r])
                 for r in range(size)]
        total = [t + s for t, s in zip(total, state)]
    y = state if output == "last" else [t / len(ids) for t in total]
    norm = math.sqrt(sum(x * x for x in y))
    return [x / norm for x in y]


def random_elman(rng, vocab_size=40, hidden=9):
    vocab = [f"w{i}" for i in range(vocab_size)]
    E = rng.normal(0, 0.8, (vocab_size, hidden)).astype(np.float32)
    W = rng.normal(0, 0.5, (hidden, hidden)).astype(np.float32)
    b = rng.normal(0, 0.3, hidden).astype(np.float32)
    return vocab, E, W, b


def random_texts(rng, n, vocab_size, max_len=25):
    """Texts of 1 to max_len known words, with an unknown word "unk" here and there."""
    return [" ".join(f"w{j}" if i == 0 or rng.random() > 0.1 else "unk"
                     for i, j in enumerate(rng.integers(0, vocab_size, rng.integers(1, max_len))))
            for _ in range(n)]


@pytest.mark.parametrize("output", ["last", "mean"])
@pytest.mark.parametrize("parallel", [False, True])
def test_elman_matches_plain_python(output, parallel, monkeypatch):
    rng = np.random.default_rng(7)
    vocab, E, W, b = random_elman(rng)
    texts = random_texts(rng, 30, len(vocab)) + ["w3", "w1 w1 w1 w1 " * 20]
    monkeypatch.setattr(_common, "PARALLEL_MIN_WORK", 0 if parallel else 1 << 62)
    got = ElmanEncoder(vocab, E, W, b, output=output).encode(texts).vectors
    El, Wl, bl = E.tolist(), W.tolist(), b.tolist()
    want = [reference_elman(vocab, El, Wl, bl, t, output) for t in texts]
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


def torch_rnn_numpy(emb, w_ih, w_hh, b_ih, b_hh, ids):
    """torch.nn.RNN(tanh) in numpy: h_t = tanh(x_t W_ih^T + b_ih + h_(t-1) W_hh^T + b_hh)."""
    h = np.zeros(w_hh.shape[0])
    states = []
    for w in ids:
        h = np.tanh(emb[w] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        states.append(h)
    return np.array(states)


@pytest.mark.parametrize("output", ["last", "mean"])
def test_from_torch_folds_input_projection(output):
    rng = np.random.default_rng(3)
    V, n_in, h = 30, 6, 8
    vocab = [f"t{i}" for i in range(V)]
    emb = rng.normal(0, 1, (V, n_in)).astype(np.float32)
    w_ih = rng.normal(0, 0.4, (h, n_in)).astype(np.float32)
    w_hh = rng.normal(0, 0.4, (h, h)).astype(np.float32)
    b_ih, b_hh = rng.normal(0, 0.2, h).astype(np.float32), rng.normal(0, 0.2, h).astype(np.float32)
    enc = ElmanEncoder.from_torch(emb, w_ih, w_hh, b_ih, b_hh, vocab, output=output)
    assert enc.embedding.shape == (V, h)
    for text in ["t1 t2 t3", "t29 t0 t0 t7 t11 t4", "t5"]:
        ids = [int(w[1:]) for w in text.split()]
        states = torch_rnn_numpy(emb.astype(np.float64), w_ih, w_hh, b_ih, b_hh, ids)
        y = states[-1] if output == "last" else states.mean(axis=0)
        np.testing.assert_allclose(enc.encode(text).vectors[0], y / np.linalg.norm(y), atol=1e-5)


def test_from_torch_without_biases():
    rng = np.random.default_rng(4)
    emb, w_ih, w_hh = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)), rng.normal(size=(4, 4)) * 0.3
    enc = ElmanEncoder.from_torch(emb, w_ih, w_hh, None, None, list("abcde"))
    np.testing.assert_array_equal(enc.bias, 0)
    with pytest.raises(InvalidInputError, match="both"):
        ElmanEncoder.from_torch(emb, w_ih, w_hh, np.zeros(4), None, list("abcde"))
    with pytest.raises(InvalidInputError, match="weight_hh_l0 has shape"):
        ElmanEncoder.from_torch(emb, w_ih, w_hh[:3], None, None, list("abcde"))


# -- parts and JSON --------------------------------------------------------------------------------

def sample_encoders():
    rng = np.random.default_rng(11)
    vocab, E, W, b = random_elman(rng, vocab_size=25, hidden=6)
    idf = rng.uniform(0.5, 3, 25).astype(np.float32)
    return [WordVectorEncoder(vocab, E), WordVectorEncoder(vocab, E, idf),
            ElmanEncoder(vocab, E, W, b, output="last"), ElmanEncoder(vocab, E, W, b, output="mean")]


@pytest.mark.parametrize("index", range(4))
@pytest.mark.parametrize("suffix", [".json", ".json.gz"])
def test_json_round_trip(index, suffix, tmp_path):
    enc = sample_encoders()[index]
    path = tmp_path / f"enc{suffix}"
    dump_encoder_json(enc, path)
    back = load_encoder_json(path)
    assert back == enc and back.config() == enc.config()
    texts = random_texts(np.random.default_rng(5), 50, 25)
    np.testing.assert_allclose(back.encode(texts).vectors, enc.encode(texts).vectors, atol=1e-6, rtol=0)
    assert np.array_equal(back.encode(texts).vectors, enc.encode(texts).vectors)  # in fact bit-exact


@pytest.mark.parametrize("index", range(4))
def test_parts_round_trip(index):
    enc = sample_encoders()[index]
    config = json.loads(json.dumps(enc.config()))
    assert set(enc.arrays()) <= {"embedding", "idf", "recurrent", "bias"}
    back = encoder_from_parts(config, list(enc.vocab), {k: np.array(v) for k, v in enc.arrays().items()})
    assert back == enc


# -- bad input -------------------------------------------------------------------------------------

def test_empty_text_is_an_error():
    enc = WordVectorEncoder(VOCAB, E3)
    with pytest.raises(InvalidInputError, match=r"text 1 \('  !\? '\) is empty"):
        enc.encode(["a", "  !? "])


def test_only_unknown_words_is_an_error():
    enc = ElmanEncoder(VOCAB, E3, np.eye(3, dtype=np.float32), np.zeros(3, np.float32))
    with pytest.raises(InvalidInputError,
                       match=r"text 0 \('xx yy'\) has no word in the vocabulary \(unknown: 'xx', 'yy'\)"):
        enc.encode("xx yy")


def test_zero_vector_is_an_error():
    enc = WordVectorEncoder(VOCAB, E3, idf=np.array([0.0, 1.0, 1.0], np.float32))
    with pytest.raises(InvalidInputError, match="zero vector"):
        enc.encode("a")


@pytest.mark.parametrize("texts, match", [([], "no texts"), (b"a", "bytes"), ([1], "text 0 is a int"),
                                          (3, "str or a list")])
def test_bad_texts(texts, match):
    with pytest.raises(InvalidInputError, match=match):
        WordVectorEncoder(VOCAB, E3).encode(texts)


def test_bad_on_empty():
    with pytest.raises(InvalidInputError, match="on_empty"):
        WordVectorEncoder(VOCAB, E3).encode("a", on_empty="skip")


@pytest.mark.parametrize("make, error, match", [
    (lambda: WordVectorEncoder(["a", "b"], E3), InvalidInputError,
     r"embedding has shape \(3, 3\), expected \(2, any\)"),
    (lambda: WordVectorEncoder(["a", "b", "a"], E3), InvalidInputError, "'a' appears twice"),
    (lambda: WordVectorEncoder(["a", "", "c"], E3), InvalidInputError, "empty string"),
    (lambda: WordVectorEncoder(["a", b"b", "c"], E3), InvalidInputError, "not a str"),
    (lambda: WordVectorEncoder("abc", E3), InvalidInputError, "not a single string"),
    (lambda: WordVectorEncoder([], E3[:0]), InvalidInputError, "vocab is empty"),
    (lambda: WordVectorEncoder(VOCAB, E3.astype(np.int32)), InvalidDtypeError, "dtype int32"),
    (lambda: WordVectorEncoder(VOCAB, np.array([["x"] * 3] * 3)), InvalidDtypeError, "dtype <U1"),
    (lambda: WordVectorEncoder(VOCAB, np.where(np.eye(3) > 0, np.nan, 0)), InvalidInputError,
     r"NaN or Inf .* index \(0, 0\)"),
    (lambda: WordVectorEncoder(VOCAB, np.full((3, 3), 1e39)), InvalidInputError, "too large for float32"),
    (lambda: WordVectorEncoder(VOCAB, E3[:, :0]), InvalidInputError, "holds no values"),
    (lambda: WordVectorEncoder(VOCAB, E3, idf=np.ones(2)), InvalidInputError, r"idf has shape \(2,\)"),
    (lambda: WordVectorEncoder(VOCAB, E3, idf=-np.ones(3)), InvalidInputError, "negative weight"),
    (lambda: ElmanEncoder(VOCAB, E3, np.eye(2), np.zeros(3)), InvalidInputError, r"recurrent has shape \(2, 2\)"),
    (lambda: ElmanEncoder(VOCAB, E3, np.eye(3), np.zeros(4)), InvalidInputError, r"bias has shape \(4,\)"),
    (lambda: ElmanEncoder(VOCAB, E3, np.eye(3), np.zeros(3), output="max"), InvalidInputError, "output must be"),
])
def test_bad_parameters(make, error, match):
    with pytest.raises(error, match=match):
        make()


def _parts(index=2):
    enc = sample_encoders()[index]
    return dict(enc.config()), list(enc.vocab), dict(enc.arrays())


@pytest.mark.parametrize("change, match", [
    (lambda c, v, a: c.update(kind="lstm"), "unknown encoder kind 'lstm'"),
    (lambda c, v, a: c.update(extra=1), r"unexpected: \['extra'\]"),
    (lambda c, v, a: c.pop("dim"), r"missing: \['dim'\]"),
    (lambda c, v, a: c.update(dim=7), r"array 'embedding' has shape \(25, 6\), expected \(25, 7\)"),
    (lambda c, v, a: c.update(tokenizer={"id": "vecstore-words", "version": 2}), "tokenizer .* is not known"),
    (lambda c, v, a: c.update(output="max"), "output must be one of"),
    (lambda c, v, a: v.pop(), "vocab has 24 words, but the config says 25"),
    (lambda c, v, a: v.__setitem__(3, "w4"), "'w4' appears twice"),
    (lambda c, v, a: a.pop("bias"), "needs exactly the arrays"),
    (lambda c, v, a: a.update(idf=np.ones(25, np.float32)), "needs exactly the arrays"),
    (lambda c, v, a: a.update(bias=a["bias"].astype(np.float64)), "'bias' has dtype float64, expected float32"),
    (lambda c, v, a: a.update(bias=np.full(6, np.inf, np.float32)), "bias holds NaN or Inf"),
])
def test_bad_parts(change, match):
    config, vocab, arrays = _parts()
    change(config, vocab, arrays)
    with pytest.raises(FormatError, match=match):
        encoder_from_parts(config, vocab, arrays, where="store.vs:/encoder")


def test_parts_weighting_must_match_idf():
    config, vocab, arrays = _parts(index=1)
    config["weighting"] = "none"
    with pytest.raises(FormatError, match="needs exactly the arrays"):
        encoder_from_parts(config, vocab, arrays)


def _doc():
    return json.loads(json.dumps(encoder_document(sample_encoders()[3])))


@pytest.mark.parametrize("change, match", [
    (lambda d: d.update(format="other"), "not a vecstore encoder document"),
    (lambda d: d.update(format_version=2), "format version 2"),
    (lambda d: d.pop("vocab"), "missing field 'vocab'"),
    (lambda d: d.pop("config"), "missing field 'config'"),
    (lambda d: d["arrays"]["bias"].pop("shape"), "must be an object with 'dtype', 'shape' and 'data'"),
    (lambda d: d["arrays"]["bias"].update(dtype="float64"), "only 'float32'"),
    (lambda d: d["arrays"]["bias"].update(shape=[7]), r"'bias' must be a list of 7 numbers"),
    (lambda d: d["arrays"]["embedding"]["data"].pop(), r"'embedding' must be a list of 25 rows"),
    (lambda d: d["arrays"]["embedding"]["data"][4].pop(), r"'embedding' row 4 must be a list of 6 numbers"),
    (lambda d: d["arrays"]["embedding"].update(shape=[25, 5], data=[r[:5] for r in d["arrays"]["embedding"]["data"]]),
     r"'embedding' has shape \(25, 5\), expected \(25, 6\)"),
    (lambda d: d["arrays"]["recurrent"]["data"][2].__setitem__(1, "0.5"),
     r"'recurrent' row 2 holds a non-number: '0.5'"),
    (lambda d: d["arrays"]["bias"]["data"].__setitem__(0, True), "non-number: True"),
    (lambda d: d["arrays"]["bias"]["data"].__setitem__(0, None), "non-number: None"),
    (lambda d: d["arrays"]["bias"]["data"].__setitem__(0, [1.0]), r"non-number: \[1.0\]"),
    (lambda d: d["arrays"]["bias"]["data"].__setitem__(0, 1e300), "too large for float32"),
    (lambda d: d.update(vocab=d["vocab"][:-1] + [7]), "'vocab' must be a list of strings"),
    (lambda d: d.update(arrays=[]), "'arrays' must be an object"),
])
def test_bad_json_documents(change, match):
    doc = _doc()
    change(doc)
    with pytest.raises(FormatError, match=match):
        encoder_from_document(doc)


def test_bad_json_files(tmp_path):
    with pytest.raises(StoreNotFoundError):
        load_encoder_json(tmp_path / "missing.json")
    (tmp_path / "broken.json").write_text('{"format": "vecstore-encoder",')
    with pytest.raises(FormatError, match="not valid UTF-8 JSON"):
        load_encoder_json(tmp_path / "broken.json")
    doc = json.dumps(_doc()).replace("[", "[NaN, ", 1)  # "vocab": [NaN, ...
    (tmp_path / "nan.json").write_text(doc)
    with pytest.raises(FormatError, match="vocab"):
        load_encoder_json(tmp_path / "nan.json")
    (tmp_path / "notgz.json.gz").write_bytes(b"plain")
    with pytest.raises(FormatError, match="cannot be read"):
        load_encoder_json(tmp_path / "notgz.json.gz")
    doc = _doc()
    doc["arrays"]["bias"]["data"][0] = float("nan")
    (tmp_path / "nanbias.json.gz").write_bytes(gzip.compress(json.dumps(doc).encode()))
    with pytest.raises(FormatError, match="'bias' holds NaN"):
        load_encoder_json(tmp_path / "nanbias.json.gz")


# -- threads ---------------------------------------------------------------------------------------

def test_threads_give_serial_results(monkeypatch):
    rng = np.random.default_rng(21)
    vocab, E, W, b = random_elman(rng, vocab_size=200, hidden=32)
    encoders = [WordVectorEncoder(vocab, E, np.abs(b[:1]) + np.ones(200, np.float32)),
                ElmanEncoder(vocab, E, W, b, output="mean")]
    monkeypatch.setattr(_common, "PARALLEL_MIN_WORK", 1 << 14)  # batches take the parallel kernels
    batches = [random_texts(rng, 200, 200) if i % 2 else random_texts(rng, 1, 200) for i in range(16)]
    serial = [[enc.encode(t).vectors for t in batches] for enc in encoders]
    results = {}
    start = threading.Barrier(8)

    def work(worker):
        start.wait()
        for rep in range(2):
            for e, enc in enumerate(encoders):
                for i in range(worker % 2, len(batches), 2):
                    results[worker, rep, e, i] = enc.encode(batches[i]).vectors

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 * 2 * 2 * 8
    for (_, _, e, i), got in results.items():
        assert np.array_equal(got, serial[e][i])


# -- the package stays framework-free ----------------------------------------------------------------

def test_no_heavy_imports():
    folder = os.path.join(ROOT, "vecstore", "encoders")
    for name in os.listdir(folder):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), encoding="utf-8") as fh:
                tree = ast.parse(fh.read())
            for node in ast.walk(tree):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                         else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
                for mod in names:
                    assert mod.split(".")[0] not in {"h5py", "torch", "gensim", "faiss", "click"}, (name, mod)


# -- the bundled word vectors on real titles ----------------------------------------------------------

def test_bundled_word_vectors_find_titles():
    h5py = pytest.importorskip("h5py")
    with h5py.File(WORD_VECTORS, "r") as f:
        enc = WordVectorEncoder.from_hdf5_arrays(f["vocab"][()], f["embedding"][()], f["idf"][()])
        assert f.attrs["tokenizer"] == "vecstore-words" and enc.dim == 100
    with h5py.File(SMALL_REAL, "r") as f:
        titles = [s.decode() for s in f["train_lemmas"][()]]
    X = enc.encode(titles, on_empty="zero").vectors
    for query, title in [("heat measuring instrument", "optical pyrometer, pyroscope"),
                         ("small dog", "Eskimo dog, husky")]:
        top = np.argsort(-(X @ enc.encode(query).vectors[0]))[:5]
        assert title in [titles[i] for i in top]
