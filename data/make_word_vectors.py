"""Train the word vectors of the worked example: data/wordnet-word2vec-100.h5.

Needs gensim, a script-only dependency (vecstore itself never imports it):

    .venv/bin/pip install gensim
    .venv/bin/python data/make_word_vectors.py            # ~3 minutes on 2 cores

Corpus: the ``train_text`` strings ("lemmas: gloss", one per WordNet 3.0 synset) of
../shared/data/wordnet-minilm-384.hdf5 (100,000 texts), or of data/wordnet-minilm-384-small.hdf5
(10,000) when the big file is absent; ``--corpus`` picks another file. Each text is split with
vecstore's own tokenizer (vecstore.encoders.tokenize), so the words match what queries produce.

Word2Vec: skip-gram, 100 dimensions, seeded, one worker thread and a fixed word hash (gensim's
default ``hash`` changes with PYTHONHASHSEED), so a rerun with the same gensim gives the same vectors.
Words seen fewer than ``min_count`` times are dropped, and at most 50,000 are kept (most frequent
first); min_count is chosen so the file stays under 12 MB.

IDF over the same tokenized texts (scikit-learn's smooth IDF): ``idf = ln((1 + N) / (1 + df)) + 1``,
N the number of texts, df the number of texts containing the word.

Output, a plain HDF5 file (no compression, rows in vocabulary order = most frequent word first):
  vocab      (V,)      UTF-8 strings
  embedding  (V, 100)  float32, gensim's raw (not normalised) vectors
  idf        (V,)      float32
  attributes: corpus, corpus_texts, corpus_tokens, tokenizer, tokenizer_version, unicode_version,
              word2vec (JSON of the parameters), seed, gensim_version, idf_formula, created_by
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import zlib
from collections import Counter

import h5py
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from vecstore.encoders.tokenize import (  # noqa: E402
    TOKENIZER_ID,
    TOKENIZER_VERSION,
    UNICODE_VERSION,
    tokenize,
)

BIG = os.path.join(ROOT, "..", "shared", "data", "wordnet-minilm-384.hdf5")
SMALL = os.path.join(ROOT, "data", "wordnet-minilm-384-small.hdf5")
OUT = os.path.join(ROOT, "data", "wordnet-word2vec-100.h5")
MAX_WORDS = 50_000
MAX_BYTES = 12_000_000


def stable_hash(text: str) -> int:
    """Seeds each word's initial vector; unlike ``hash`` it does not change between processes."""
    return zlib.crc32(text.encode("utf-8"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", help="HDF5 file with a train_text dataset (default: the shared 100K set)")
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--min-count", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    import gensim
    from gensim.models import Word2Vec

    corpus = args.corpus or (BIG if os.path.exists(BIG) else SMALL)
    with h5py.File(corpus, "r") as f:
        texts = [s.decode("utf-8") for s in f["train_text"][()]]
    sentences = [tokenize(t) for t in texts]
    n_tokens = sum(map(len, sentences))
    print(f"corpus {os.path.basename(corpus)}: {len(texts)} texts, {n_tokens} tokens", file=sys.stderr)

    params = dict(vector_size=100, window=5, min_count=args.min_count, max_final_vocab=MAX_WORDS, sg=1,
                  negative=10, sample=1e-3, alpha=0.025, min_alpha=0.0001, epochs=args.epochs,
                  seed=args.seed, workers=1)
    t0 = time.perf_counter()
    model = Word2Vec(sentences, hashfxn=stable_hash, **params)
    print(f"trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    vocab = list(model.wv.index_to_key)[:MAX_WORDS]
    embedding = np.ascontiguousarray(model.wv.vectors[: len(vocab)], dtype=np.float32)
    df = Counter(w for s in sentences for w in set(s))
    n = len(texts)
    idf = np.array([math.log((1 + n) / (1 + df[w])) + 1 for w in vocab], dtype=np.float32)
    if not np.isfinite(embedding).all():
        raise SystemExit("training produced non-finite vectors")

    tmp = args.out + ".tmp"
    with h5py.File(tmp, "w", track_order=False) as f:
        f.create_dataset("vocab", data=np.array(vocab, dtype=object), dtype=h5py.string_dtype("utf-8"),
                         track_times=False)
        f.create_dataset("embedding", data=embedding, track_times=False)
        f.create_dataset("idf", data=idf, track_times=False)
        f.attrs["corpus"] = (f"train_text of {os.path.basename(corpus)} (WordNet 3.0 synsets, "
                             "'lemmas: gloss')")
        f.attrs["corpus_texts"] = n
        f.attrs["corpus_tokens"] = n_tokens
        f.attrs["tokenizer"] = TOKENIZER_ID
        f.attrs["tokenizer_version"] = TOKENIZER_VERSION
        f.attrs["unicode_version"] = UNICODE_VERSION
        f.attrs["word2vec"] = json.dumps({**params, "hashfxn": "zlib.crc32(utf-8)"})
        f.attrs["seed"] = args.seed
        f.attrs["gensim_version"] = gensim.__version__
        f.attrs["idf_formula"] = "ln((1 + N) / (1 + df)) + 1, N = corpus_texts, df = texts containing the word"
        f.attrs["created_by"] = "data/make_word_vectors.py"
    size = os.path.getsize(tmp)
    if size > MAX_BYTES:
        os.remove(tmp)
        raise SystemExit(f"{size} bytes is over the {MAX_BYTES} budget: raise --min-count")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(vocab)} words x {embedding.shape[1]}, {size / 1e6:.1f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
