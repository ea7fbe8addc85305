"""PCA: project onto the leading principal components (an affine, non-terminal stage)."""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from .abc import Codec


# Below this many queries, the projection runs on numba's threads rather than BLAS's (see
# kernels.flat.project); from it on a BLAS product is faster.
FEW_QUERIES = 8


class PCA(Codec):
    """Keep ``n_components`` principal directions.

    encode: ``y = (x - mean) @ components.T``; decode: ``x = mean + y @ components``.
    components has orthonormal rows, sorted by explained variance; each row's sign is fixed so
    that its largest-magnitude coefficient is positive (deterministic across runs and libraries).
    fit: eigendecomposition of the sample covariance in float64.
    """

    codec_id = "pca"
    code_dtype = np.dtype("<f4")
    param_names = ("mean", "components")

    def __init__(self, dim: int | None = None, n_components: int = 0):
        super().__init__(dim)
        if isinstance(n_components, bool) or not isinstance(n_components, int) or n_components < 1:
            raise InvalidInputError(f"pca needs n_components >= 1, got {n_components!r}")
        if dim is not None and n_components > dim:
            raise InvalidInputError(
                f"pca{n_components}: n_components {n_components} > dimension {dim}; choose at most {dim}"
            )
        self.n_components = n_components

    def hyperparameters(self) -> dict:
        return {"n_components": self.n_components}

    @property
    def out_dim(self) -> int:
        return self.n_components

    def expected_param_shapes(self):
        return {"mean": ((self.dim,), np.dtype("<f4")),
                "components": ((self.n_components, self.dim), np.dtype("<f4"))}

    def fit(self, sample: np.ndarray, *, seed: int = 0) -> PCA:
        if sample.shape[0] < 2:
            raise InvalidInputError("pca needs at least 2 training vectors")
        n = sample.shape[0]
        mean = sample.mean(axis=0, dtype=np.float64)
        cov = np.zeros((sample.shape[1], sample.shape[1]), dtype=np.float64)
        for start in range(0, n, 4096):  # float64 blocks: the sample is never copied whole
            block = sample[start:start + 4096].astype(np.float64) - mean
            cov += block.T @ block
        cov /= max(1, n - 1)
        values, vectors = np.linalg.eigh(cov)
        top = vectors[:, ::-1][:, : self.n_components].T  # (c, d), by decreasing variance
        pivot = np.argmax(np.abs(top), axis=1)
        top *= np.sign(top[np.arange(top.shape[0]), pivot])[:, None]
        self.mean_ = mean.astype("<f4")
        self.components_ = np.ascontiguousarray(top, dtype="<f4")
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        self.check_fitted()
        return ((x - self.mean_) @ self.components_.T).astype(np.float32)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        self.check_fitted()
        return (np.asarray(codes, np.float32) @ self.components_ + self.mean_).astype(np.float32)

    def fold_query(self, xq, const):
        self.check_fitted()
        if xq.shape[0] < FEW_QUERIES:
            from ..kernels.flat import project

            projected = project(np.ascontiguousarray(xq, dtype=np.float32), self.components_)
        else:
            projected = (xq @ self.components_.T).astype(np.float32)
        return projected, const + xq @ self.mean_
