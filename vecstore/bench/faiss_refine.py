"""FAISS twins as a sweep needs them: their memory measured, and a refine stage for two-stage rows.

- :func:`build_twin_sized` builds the twin of a codec with :func:`vecstore.bench.faiss_twins.build_twin`
  (same factory string, same training sample) and also measures the bytes its trained parameters
  take, by serializing the trained index before any vector is added: PCA matrices (FAISS's
  ``PCAMatrix`` keeps the full d x d eigenvector matrix too), codebooks, SQ ranges.
- :func:`add_refine` wraps a filled twin in ``IndexRefineFlat`` (factory ``...,RFlat``: the raw
  float32 vectors in RAM) or ``IndexRefine`` over an ``SQfp16`` index (``...,Refine(SQfp16)``), the
  FAISS way to rescore ``k x k_factor`` candidates. FAISS keeps everything in RAM, so its resident
  bytes are its code bytes plus the refine vectors plus parameters.
"""

from __future__ import annotations

import time

import numpy as np

from . import faiss_twins


def build_twin_sized(codec: str, database, *, metric: str, train: np.ndarray | None,
                     chunk_rows: int = 16384) -> tuple[object, dict]:
    """Twin of ``codec`` (``"raw"`` = Flat) trained on ``train`` and filled with ``database``.

    Returns the index and {"factory", "code_size", "param_bytes", "train_s", "add_s"}.
    """
    import faiss

    name = "float32" if codec == "raw" else codec
    index, info = faiss_twins.build_twin(name, database[:0], metric=metric,
                                         train=train if faiss_twins.needs_training(name) else None)
    info["param_bytes"] = int(faiss.serialize_index(index).nbytes)  # trained, still empty
    t0 = time.perf_counter()
    for start in range(0, database.shape[0], chunk_rows):
        index.add(np.ascontiguousarray(database[start:start + chunk_rows], dtype=np.float32))
    info["add_s"] = time.perf_counter() - t0
    return index, info


def add_refine(index, database, *, fine: str, metric: str) -> tuple[object, dict]:
    """``index`` wrapped in a refine stage over ``database`` (fine "raw": IndexRefineFlat; "float16":
    IndexRefine(SQfp16)). Set ``k_factor`` on the result to choose the oversampling.

    Returns the wrapper and {"refine_bytes_per_vector", "add_s"}.
    """
    import faiss

    d = database.shape[1]
    t0 = time.perf_counter()
    if fine == "raw":
        xb = np.ascontiguousarray(database, dtype=np.float32)
        wrapper = faiss.IndexRefineFlat(index, faiss.swig_ptr(xb))   # copies xb into its own storage
        per_vector = 4 * d
    elif fine == "float16":
        refine = faiss.IndexScalarQuantizer(d, faiss.ScalarQuantizer.QT_fp16, faiss_twins.faiss_metric(metric))
        for start in range(0, database.shape[0], 16384):
            refine.add(np.ascontiguousarray(database[start:start + 16384], dtype=np.float32))
        wrapper = faiss.IndexRefine(index, refine)
        per_vector = 2 * d
    else:
        raise ValueError(f"no FAISS refine stage for fine tier {fine!r}")
    # the wrapper does not own its parts: keep them alive with it (as faiss's own Python code does)
    wrapper.referenced_objects = [index] + ([refine] if fine == "float16" else [])
    return wrapper, {"refine_bytes_per_vector": per_vector, "add_s": time.perf_counter() - t0}
