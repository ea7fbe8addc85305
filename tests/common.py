"""Plain-numpy references that the kernels and stores are checked against."""

from __future__ import annotations

import numpy as np


def reference_scores(xq: np.ndarray, xb: np.ndarray, metric: str) -> np.ndarray:
    """Higher-is-better scores in float64: similarity, or minus the squared L2 distance."""
    q, b = xq.astype(np.float64), xb.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
    if metric == "l2":
        return -(((q[:, None, :] - b[None, :, :]) ** 2).sum(axis=2))
    return q @ b.T


def reference_search(xq, xb, k, metric):
    """Exact top-k by a stable sort: ties go to the lower row. Returns (distances, rows)."""
    scores = reference_scores(xq, xb, metric)
    rows = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(scores, rows, axis=1)
    return (-top if metric == "l2" else top), rows


def assert_knn(D, I, scores, metric, tol=1e-4):
    """Check a top-k result against full reference scores (nq, n), tolerating tied neighbours.

    Distances must match the reference's sorted top-k; every returned row must really score what
    its rank says (so swapped ids are accepted only between tied scores); no row twice.
    """
    k = I.shape[1]
    best = -np.sort(-scores, axis=1)[:, :k]
    expected = -best if metric == "l2" else best
    np.testing.assert_allclose(D, expected, rtol=tol, atol=tol)
    got = np.take_along_axis(scores, I, axis=1)
    np.testing.assert_allclose(got, best, rtol=tol, atol=tol)
    for row in I:
        assert len(set(row.tolist())) == k
