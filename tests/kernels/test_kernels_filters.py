"""The filtered kernels (kernels/dispatch.py: scan_dense_rows, scan_pq with a mask) against numpy: only
allowed rows come back, with their exact scores, and they are the best k allowed rows."""

from __future__ import annotations

import numpy as np
import pytest

from vecstore.kernels import dispatch


def check_topk(scores, rows, reference, allowed, k):
    """rows are allowed, scores match the reference, and no allowed row beats the k-th score."""
    nq = reference.shape[0]
    want = min(k, int(allowed.sum()))
    assert scores.shape[0] == nq
    for q in range(nq):
        got = rows[q][rows[q] >= 0]
        assert got.shape[0] == want
        assert allowed[got].all()
        assert len(set(got.tolist())) == want
        np.testing.assert_allclose(scores[q, :want], reference[q, got], rtol=1e-4, atol=1e-4)
        best = np.sort(reference[q, allowed])[::-1][:want]
        np.testing.assert_allclose(np.sort(reference[q, got])[::-1], best, rtol=1e-4, atol=1e-4)


def masks(n, rng):
    yield "half", rng.random(n) < 0.5
    yield "sparse", rng.random(n) < 0.01
    few = np.zeros(n, bool)
    few[rng.choice(n, 3, replace=False)] = True
    yield "three", few
    yield "all", np.ones(n, bool)
    edge = np.zeros(n, bool)
    edge[[0, n - 1]] = True
    yield "edges", edge


@pytest.mark.parametrize("layout", ["f32", "i8", "f16"])
@pytest.mark.parametrize("nq", [1, 5, 40])
@pytest.mark.parametrize("with_bias", [False, True])
def test_dense_rows_scan(layout, nq, with_bias, monkeypatch):
    rng = np.random.default_rng(nq + 3)
    n, d, k = 3000, 24, 10
    x = rng.standard_normal((n, d)).astype(np.float32)
    codes = {"f32": x, "i8": np.clip(np.round(x * 40), -128, 127).astype(np.int8),
             "f16": x.astype(np.float16).view(np.uint16)}[layout]
    decoded = {"f32": x, "i8": codes.astype(np.float32), "f16": x.astype(np.float16).astype(np.float32)}[layout]
    bias = -rng.random(n).astype(np.float32) if with_bias else np.empty(0, np.float32)
    xq = rng.standard_normal((nq, d)).astype(np.float32)
    reference = xq.astype(np.float64) @ decoded.T.astype(np.float64) + (bias if with_bias else 0)
    monkeypatch.setattr(dispatch, "GEMM_MIN_ROWS", 0)  # batches of 40 take the BLAS path too
    for _, allowed in masks(n, rng):
        rows = np.flatnonzero(allowed)
        kk = min(k, rows.shape[0])
        scores, found = dispatch.scan_dense_rows(xq, codes, bias, kk, layout, rows)
        check_topk(scores, found, reference, allowed, kk)


def pq_reference(lut, codes, nbits, m):
    if nbits == 4:
        codes = np.stack([(codes[:, j // 2] >> (4 * (j % 2))) & 15 for j in range(m)], axis=1)
    out = np.zeros((lut.shape[0], codes.shape[0]))
    for j in range(m):
        out += lut[:, j, codes[:, j]]
    return out


@pytest.mark.parametrize("nbits, m", [(8, 8), (4, 16), (4, 7)])
@pytest.mark.parametrize("nq", [1, 3, 20])
@pytest.mark.parametrize("fast", [True, False])
def test_pq_masked_scan(nbits, m, nq, fast, monkeypatch):
    if nbits == 8 and not fast:
        pytest.skip("the fast scan is 4-bit only")
    rng = np.random.default_rng(m * 10 + nq)
    n, k = 2500, 10
    ksub = 1 << nbits
    lut = rng.standard_normal((nq, m, ksub)).astype(np.float32)
    full = rng.integers(0, ksub, size=(n, m))
    if nbits == 4:
        packed = np.zeros((n, (m + 1) // 2), np.uint8)
        for j in range(m):
            packed[:, j // 2] |= (full[:, j] << (4 * (j % 2))).astype(np.uint8)
        codes = packed
    else:
        codes = full.astype(np.uint8)
    bias = -rng.random(n).astype(np.float32)
    reference = pq_reference(lut.astype(np.float64), codes, nbits, m) + bias
    monkeypatch.setattr(dispatch, "FAST_SCAN", dispatch.FAST_SCAN and fast)
    blocked = dispatch.blocked_codes(codes, m, bias) if nbits == 4 and dispatch.FAST_SCAN else None
    for _, allowed in masks(n, rng):
        kk = min(k, int(allowed.sum()))
        layout = "pq4" if nbits == 4 else "pq8"
        scores, found = dispatch.scan_pq(lut, codes, bias, kk, layout, (lambda: blocked) if blocked is not None else None,
                                         allow=allowed.view(np.uint8))
        check_topk(scores, found, reference, allowed, kk)
