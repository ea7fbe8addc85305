"""Inverted file: documents partitioned into ``nlist`` lists by their nearest coarse centroid (L2).

An ``ivf<nlist>`` stage comes first in a chain (``ivf4096,pq32x4``, ``ivf1024,pca128,int8``): it
learns ``centroids`` (nlist, dim) with FAISS k-means, assigns each document to the list whose
centroid scores it highest by the store's metric, and passes vectors through unchanged, so the
stages after it encode each vector itself, not its residual. A tier with an ivf stage stores its
codes grouped by list (docs/format.md, "Inverted-file tiers"), and a search scans only the ``nprobe``
lists whose centroids are nearest the query: the codes of a list are those the same chain without
the ivf stage would produce, so with every list probed the tier answers exactly as that flat tier.

Why no residuals (FAISS's default for IVF-PQ): one set of lookup tables serves every probed list,
so a query costs its tables once, not once per list; the lists' codes can be copied from, or
compared with, the flat tier's; and two-stage search rescores the candidates anyway.
"""

from __future__ import annotations

import numpy as np

from ..errors import InvalidInputError
from .abc import Codec

# FAISS trains its IVF coarse quantizers with 10 iterations (Level1Quantizer cp.niter) too.
KMEANS_ITERATIONS = 10
# FAISS's default cap: a larger sample costs k-means time without better centroids.
MAX_POINTS_PER_LIST = 256
# Sampled vectors per list worth training on (FAISS warns below 39): compress's default sample size
# for an ivf codec, and the advice when a sample is too small.
IVF_TRAIN_PER_LIST = 40


class IVF(Codec):
    codec_id = "ivf"
    param_names = ("centroids",)
    code_dtype = np.dtype("f4")

    def __init__(self, dim: int | None = None, nlist: int = 0):
        super().__init__(dim)
        if isinstance(nlist, bool) or not isinstance(nlist, int) or nlist < 1:
            raise InvalidInputError(f"ivf needs nlist >= 1 lists, got {nlist!r} (e.g. 'ivf1024,pq32x4')")
        self.nlist = nlist

    def hyperparameters(self) -> dict:
        return {"nlist": self.nlist}

    def expected_param_shapes(self):
        return {"centroids": ((self.nlist, self.dim), np.dtype("<f4"))}

    def fit(self, sample: np.ndarray, *, seed: int = 0, metric: str = "l2") -> IVF:
        """Train the coarse centroids: FAISS k-means on ``sample``, at most 256 points a list. In ip
        and cosine stores spherical (centroids normalised, points assigned by inner product), as FAISS
        trains an inner-product IVF quantizer: the lists are then grouped by the score that ranks
        them at search time (:meth:`probe_scores`), and training took 39 s instead of 49 (262,144 x
        384 into 4,096 lists, 2 threads)."""
        import faiss

        if sample.shape[0] < self.nlist:
            raise InvalidInputError(
                f"ivf{self.nlist} needs at least {self.nlist} training vectors for {self.nlist} lists, got "
                f"{sample.shape[0]}: raise --train-size (ideally {IVF_TRAIN_PER_LIST * self.nlist}+) or use fewer lists"
            )
        km = faiss.Kmeans(self.dim, self.nlist, niter=KMEANS_ITERATIONS, seed=seed, spherical=metric != "l2",
                          max_points_per_centroid=MAX_POINTS_PER_LIST, verbose=False)
        km.train(np.ascontiguousarray(sample, dtype=np.float32))
        self.centroids_ = np.ascontiguousarray(km.centroids, dtype="<f4")
        return self

    def probe_scores(self, xq: np.ndarray, metric: str) -> np.ndarray:
        """(nq, nlist) float32, higher = nearer: ``q . c`` in ip and cosine stores (the list whose
        centroid the query would score highest, as FAISS's inner-product quantizer ranks them),
        ``2 q . c - |c|^2`` (= |q|^2 - |q - c|^2, the nearest centroid) in l2 stores. The lists a
        search scans are the ``nprobe`` highest. (On 1M clustered unit vectors, 8 of 4096 lists
        ranked by L2 held 0.90 of the true top 10, ranked and assigned by inner product 0.99.)"""
        self.check_fitted()
        scores = xq @ self.centroids_.T
        if metric != "l2":
            return np.asarray(scores, dtype=np.float32)
        return np.asarray(2.0 * scores - self.centroid_sqnorms, dtype=np.float32)

    @property
    def centroid_sqnorms(self) -> np.ndarray:
        norms = getattr(self, "_sqnorms", None)
        if norms is None:
            norms = self._sqnorms = (self.centroids_ * self.centroids_).sum(axis=1, dtype=np.float32)
        return norms

    def set_params(self, params, where: str = "parameters") -> IVF:
        self._sqnorms = None
        return super().set_params(params, where)

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return codes


def group_by_list(lists: np.ndarray, nlist: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's list (n,) -> (rows, offsets): ``rows`` (n,) int64 the rows in list order (by row
    within a list), ``offsets`` (nlist + 1,) int64 where list l is ``rows[offsets[l]:offsets[l+1]]``."""
    rows = np.argsort(lists, kind="stable").astype(np.int64)
    offsets = np.zeros(nlist + 1, dtype=np.int64)
    np.cumsum(np.bincount(lists, minlength=nlist), out=offsets[1:])
    return rows, offsets


def lists_of_positions(offsets: np.ndarray) -> np.ndarray:
    """(nlist + 1,) offsets -> (n,) int64: the list of each position of a list-ordered array."""
    return np.repeat(np.arange(offsets.shape[0] - 1, dtype=np.int64), np.diff(offsets))
