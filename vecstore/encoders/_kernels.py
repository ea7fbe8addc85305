"""Numba forward passes of the text encoders, batched over texts.

Texts arrive as token ids in CSR form: text i's known tokens are ``ids[offsets[i]:offsets[i+1]]``
(int64 offsets, int32 ids), so a batch of one long and many short texts costs no padding. Each
kernel is compiled twice from one body, serial and ``parallel=True`` (as umap does; each with a cache
entry of its own, vecstore.kernels.compiled): the serial one
serves single queries on the calling thread, the parallel one splits a batch into ``nparts`` runs
of texts, one scratch row per part allocated before the ``prange`` loop.

Sums and states are kept in float64 from float32 parameters; the unit-length result is rounded to
float32 once. A vector whose squared norm is 0 is written as zeros (the caller decides what that
means). Inputs are validated before these run: ids in range, parameters finite.
"""

from __future__ import annotations

import math

import numpy as np
from numba import prange

from ..kernels.compiled import compiled

NJIT = dict(nogil=True, fastmath=True, boundscheck=False, cache=True)


def _make_mean(parallel: bool):
    def weighted_mean(offsets, ids, embedding, weights, nparts, out):
        """out[i] = normalise(sum_t weights[w_t] * embedding[w_t]); weights (0,) means all 1."""
        n = offsets.shape[0] - 1
        d = embedding.shape[1]
        use_weights = weights.shape[0] > 0
        acc = np.empty((nparts, d), dtype=np.float64)
        step = (n + nparts - 1) // nparts
        for p in prange(nparts):
            for i in range(p * step, min(p * step + step, n)):
                for j in range(d):
                    acc[p, j] = 0.0
                for t in range(offsets[i], offsets[i + 1]):
                    w = ids[t]
                    c = np.float64(weights[w]) if use_weights else 1.0
                    for j in range(d):
                        acc[p, j] += c * np.float64(embedding[w, j])
                ss = 0.0
                for j in range(d):
                    ss += acc[p, j] * acc[p, j]
                inv = 1.0 / math.sqrt(ss) if ss > 0.0 else 0.0
                for j in range(d):
                    out[i, j] = np.float32(acc[p, j] * inv)

    return compiled(weighted_mean, parallel, NJIT)


def _make_elman(parallel: bool):
    def elman(offsets, ids, embedding, recurrent, bias, mean_output, nparts, out):
        """h_0 = 0; h_t = tanh(E[w_t] + W h_(t-1) + b); out[i] = normalise(h_T or sum_t h_t)."""
        n = offsets.shape[0] - 1
        h = embedding.shape[1]
        prev = np.empty((nparts, h), dtype=np.float64)
        nxt = np.empty((nparts, h), dtype=np.float64)
        acc = np.empty((nparts, h), dtype=np.float64)
        step = (n + nparts - 1) // nparts
        for p in prange(nparts):
            for i in range(p * step, min(p * step + step, n)):
                for r in range(h):
                    prev[p, r] = 0.0
                    acc[p, r] = 0.0
                for t in range(offsets[i], offsets[i + 1]):
                    w = ids[t]
                    for r in range(h):
                        s = np.float64(embedding[w, r]) + np.float64(bias[r])
                        for c in range(h):
                            s += np.float64(recurrent[r, c]) * prev[p, c]
                        nxt[p, r] = math.tanh(s)
                    for r in range(h):
                        prev[p, r] = nxt[p, r]
                        acc[p, r] += nxt[p, r]
                ss = 0.0
                for r in range(h):
                    v = acc[p, r] if mean_output else prev[p, r]
                    ss += v * v
                inv = 1.0 / math.sqrt(ss) if ss > 0.0 else 0.0
                for r in range(h):
                    v = acc[p, r] if mean_output else prev[p, r]
                    out[i, r] = np.float32(v * inv)

    return compiled(elman, parallel, NJIT)


weighted_mean_serial = _make_mean(False)
weighted_mean_parallel = _make_mean(True)
elman_serial = _make_elman(False)
elman_parallel = _make_elman(True)
