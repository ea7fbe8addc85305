"""Benchmark support: workloads with exact ground truth, measurement helpers and FAISS twins.

Not imported by ``vecstore`` itself. ``datasets`` and ``metrics`` need only numpy and h5py at import
time; ``faiss_twins`` (with pq.py's k-means, the only place that imports faiss) is imported on use.

- :mod:`vecstore.bench.datasets`: :class:`~vecstore.bench.datasets.Dataset` (ann-benchmarks files,
  the fc7-like lift of real embeddings, a clustered synthetic generator) and blockwise exact
  ground truth.
- :mod:`vecstore.bench.metrics`: recall@k (tie-tolerant), timers, /proc memory, machine description.
- :mod:`vecstore.bench.faiss_twins`: the FAISS index_factory twin of every vecstore codec string.
"""
