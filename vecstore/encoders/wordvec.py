"""Word-vector text encoder: the (optionally IDF-weighted) mean of the known words' vectors.

For a text whose known tokens (see :mod:`vecstore.encoders.tokenize`; unknown ones are skipped and
reported) are w_1 .. w_T, repeats included:

    m = sum_t a(w_t) E[w_t] / sum_t a(w_t)      a(w) = idf[w], or 1 without IDF weights
    v = m / ||m||_2

computed in float64 from the float32 parameters, v rounded to float32.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from . import _kernels
from ._common import TextEncoder, check_array


class WordVectorEncoder(TextEncoder):
    """Encode texts as the normalised mean of word vectors (e.g. word2vec, fastText, GloVe rows).

    Parameters
    ----------
    vocab : list of str, length V
        The words, in the order of the embedding rows; distinct, non-empty. Words the tokenizer
        cannot produce (upper case, punctuation, ``<unk>``) are kept but never matched.
    embedding : (V, d) float array
        One vector per word; converted to float32 (used without a copy when already float32 and
        C-contiguous: do not modify it afterwards).
    idf : (V,) float array, optional
        Non-negative weight per word (e.g. ``ln((1 + N) / (1 + df)) + 1``); None for a plain mean.
    """

    kind = "wordvec"
    array_names = ("embedding", "idf")

    def __init__(self, vocab, embedding, idf=None):
        super().__init__(vocab)
        v = len(self.vocab)
        self.embedding = check_array(embedding, "embedding", (v, None))
        self.idf = None
        if idf is not None:
            self.idf = check_array(idf, "idf", (v,))
            if (self.idf < 0).any():
                row = int(np.argmax(self.idf < 0))
                raise InvalidInputError(f"idf holds a negative weight ({self.idf[row]}) for word {self.vocab[row]!r}")
        self._weights = self.idf if self.idf is not None else np.zeros(0, dtype=np.float32)

    @classmethod
    def from_hdf5_arrays(cls, vocab, embedding, idf=None) -> WordVectorEncoder:
        """Build from the datasets of a word-vector HDF5 file (e.g. data/wordnet-word2vec-100.h5).

        ``vocab`` may be what h5py returns for a string dataset: an array of UTF-8 ``bytes``
        (or of str). Reading the file is the caller's job::

            with h5py.File("data/wordnet-word2vec-100.h5", "r") as f:
                enc = WordVectorEncoder.from_hdf5_arrays(f["vocab"][()], f["embedding"][()], f["idf"][()])
        """
        words = []
        for i, w in enumerate(np.asarray(vocab, dtype=object).ravel().tolist()):
            if isinstance(w, bytes):
                try:
                    w = w.decode("utf-8")
                except UnicodeDecodeError:
                    raise InvalidInputError(f"vocab word {i} is not valid UTF-8: {w[:40]!r}") from None
            words.append(w)
        return cls(words, embedding, idf)

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[1])

    def config(self) -> dict:
        return {**self._base_config(), "output": "mean", "weighting": "idf" if self.idf is not None else "none",
                "normalize": "l2"}

    def arrays(self) -> dict[str, np.ndarray]:
        out = {"embedding": self.embedding}
        if self.idf is not None:
            out["idf"] = self.idf
        return out

    def _work_per_token(self) -> int:
        return self.dim

    def _run_kernel(self, offsets, ids, out, nparts, parallel) -> None:
        kernel = _kernels.weighted_mean_parallel if parallel else _kernels.weighted_mean_serial
        kernel(offsets, ids, self.embedding, self._weights, nparts, out)
