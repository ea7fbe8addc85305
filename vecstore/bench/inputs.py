"""The user's data for ``vecstore bench``: database rows, queries and (when known) ground truth.

INPUT may be a vecstore store (its raw tier), a ``.npy`` / ``.fvecs`` / ``FILE.h5:/DATASET`` of
vectors, or an ann-benchmarks ``.hdf5`` (``train`` the database, ``test`` the queries, ``neighbors``
the ground truth, ``distance`` the metric). Rows are streamed (:class:`vecstore.ingest.VectorSource`),
never loaded whole; only the queries are read into memory.

- ``n``: use the first n rows of the input only (a quick run).
- ``holdout``: take that many rows (seeded, uniformly from the first n) out of the database and use
  them as queries. The default when neither ``queries`` nor an ann-benchmarks test set is there:
  min(1000, n / 10) rows.
- ``ground_truth``: a file of database row numbers (nq, >= k) for the queries (``.npy``, ``.ivecs``,
  ``FILE.h5:/DATASET``, or an ann-benchmarks file's ``neighbors``). Without it, an ann-benchmarks file's
  shipped neighbours are used when the whole train set and its test queries are searched; otherwise
  :mod:`vecstore.bench.groundtruth` computes the exact answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..format import schema as fmt
from ..errors import FormatError, InvalidInputError, StoreNotFoundError
from ..ingest import VectorSource, open_vectors, split_h5_path
from . import datasets

MAX_DEFAULT_QUERIES = 1000
METRICS = ("ip", "cosine", "l2")


@dataclass
class Workload:
    """What one bench run searches.

    Attributes
    ----------
    name : short label for figures and file names (the input's stem, with ``-n<n>`` when cut).
    kind : "store", "ann-benchmarks" or "vectors".
    input_path : the INPUT argument as given (for the commands that reproduce a result).
    metric : "ip", "cosine" or "l2".
    database : the rows searched, (nb, dim), streamed.
    queries : (nq, dim) float32.
    groundtruth : (nq, depth) int64 database rows, best first; None = compute it exactly.
    input_rows : rows of the whole input (before ``n`` and ``holdout``): the corpus size a total
        memory budget is checked against.
    """

    name: str
    kind: str
    input_path: str
    metric: str
    database: VectorSource
    queries: np.ndarray
    queries_from: str
    queries_path: str | None
    groundtruth: np.ndarray | None
    groundtruth_from: str
    input_rows: int
    notes: list[str] = field(default_factory=list)

    @property
    def dim(self) -> int:
        return self.database.shape[1]

    @property
    def nb(self) -> int:
        return self.database.shape[0]

    @property
    def nq(self) -> int:
        return self.queries.shape[0]

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "input": self.input_path, "metric": self.metric,
                "nb": self.nb, "d": self.dim, "nq": self.nq, "input_rows": self.input_rows,
                "queries": self.queries_from, "groundtruth": self.groundtruth_from, "notes": self.notes}


def is_store(path: str) -> bool:
    """Whether ``path`` is a vecstore file (an HDF5 file whose root says format=vecstore)."""
    if not os.path.isfile(path) or not h5py.is_hdf5(path):
        return False
    try:
        with fmt.open_h5_readonly(path) as f:
            value = f.attrs.get(fmt.ATTR_FORMAT)
    except OSError:
        return False
    return (value.decode() if isinstance(value, bytes) else value) == fmt.FORMAT_NAME


def is_ann_benchmarks(path: str) -> bool:
    """An HDF5 file (named without a dataset) that holds ``train`` and ``test``."""
    if not os.path.isfile(path) or not h5py.is_hdf5(path):
        return False
    with fmt.open_h5_readonly(path) as f:
        return all(isinstance(f.get(name), h5py.Dataset) for name in ("train", "test"))


def _first_rows(source: VectorSource, n: int) -> VectorSource:
    return VectorSource(source.description, (n, source.shape[1]), source.dtype, source.reader,
                        source.metric_hint)


def _without_rows(source: VectorSource, drop: np.ndarray) -> VectorSource:
    """``source`` with the (sorted) rows ``drop`` left out, still streamed."""
    keep = np.setdiff1d(np.arange(source.shape[0]), drop, assume_unique=True)

    def reader(start: int, stop: int) -> np.ndarray:
        rows = keep[start:stop]
        if rows.shape[0] == 0:
            return np.empty((0, source.shape[1]), dtype=source.dtype)
        block = np.asarray(source.reader(int(rows[0]), int(rows[-1]) + 1))
        return block[rows - rows[0]]

    return VectorSource(f"{source.description} without {drop.shape[0]} held-out rows",
                        (int(keep.shape[0]), source.shape[1]), source.dtype, reader, source.metric_hint)


def _read_rows(source: VectorSource, rows: np.ndarray) -> np.ndarray:
    """The given sorted rows of ``source`` as float32, read chunk by chunk."""
    out = np.empty((rows.shape[0], source.shape[1]), dtype=np.float32)
    step = source.chunk_rows()
    done = 0
    for start in range(0, source.shape[0], step):
        stop = min(start + step, source.shape[0])
        hi = int(np.searchsorted(rows, stop))
        if hi > done:
            block = np.asarray(source.reader(start, stop))
            out[done:hi] = block[rows[done:hi] - start]
            done = hi
        if done == rows.shape[0]:
            break
    return out


def _check_queries(queries: np.ndarray, dim: int, where: str) -> np.ndarray:
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise InvalidInputError(f"{where}: queries of shape {queries.shape}, but the input has dimension {dim}")
    if queries.shape[0] == 0:
        raise InvalidInputError(f"{where}: no queries")
    if not np.isfinite(queries).all():
        row = int(np.argmax(~np.isfinite(queries).all(axis=1)))
        raise InvalidInputError(f"{where}: query {row} contains NaN or Inf")
    return np.ascontiguousarray(queries, dtype=np.float32)


def read_groundtruth(path: str, nq: int, nb: int) -> np.ndarray:
    """Database rows (nq, depth) int64 from ``.npy`` / ``.ivecs`` / ``FILE.h5:/DATASET`` / ann-benchmarks."""
    file, _ = split_h5_path(path)
    if not os.path.exists(file):
        raise StoreNotFoundError(f"--ground-truth {path!r} does not exist")
    source = open_vectors(path, prefer="neighbors", description="ground truth")
    if source.dtype.kind not in "iu":
        raise InvalidInputError(f"--ground-truth {path!r}: dtype {source.dtype}; expected integer row "
                                "numbers (nq, k) of the database, best first")
    ids = np.asarray(source.reader(0, source.shape[0])).astype(np.int64)
    if ids.shape[0] != nq:
        raise InvalidInputError(f"--ground-truth {path!r} has {ids.shape[0]} rows for {nq} queries: "
                                "give one row of neighbours per query")
    if ids.size and (ids.min() < 0 or ids.max() >= nb):
        raise InvalidInputError(
            f"--ground-truth {path!r} names database row {int(ids.max() if ids.max() >= nb else ids.min())}, "
            f"outside 0..{nb - 1}: it was computed over a different database (drop --n, or the file)")
    return ids


def load_workload(input_path: str, *, queries: str | None = None, holdout: int | None = None,
                  ground_truth: str | None = None, n: int | None = None, metric: str | None = None,
                  seed: int = 0, max_queries: int = MAX_DEFAULT_QUERIES) -> Workload:
    """Resolve INPUT and the query options into a :class:`Workload` (see the module docstring)."""
    if queries is not None and holdout is not None:
        raise InvalidInputError("give --queries FILE or --holdout N, not both")
    if metric is not None and metric not in METRICS:
        raise InvalidInputError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    for value, name in ((n, "--n"), (holdout, "--holdout")):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    file, dataset = split_h5_path(input_path)
    if not os.path.exists(file):
        raise StoreNotFoundError(f"input {file!r} does not exist")
    notes: list[str] = []
    stem = os.path.splitext(os.path.basename(file))[0]
    ann = None
    if dataset is None and is_store(file):
        import vecstore

        with vecstore.open(file) as store:
            store_metric = store.metric
        if metric is not None and metric != store_metric:
            raise InvalidInputError(f"--metric {metric} differs from the store's metric {store_metric}")
        metric = store_metric
        kind = "store"
        source = open_vectors(f"{file}:/{fmt.TIERS}/{fmt.RAW_TIER}/{fmt.CODES}")
    elif dataset is None and is_ann_benchmarks(file):
        kind = "ann-benchmarks"
        source = open_vectors(file, prefer="train")
        if n is not None and n > source.shape[0]:
            raise InvalidInputError(f"--n {n} is more than the {source.shape[0]} vectors of {input_path}")
        try:
            ann = datasets.AnnBenchmarksDataset(file, n=n)
        except ValueError as exc:  # unknown distance attribute, ...
            raise FormatError(str(exc)) from None
        metric = metric or ann.metric
    else:
        kind = "vectors"
        source = open_vectors(input_path)
        metric = metric or source.metric_hint or "ip"
    total = source.shape[0]
    if total == 0 or source.shape[1] == 0:
        raise InvalidInputError(f"{input_path}: empty input (shape {source.shape})")
    if n is not None:
        if n > total:
            raise InvalidInputError(f"--n {n} is more than the {total} vectors of {input_path}")
        source = _first_rows(source, n)
    rows = source.shape[0]
    name = stem if rows == total else f"{stem}-n{rows}"

    queries_path = None
    gt, gt_from = None, "exact (computed with vecstore's exact search on the raw tier)"
    if queries is not None:
        q = open_vectors(queries, prefer="test", description="queries").read_all()
        q = _check_queries(q, source.shape[1], f"--queries {queries}")
        queries_from, queries_path = f"{q.shape[0]} queries from {queries}", queries
    elif holdout is None and ann is not None:
        nq = min(max_queries, _test_rows(file))
        q = open_vectors(file, prefer="test", description="queries").reader(0, nq)
        q = _check_queries(np.asarray(q, dtype=np.float32), source.shape[1], f"{file}:/test")
        queries_from, queries_path = f"the first {nq} rows of {os.path.basename(file)}:/test", file
        if ground_truth is None and ann.uses_shipped_groundtruth and metric == ann.metric:
            ann.nq = nq
            gt = ann.get_groundtruth(ann.shipped_k)
            gt_from = f"shipped ({os.path.basename(file)}:/neighbors, top {gt.shape[1]})"
    else:
        if holdout is None:
            if ground_truth is not None:
                raise InvalidInputError("--ground-truth needs --queries: held-out queries renumber the "
                                        "database rows the file refers to")
            holdout = min(max_queries, max(1, rows // 10))
            notes.append(f"no --queries given: {holdout} rows held out as queries (--holdout to change)")
        if ground_truth is not None:
            raise InvalidInputError("--ground-truth cannot be used with --holdout (the held-out rows "
                                    "renumber the database); give --queries with it")
        if holdout >= rows:
            raise InvalidInputError(f"--holdout {holdout} is not less than the {rows} input vectors: "
                                    "hold out fewer rows or use more (--n)")
        rng = np.random.default_rng(seed)
        held = np.sort(rng.choice(rows, size=holdout, replace=False))
        q = _check_queries(_read_rows(source, held), source.shape[1], f"{input_path} (held-out rows)")
        source = _without_rows(source, held)
        queries_from = f"{holdout} rows held out from the input (seed {seed}) and removed from the database"
    if ground_truth is not None:
        gt = read_groundtruth(ground_truth, q.shape[0], source.shape[0])
        gt_from = f"from {ground_truth} (top {gt.shape[1]})"
    return Workload(name=name, kind=kind, input_path=input_path, metric=metric, database=source,
                    queries=q, queries_from=queries_from, queries_path=queries_path, groundtruth=gt,
                    groundtruth_from=gt_from, input_rows=total, notes=notes)


def _test_rows(path: str) -> int:
    with fmt.open_h5_readonly(path) as f:
        return int(f["test"].shape[0])
