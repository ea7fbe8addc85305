"""The FAISS twin of every vecstore codec string, built the way a FAISS user would build it.

=====================  ======================  ==========================================
vecstore codec         FAISS index_factory     note
=====================  ======================  ==========================================
raw / float32          Flat                    IndexFlatIP (ip, cosine) or IndexFlatL2 (l2)
float16                SQfp16
int8, int8c<q>         SQ8                     per-dimension min/max, as vecstore's int8
pca<N>                 PCA<N>,Flat
pca<N>,float16         PCA<N>,SQfp16
pca<N>,int8            PCA<N>,SQ8
pq<M> (= pq<M>x8)      PQ<M>np                 IndexPQ; "np" = no polysemous training
pca<N>,pq<M>           PCA<N>,PQ<M>np
pq<M>x4                PQ<M>x4fs               fast-scan (SIMD shuffles), the same bytes
pca<N>,pq<M>x4         PCA<N>,PQ<M>x4fs
ivf<L>,<chain>         IVF<L>,<twin of chain>  e.g. IVF1024,PQ32x4fs; PCA first: PCA<N>,IVF<L>,...
=====================  ======================  ==========================================

Both sides get the same metric (inner product for ip and cosine, over unit vectors for cosine), the
same training sample (rows chosen as ``vecstore.compress`` chooses them: :func:`training_rows`) and
the same thread count (:func:`set_threads`). ``int8c<q>`` (clipped ranges) has no FAISS
counterpart; its twin is plain SQ8.

The 8-bit PQ twins are spelled ``PQ<M>np``: plain ``PQ<M>`` makes index_factory switch on polysemous
training, a simulated-annealing pass that only renumbers the centroids (for Hamming-distance
filtering, which a plain search never uses). Codebooks, codes up to that renumbering, and search
results are the same; without it FAISS's training time is measured for the work vecstore also does
(checked: PQ4 on 3,000 x 16 vectors trains in 12 s with it, 0.4 s without, identical results).

Inverted-file twins probe as many lists as the vecstore tier (:func:`set_nprobe`). FAISS's fast-scan
IVF-PQ encodes vectors, not residuals, as vecstore does; its 8-bit IVF-PQ and SQ8 encode residuals
(their recall differs for that reason). FAISS applies a PCA before assigning lists, vecstore after.

One difference is FAISS's, not ours, and shows in PCA rows: FAISS's PCA pre-transform subtracts
the mean from queries and documents alike, so with inner product it ranks by (q - m).(x - m), not
q.x; vecstore folds the mean back into the score.
"""

from __future__ import annotations

import time

import numpy as np

from ..codecs import parse_codec_string

_NO_TRAIN = ("Flat", "SQfp16")


def twin_factory_string(codec: str) -> str:
    """The index_factory string of a vecstore codec string (validated by vecstore's parser)."""
    text = codec.strip().lower()
    if text in ("raw", "float32"):
        return "Flat"
    stages = parse_codec_string(text)
    parts, ivf = [], None
    for cfg in stages:
        cid = cfg["id"]
        if cid == "ivf":
            ivf = f"IVF{cfg['nlist']}"
        elif cid == "pca":
            parts.append(f"PCA{cfg['n_components']}")
        elif cid == "float32":
            parts.append("Flat")
        elif cid == "float16":
            parts.append("SQfp16")
        elif cid == "int8":
            parts.append("SQ8")
        elif cid == "pq":
            parts.append(f"PQ{cfg['m']}" + ("x4fs" if cfg["nbits"] == 4 else "np"))
        else:  # pragma: no cover - parse_codec_string is a closed allow-list
            raise ValueError(f"no FAISS twin for codec stage {cid!r}")
    if ivf is not None:  # after FAISS's pre-transforms, before the codes
        parts.insert(sum(p.startswith("PCA") for p in parts), ivf)
    return ",".join(parts)


def set_nprobe(index, nprobe: int) -> None:
    """Probe ``nprobe`` lists in an inverted-file twin (any wrapping: pre-transform, refine)."""
    import faiss

    faiss.extract_index_ivf(index).nprobe = int(nprobe)


def faiss_metric(metric: str) -> int:
    import faiss

    if metric in ("ip", "cosine"):
        return faiss.METRIC_INNER_PRODUCT
    if metric == "l2":
        return faiss.METRIC_L2
    raise ValueError(f"metric {metric!r} is not one of ip, cosine, l2")


def set_threads(threads: int | None = None) -> int:
    """Use ``threads`` (default: numba's current count) in numba, FAISS's OpenMP and both BLAS."""
    import faiss
    import numba

    from .. import _runtime  # noqa: F401  (numba's threading layer, set before numba starts threads)

    from .metrics import set_blas_threads

    n = int(threads or numba.get_num_threads())
    set_blas_threads(n)          # FAISS's OpenBLAS is OpenMP-based: set it before omp_set_num_threads
    faiss.omp_set_num_threads(n)
    numba.set_num_threads(n)
    return n


def training_rows(count: int, size: int, seed: int) -> np.ndarray:
    """The rows ``vecstore.compress(train_size=size, seed=seed)`` trains on (sorted), or all rows."""
    if size >= count:
        return np.arange(count)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(count, size=size, replace=False))


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """Unit rows, computed exactly as vecstore's cosine build does (float32)."""
    x = np.asarray(x, dtype=np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def code_size(index) -> int:
    """Bytes per vector the index stores (its codes; pre-transform matrices not included)."""
    try:
        return int(index.sa_code_size())
    except RuntimeError:
        return int(index.code_size)


def build_twin(codec: str, database, *, metric: str, train: np.ndarray | None = None,
               chunk_rows: int = 16384) -> tuple[object, dict]:
    """Build, train (on ``train``) and fill the twin of ``codec`` with ``database``.

    Parameters
    ----------
    database : (n, d) float32 array or memory map, already unit-normalized for cosine (e.g. the
        store's raw tier); added in chunks.
    train : (t, d) float32, the same sample vecstore trained on; not needed for Flat / SQfp16.

    Returns
    -------
    index, and {"factory", "code_size", "train_s", "add_s"}.
    """
    import faiss

    factory = twin_factory_string(codec)
    d = database.shape[1]
    index = faiss.index_factory(d, factory, faiss_metric(metric))
    t0 = time.perf_counter()
    if not index.is_trained:
        if train is None:
            raise ValueError(f"{factory} needs a training sample")
        index.train(np.ascontiguousarray(train, dtype=np.float32))
    t1 = time.perf_counter()
    for start in range(0, database.shape[0], chunk_rows):
        index.add(np.ascontiguousarray(database[start:start + chunk_rows], dtype=np.float32))
    t2 = time.perf_counter()
    return index, {"factory": factory, "code_size": code_size(index), "train_s": t1 - t0,
                   "add_s": t2 - t1}


def needs_training(codec: str) -> bool:
    return twin_factory_string(codec) not in _NO_TRAIN


def bytes_per_vector(codec: str, dim: int) -> int:
    """Code bytes per vector of the twin, as FAISS reports it for the (untrained) index."""
    import faiss

    return code_size(faiss.index_factory(dim, twin_factory_string(codec)))

