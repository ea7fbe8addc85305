"""Product quantization: m sub-quantizers of 2**nbits centroids each (nbits 8 or 4).

The vector is cut into m consecutive sub-vectors of ``dsub = dim / m`` values; sub-vector j is
replaced by the index of its nearest centroid (L2) in ``codebooks[j]``.

decode: ``x[j*dsub:(j+1)*dsub] = codebooks[j, c_j]``.
codes: nbits=8 -> uint8 (n, m), c_j in column j. nbits=4 -> uint8 (n, ceil(m/2)), two codes a
byte: c_(2i) in the low nibble of byte i, c_(2i+1) in its high nibble (a zero nibble pads odd m).
fit: faiss k-means per sub-space (25 iterations, the given seed).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np

from ..errors import InvalidInputError
from .abc import Codec

KMEANS_ITERATIONS = 25
# Below this many queries the tables are computed by a numba loop on the calling thread (one query:
# 6 us through BLAS and numpy's reshapes, about 1 us in the loop).
FEW_QUERIES = 8


def _kernels():
    """kernels/pq.py, imported on first use: opening a store imports no numba (a fresh process's
    `vecstore search` of a small store answers in numpy, issue 17); after that, a dictionary lookup."""
    from ..kernels import pq

    return pq


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """(n, m) codes < 16 -> (n, ceil(m/2)) bytes, even columns in the low nibble."""
    n, m = codes.shape
    if m % 2:
        codes = np.concatenate([codes, np.zeros((n, 1), dtype=codes.dtype)], axis=1)
    return (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, m: int) -> np.ndarray:
    """Inverse of :func:`pack_nibbles`."""
    out = np.empty((packed.shape[0], packed.shape[1] * 2), dtype=np.uint8)
    out[:, 0::2] = packed & 0x0F
    out[:, 1::2] = packed >> 4
    return out[:, :m]


def divisors_near(dim: int, m: int) -> list[int]:
    divs = [d for d in range(1, dim + 1) if dim % d == 0]
    return sorted(divs, key=lambda d: (abs(d - m), d))[:3]


class PQ(Codec):
    codec_id = "pq"
    param_names = ("codebooks",)
    code_dtype = np.dtype("u1")

    def __init__(self, dim: int | None = None, m: int = 0, nbits: int = 8):
        super().__init__(dim)
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise InvalidInputError(f"pq needs m >= 1 sub-quantizers, got {m!r}")
        if nbits not in (4, 8):
            raise InvalidInputError(f"pq supports nbits 8 (pq{m}) or 4 (pq{m}x4), got {nbits!r}")
        if dim is not None and dim % m:
            raise InvalidInputError(
                f"pq{m}: m = {m} does not divide the dimension {dim}; use m in "
                f"{divisors_near(dim, m)}, or reduce the dimension first (e.g. 'pca{m * max(1, dim // m)},pq{m}')"
            )
        self.m, self.nbits = m, nbits

    @property
    def layout(self) -> str:
        return "pq8" if self.nbits == 8 else "pq4"

    @property
    def ksub(self) -> int:
        return 1 << self.nbits

    @property
    def dsub(self) -> int:
        return self.dim // self.m

    def hyperparameters(self) -> dict:
        return {"m": self.m, "nbits": self.nbits}

    @property
    def code_width(self) -> int:
        return self.m if self.nbits == 8 else (self.m + 1) // 2

    def expected_param_shapes(self):
        return {"codebooks": ((self.m, self.ksub, self.dsub), np.dtype("<f4"))}

    @property
    def fit_steps(self) -> int:
        """Steps :meth:`fit` reports to its ``progress`` callback: one k-means per sub-quantizer."""
        return self.m

    def fit(self, sample: np.ndarray, *, seed: int = 0,
            progress: Callable[[int, int], None] | None = None) -> PQ:
        """Train the m codebooks; ``progress(done, m)``, if given, is called on the calling thread
        each time a sub-quantizer's k-means finishes."""
        import faiss

        if sample.shape[0] < self.ksub:
            raise InvalidInputError(
                f"pq needs at least {self.ksub} training vectors for {self.ksub} centroids, got "
                f"{sample.shape[0]}: raise --train-size or use fewer bits"
            )
        books = np.empty((self.m, self.ksub, self.dsub), dtype="<f4")

        def train(j: int) -> None:
            # one OpenMP thread per sub-space (faiss releases the GIL): small k-means problems
            # lose more to thread synchronisation than they gain, so sub-spaces run side by side
            faiss.omp_set_num_threads(1)
            sub = np.ascontiguousarray(sample[:, j * self.dsub:(j + 1) * self.dsub], dtype=np.float32)
            km = faiss.Kmeans(self.dsub, self.ksub, niter=KMEANS_ITERATIONS, seed=seed + j,
                              max_points_per_centroid=256, min_points_per_centroid=1, verbose=False)
            km.train(sub)
            books[j] = km.centroids

        from .. import _runtime  # noqa: F401  (numba's threading layer before its threads start)
        import numba

        with ThreadPoolExecutor(max(1, numba.get_num_threads())) as pool:
            for done, future in enumerate(as_completed([pool.submit(train, j) for j in range(self.m)]), 1):
                future.result()
                if progress is not None:
                    progress(done, self.m)
        self.codebooks_ = books
        return self

    def assign(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) -> (n, m) centroid indices (unpacked): the nearest by L2, the lowest on ties."""
        self.check_fitted()
        return _kernels().nearest_codes(np.ascontiguousarray(x, dtype=np.float32), self.codebooks_)

    def encode(self, x: np.ndarray) -> np.ndarray:
        codes = self.assign(np.asarray(x, dtype=np.float32))
        return codes if self.nbits == 8 else pack_nibbles(codes)

    def unpack(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes, dtype=np.uint8)
        return codes if self.nbits == 8 else unpack_nibbles(codes, self.m)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        self.check_fitted()
        idx = self.unpack(codes)
        parts = [self.codebooks_[j][idx[:, j]] for j in range(self.m)]
        return np.concatenate(parts, axis=1).astype(np.float32)

    def table_codebooks(self) -> np.ndarray:
        """The codebooks transposed to (m, dsub, ksub), which kernels/pq.py's lookup_tables reads
        beside them; made once per codebooks array (a refit or set_params makes them again)."""
        self.check_fitted()
        books = self.codebooks_
        made = self.__dict__.get("_table_books")
        if made is None or made[0] is not books:
            made = (books, np.ascontiguousarray(books.transpose(0, 2, 1)))
            self._table_books = made
        return made[1]

    def lookup_tables(self, xq: np.ndarray) -> np.ndarray:
        """(nq, m, ksub) float32: q_j . codebooks[j, c], so a code's score is a sum of m lookups."""
        self.check_fitted()
        if xq.shape[0] < FEW_QUERIES:
            return _kernels().lookup_tables(np.ascontiguousarray(xq, dtype=np.float32), self.codebooks_,
                                            self.table_codebooks())
        # one batched matrix product per sub-space (BLAS); einsum here was 5-7x slower (1,000 queries,
        # 4096 dims: 284 ms for pq64, 25 ms for pq128x4, against 55 and 4)
        sub = np.asarray(xq, dtype=np.float32).reshape(xq.shape[0], self.m, self.dsub).transpose(1, 0, 2)
        tables = np.matmul(sub, self.codebooks_.transpose(0, 2, 1))   # (m, nq, ksub)
        return np.ascontiguousarray(tables.transpose(1, 0, 2))
