"""Elman recurrent network text encoder: three plain arrays and a tanh.

For a text whose known tokens (see :mod:`vecstore.encoders.tokenize`; unknown ones are skipped and
reported) are w_1 .. w_T, with E (V, h), W (h, h), b (h,):

    h_0 = 0
    h_t = tanh(E[w_t] + W h_(t-1) + b)          t = 1 .. T   (W times the column vector h_(t-1))
    y   = h_T                  (output="last")
    y   = (1/T) sum_t h_t      (output="mean")
    v   = y / ||y||_2

computed in float64 from the float32 parameters, v rounded to float32.

A PyTorch ``nn.Embedding`` + ``nn.RNN(nonlinearity="tanh")`` computes
``h_t = tanh(W_ih x_t + b_ih + W_hh h_(t-1) + b_hh)`` with ``x_t = emb[w_t]``; folding
``E = emb W_ih^T`` and ``b = b_ih + b_hh`` (with ``W = W_hh``) gives the same states:
see :meth:`ElmanEncoder.from_torch` and docs/encoders.md.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from . import _kernels
from ._common import TextEncoder, check_array

OUTPUTS = ("last", "mean")


class ElmanEncoder(TextEncoder):
    """Encode texts with a single-layer Elman RNN: the last hidden state, or the mean of all states.

    Parameters
    ----------
    vocab : list of str, length V
        The words, in the order of the embedding rows; distinct, non-empty.
    embedding : (V, h) float array
        E: the input contribution of each word (the input projection already applied).
    recurrent : (h, h) float array
        W, applied as ``W @ h_(t-1)``.
    bias : (h,) float array
        b, the sum of all biases.
    output : "last" or "mean"
        The state(s) the text vector is made of, before L2 normalisation.
    """

    kind = "elman"
    array_names = ("embedding", "recurrent", "bias")

    def __init__(self, vocab, embedding, recurrent, bias, output: str = "last"):
        if output not in OUTPUTS:
            raise InvalidInputError(f"output must be one of {OUTPUTS}, got {output!r}")
        super().__init__(vocab)
        self.output = output
        self.embedding = check_array(embedding, "embedding", (len(self.vocab), None))
        h = self.embedding.shape[1]
        self.recurrent = check_array(recurrent, "recurrent", (h, h))
        self.bias = check_array(bias, "bias", (h,))

    @classmethod
    def from_torch(cls, embedding_weight, weight_ih_l0, weight_hh_l0, bias_ih_l0, bias_hh_l0, vocab,
                   output: str = "last") -> ElmanEncoder:
        """Import the tensors of ``nn.Embedding(V, n)`` + ``nn.RNN(n, h, nonlinearity="tanh")``.

        Give them as numpy arrays (``t.detach().cpu().numpy()``); torch is not needed here. Only a
        single-layer, unidirectional tanh RNN maps onto this encoder (``num_layers=1``,
        ``bidirectional=False``; ``batch_first`` does not matter). Pass None for both biases of an
        RNN built with ``bias=False``.

        Parameters
        ----------
        embedding_weight : (V, n)    ``emb.weight``
        weight_ih_l0 : (h, n)        ``rnn.weight_ih_l0``
        weight_hh_l0 : (h, h)        ``rnn.weight_hh_l0``
        bias_ih_l0, bias_hh_l0 : (h,) or None
        vocab : V words, row i of ``emb.weight`` belongs to ``vocab[i]``

        The input projection is folded into the embedding, ``E = emb @ weight_ih_l0.T``, and the
        biases are added, ``b = bias_ih_l0 + bias_hh_l0`` (both in float64, stored as float32).
        Recipe (run where torch is installed)::

            arrays = {k: v.detach().cpu().numpy() for k, v in rnn.state_dict().items()}
            enc = ElmanEncoder.from_torch(emb.weight.detach().cpu().numpy(),
                                          arrays["weight_ih_l0"], arrays["weight_hh_l0"],
                                          arrays["bias_ih_l0"], arrays["bias_hh_l0"], vocab)
        """
        emb = check_array(embedding_weight, "embedding_weight", (None, None))
        n = emb.shape[1]
        w_ih = check_array(weight_ih_l0, "weight_ih_l0", (None, n))
        h = w_ih.shape[0]
        w_hh = check_array(weight_hh_l0, "weight_hh_l0", (h, h))
        if (bias_ih_l0 is None) != (bias_hh_l0 is None):
            raise InvalidInputError("give both bias_ih_l0 and bias_hh_l0, or neither (an RNN with bias=False)")
        if bias_ih_l0 is None:
            b = np.zeros(h, dtype=np.float64)
        else:
            b = (check_array(bias_ih_l0, "bias_ih_l0", (h,)).astype(np.float64)
                 + check_array(bias_hh_l0, "bias_hh_l0", (h,)))
        folded = emb.astype(np.float64) @ w_ih.astype(np.float64).T
        return cls(vocab, folded, w_hh, b, output=output)

    @property
    def dim(self) -> int:
        return int(self.embedding.shape[1])

    def config(self) -> dict:
        return {**self._base_config(), "output": self.output, "nonlinearity": "tanh", "normalize": "l2"}

    def arrays(self) -> dict[str, np.ndarray]:
        return {"embedding": self.embedding, "recurrent": self.recurrent, "bias": self.bias}

    def _work_per_token(self) -> int:
        return self.dim * self.dim

    def _run_kernel(self, offsets, ids, out, nparts, parallel) -> None:
        kernel = _kernels.elman_parallel if parallel else _kernels.elman_serial
        kernel(offsets, ids, self.embedding, self.recurrent, self.bias, self.output == "mean", nparts, out)
