"""Readers for vectors, keys and metadata (numpy arrays, .npy, .fvecs, HDF5 datasets, ann-benchmarks
files), and :func:`prepare_rows`, the one validation every vector passes before a kernel sees it.

Every reader streams rows in chunks through :meth:`VectorSource.chunks`, so building a store from a
1.6 GB ``.npy`` holds one chunk in memory at a time. Files are read with plain ``readinto`` rather
than mapped, so pages of the input do not accumulate in the process's resident set either.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import h5py
import numpy as np

from .format.schema import open_h5_readonly
from .errors import FormatError, InvalidDtypeError, InvalidInputError, StoreNotFoundError

CHUNK_BYTES = 32 << 20
ANN_DISTANCE_TO_METRIC = {"angular": "cosine", "euclidean": "l2", "dot": "ip", "ip": "ip"}


def check_numeric_dtype(dtype: np.dtype, where: str) -> None:
    """Accept real numbers only: floats, signed and unsigned integers."""
    if dtype.kind not in "fiu" or dtype.names is not None:
        raise InvalidDtypeError(
            f"{where}: dtype {dtype} is not numeric; give float32 (or any real float/int) vectors"
        )


# Vectors and queries must keep |x|^2 below this, so that no score (2 q.x - |x|^2 at worst) can
# overflow float32 inside a kernel.
MAX_SQNORM = float(np.finfo(np.float32).max) / 4
FLOAT64_MAX = float(np.finfo(np.float64).max)


# Rows whose float64 copy (the norms, and a cosine store's division) :func:`prepare_rows` makes at a
# time: a build's chunk of rows costs 8 bytes a value more only this many rows at a time (it made
# the whole chunk's float64 quotient before).
PREPARE_CHUNK_ROWS = 1024


def prepare_rows(rows: np.ndarray, metric: str, first_row: int, where: str) -> np.ndarray:
    """The one check every vector passes before a kernel sees it (stored rows and queries alike):
    finite, unit-normalised for cosine (norms in float64, so huge rows stay finite), and for ip/l2
    small enough that no score can overflow float32. Returns C-contiguous float32 rows; errors
    name the first offending row counted from ``first_row``.

    One pass computes the float64 squared norms, and they alone decide: a float64 sum of float32
    squares cannot overflow, so a norm is finite exactly when its row is. (A query pays this on
    every search: two reductions of nq numbers instead of a pass over every value.)"""
    if rows.dtype != np.float32 or not rows.flags.c_contiguous:
        with np.errstate(over="ignore"):  # values beyond float32 become inf and are refused below
            rows = np.ascontiguousarray(rows, dtype=np.float32)
    cosine = metric == "cosine"
    if rows.shape[0] <= PREPARE_CHUNK_ROWS:
        return _prepared(rows, cosine, first_row, where)
    out = np.empty_like(rows) if cosine else rows
    for start in range(0, rows.shape[0], PREPARE_CHUNK_ROWS):
        part = _prepared(rows[start:start + PREPARE_CHUNK_ROWS], cosine, first_row + start, where)
        if cosine:
            out[start:start + PREPARE_CHUNK_ROWS] = part
    return out


def _prepared(rows: np.ndarray, cosine: bool, first_row: int, where: str) -> np.ndarray:
    """:func:`prepare_rows` of a few float32 rows. A cosine store's rows are divided as a float64
    copy, in place: the same bits as dividing the float32 rows by the float64 norms, which numpy
    casts element by element (one 384-d query 4.2 -> 3.9 us). The norms stay einsum's over the
    float32 rows: over a float64 copy they are faster, but from about 8,192 dims their sums
    differ between a row alone and the same row in a batch (einsum over the float32 rows, through
    its cast buffer, gives every row the same sum either way)."""
    sq = np.einsum("ij,ij->i", rows, rows, dtype=np.float64)
    if sq.shape[0]:
        # one row's extremes as Python floats: two numpy reductions cost a query 2 us
        lo, hi = (float(sq[0]),) * 2 if sq.shape[0] == 1 else (sq.min(), sq.max())
        if not (hi <= (FLOAT64_MAX if cosine else MAX_SQNORM) and (lo > 0 or not cosine)):  # (NaN fails both)
            _refuse(sq, cosine, first_row, where)
    if not cosine:
        return rows
    x64 = rows.astype(np.float64)
    x64 /= math.sqrt(lo) if sq.shape[0] == 1 else np.sqrt(sq)[:, None]
    return x64.astype(np.float32)


def _refuse(sq: np.ndarray, cosine: bool, first_row: int, where: str) -> None:
    """The error for the first row :func:`prepare_rows` refuses, by its squared norm ``sq``."""
    bad = ~np.isfinite(sq)
    if bad.any():
        row = first_row + int(np.argmax(bad))
        raise InvalidInputError(f"{where}: row {row} contains NaN or Inf; clean or drop that row and try again")
    if cosine:
        row = first_row + int(np.argmax(sq == 0))
        raise InvalidInputError(f"{where}: row {row} is all zeros; cosine similarity is undefined for it")
    at = int(np.argmax(sq > MAX_SQNORM))
    raise InvalidInputError(
        f"{where}: row {first_row + at} has values so large that scores would overflow float32 "
        f"(squared norm {sq[at]:.3g}); scale the vectors down"
    )


@dataclass
class VectorSource:
    """Rows of a 2-D array, read ``chunk_rows`` at a time as float32.

    ``reader(start, stop)`` returns rows ``start:stop`` in any numeric dtype.
    """

    description: str
    shape: tuple[int, int]
    dtype: np.dtype
    reader: object
    metric_hint: str | None = None

    def chunk_rows(self) -> int:
        return max(1, CHUNK_BYTES // max(1, self.shape[1] * 4))

    def chunks(self, chunk_rows: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        step = chunk_rows or self.chunk_rows()
        for start in range(0, self.shape[0], step):
            stop = min(start + step, self.shape[0])
            rows = np.asarray(self.reader(start, stop))
            if rows.shape != (stop - start, self.shape[1]):
                raise FormatError(f"{self.description}: rows {start}..{stop} could not be read whole")
            yield start, rows.astype(np.float32, copy=False)

    def read_all(self) -> np.ndarray:
        """All rows as one float32 array (for queries and samples, not for whole corpora)."""
        out = np.empty(self.shape, dtype=np.float32)
        for start, rows in self.chunks():
            out[start:start + rows.shape[0]] = rows
        return out


def from_array(array: np.ndarray, description: str = "vectors") -> VectorSource:
    """Wrap an in-memory (or memory-mapped) array."""
    if not isinstance(array, np.ndarray):
        try:
            array = np.asarray(array)
        except (ValueError, TypeError) as exc:
            raise InvalidInputError(f"{description}: cannot be read as an array ({exc})") from None
    check_numeric_dtype(array.dtype, description)
    if array.ndim != 2:
        hint = "; for one vector pass x.reshape(1, -1)" if array.ndim == 1 else ""
        raise InvalidInputError(f"{description}: expected a 2-D array (n, dim), got shape {array.shape}{hint}")
    return VectorSource(description, (int(array.shape[0]), int(array.shape[1])), array.dtype,
                        lambda a, b: array[a:b])


def _npy_source(path: str) -> VectorSource:
    with open(path, "rb") as fh:
        if fh.read(6) != b"\x93NUMPY":
            raise FormatError(f"{path!r} is not a valid .npy file (it does not start with the .npy magic "
                              "\\x93NUMPY); save the array with numpy.save")
    try:  # mapped only to read the header; rows are read with readinto below
        header = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise FormatError(f"{path!r} is not a valid .npy file ({exc})") from None
    if not isinstance(header, np.memmap):
        raise FormatError(f"{path!r} is not a plain .npy array file")
    shape, dtype, data_offset = header.shape, header.dtype, header.offset
    fortran = header.ndim > 1 and header.flags.f_contiguous and not header.flags.c_contiguous
    del header
    check_numeric_dtype(dtype, path)
    if fortran:
        raise InvalidInputError(f"{path!r}: Fortran-ordered .npy is not supported; save it C-ordered")
    if len(shape) != 2:
        raise InvalidInputError(f"{path!r}: expected a 2-D array (n, dim), got shape {shape}")
    n, dim = shape
    row_bytes = dim * dtype.itemsize

    def reader(start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, dim), dtype=dtype)
        with open(path, "rb") as fh:
            fh.seek(data_offset + start * row_bytes)
            fh.readinto(memoryview(out).cast("B"))
        return out

    return VectorSource(path, (int(n), int(dim)), dtype, reader)


def _vecs_source(path: str, dtype: np.dtype) -> VectorSource:
    """.fvecs / .ivecs: each row is an int32 dimension followed by that many values."""
    size = os.path.getsize(path)
    if size < 4:
        raise FormatError(f"{path!r}: empty or truncated {os.path.splitext(path)[1]} file")
    dim = int(np.fromfile(path, dtype="<i4", count=1)[0])
    if dim <= 0 or dim > 1 << 20:
        raise FormatError(f"{path!r}: first row claims dimension {dim}; not a .fvecs file")
    row_bytes = 4 + dim * dtype.itemsize
    if size % row_bytes:
        raise FormatError(f"{path!r}: size {size} is not a multiple of the row size {row_bytes}")
    n = size // row_bytes

    def reader(start: int, stop: int) -> np.ndarray:
        raw = np.fromfile(path, dtype="<i4", count=(stop - start) * (row_bytes // 4),
                          offset=start * row_bytes).reshape(stop - start, row_bytes // 4)
        if (raw[:, 0] != dim).any():
            row = start + int(np.argmax(raw[:, 0] != dim))
            raise FormatError(f"{path!r}: row {row} has dimension {raw[row - start, 0]}, not {dim}")
        return raw[:, 1:].view(dtype)

    return VectorSource(path, (int(n), dim), dtype, reader)


def _h5_dataset(path: str, dataset: str) -> tuple[VectorSource, str | None]:
    try:
        fh = open_h5_readonly(path)
    except OSError as exc:
        raise FormatError(f"{path!r} could not be opened as HDF5 ({exc})") from None
    metric = None
    with fh:
        distance = fh.attrs.get("distance")
        if isinstance(distance, bytes):
            distance = distance.decode()
        metric = ANN_DISTANCE_TO_METRIC.get(distance) if isinstance(distance, str) else None
        if dataset not in fh or not isinstance(fh[dataset], h5py.Dataset):
            found = ", ".join(k for k in fh if isinstance(fh[k], h5py.Dataset)) or "none"
            raise InvalidInputError(f"{path!r} has no dataset {dataset!r} (datasets: {found})")
        ds = fh[dataset]
        check_numeric_dtype(ds.dtype, f"{path}:{dataset}")
        if ds.ndim != 2:
            raise InvalidInputError(f"{path}:{dataset}: expected 2-D (n, dim), got shape {ds.shape}")
        shape, dtype = (int(ds.shape[0]), int(ds.shape[1])), ds.dtype

    def reader(start: int, stop: int) -> np.ndarray:
        with open_h5_readonly(path) as f:
            return f[dataset][start:stop]

    return VectorSource(f"{path}:{dataset}", shape, dtype, reader, metric), metric


def split_h5_path(text: str) -> tuple[str, str | None]:
    """``file.h5:/group/dset`` -> (file, dataset); a plain path -> (path, None)."""
    if ":" in text and not os.path.exists(text):
        path, _, dataset = text.rpartition(":")
        return path, dataset.lstrip("/") or None
    return text, None


def open_vectors(source, *, description: str = "vectors", prefer: str = "train") -> VectorSource:
    """Turn an array or a path into a :class:`VectorSource`.

    Paths: ``.npy``; ``.fvecs``; ``file.h5:/dataset``; an ann-benchmarks HDF5 file, read from its
    ``prefer`` dataset ("train" for documents, "test" for queries); its ``distance`` attribute
    becomes the metric hint.
    """
    if isinstance(source, VectorSource):
        return source
    if not isinstance(source, (str, os.PathLike)):
        return from_array(source, description)
    path, dataset = split_h5_path(os.fspath(source))
    if not os.path.exists(path):
        raise StoreNotFoundError(f"input {path!r} does not exist")
    ext = os.path.splitext(path)[1].lower()
    if dataset is not None:
        return _h5_dataset(path, dataset)[0]
    if ext == ".npy":
        return _npy_source(path)
    if ext == ".fvecs":
        return _vecs_source(path, np.dtype("<f4"))
    if ext == ".ivecs":
        return _vecs_source(path, np.dtype("<i4"))
    if h5py.is_hdf5(path):
        with open_h5_readonly(path) as fh:
            if prefer not in fh:
                raise InvalidInputError(
                    f"{path!r} is HDF5 without a {prefer!r} dataset: name one as {path}:/DATASET"
                )
        return _h5_dataset(path, prefer)[0]
    raise InvalidInputError(
        f"{path!r}: unknown input type {ext!r}; give .npy, .fvecs, an HDF5 file:/dataset, "
        "or an ann-benchmarks .hdf5"
    )


def read_keys(source, count: int) -> list[str]:
    """Keys from a list, a text file (one per line) or an HDF5 string dataset (``file.h5:/dset``)."""
    if source is None:
        return []
    if isinstance(source, (str, os.PathLike)):
        path, dataset = split_h5_path(os.fspath(source))
        if not os.path.exists(path):
            raise StoreNotFoundError(f"keys file {path!r} does not exist")
        if dataset is not None or h5py.is_hdf5(path):
            if dataset is None:
                raise InvalidInputError(f"{path!r} is HDF5: name the keys dataset as {path}:/DATASET")
            with open_h5_readonly(path) as fh:
                if dataset not in fh:
                    raise InvalidInputError(f"{path!r} has no dataset {dataset!r}")
                ds = fh[dataset]
                if ds.dtype.kind not in "OS" or h5py.check_string_dtype(ds.dtype) is None:
                    raise InvalidDtypeError(f"{path}:{dataset} is not a string dataset")
                keys = [k.decode("utf-8") if isinstance(k, bytes) else str(k) for k in ds[()]]
        else:
            with open(path, encoding="utf-8") as fh:
                keys = fh.read().splitlines()
    else:
        keys = list(source)
        if not all(isinstance(k, str) for k in keys):
            raise InvalidInputError("keys must be strings (titles, URLs, ...)")
    if len(keys) != count:
        raise InvalidInputError(f"{len(keys)} keys for {count} vectors: give exactly one key per vector")
    _check_utf8(keys, "key")
    return keys


def _check_utf8(texts: list[str], what: str) -> None:
    """Refuse a text that UTF-8 cannot store (a lone surrogate such as "\\ud800"), naming its row."""
    try:
        "".join(texts).encode("utf-8")
    except UnicodeEncodeError:
        row = next(i for i, t in enumerate(texts) if not t.isascii() and _bad_utf8(t))
        raise InvalidInputError(
            f"{what} {row} is not valid Unicode text (it holds a lone surrogate, {texts[row]!r}); "
            "fix or re-decode that entry"
        ) from None


def _bad_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def int64_ids(ids, what: str = "ids") -> np.ndarray:
    """Integer ids as an int64 array, or an InvalidInputError naming the first id beyond int64.
    Python ints too large for int64 arrive as an object array and are named, never wrapped."""
    if isinstance(ids, (list, tuple)) and all(type(v) is int for v in ids):
        ids = np.array(ids, dtype=object)  # numpy would turn [3, 2**64 - 1] into floats
    try:
        arr = np.asarray(ids)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{what} must be a list of integers ({exc})") from None
    if arr.size == 0:
        return arr.astype("<i8")
    if arr.dtype == object and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in arr.flat):
        big = next((int(v) for v in arr.flat if not -(1 << 63) <= v < 1 << 63), None)
        if big is not None:
            raise InvalidInputError(f"id {big} does not fit in int64 (ids lie in 0..{(1 << 63) - 1}); "
                                    "nothing was changed")
        arr = arr.astype("<i8")
    if arr.dtype.kind not in "iu":
        raise InvalidInputError(f"{what} must be a list of integers")
    if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise InvalidInputError(f"id {int(arr.max())} does not fit in int64 (ids lie in 0..{(1 << 63) - 1}); "
                                "nothing was changed")
    return arr.astype("<i8")


def as_ids(ids: Sequence[int] | np.ndarray | None, count: int) -> np.ndarray:
    """Caller ids as unique int64 other than -1 (which pads search results), or 0..count-1."""
    if ids is None:
        return np.arange(count, dtype="<i8")
    arr = int64_ids(ids)
    if arr.ndim != 1:
        raise InvalidInputError("ids must be a 1-D array of integers")
    if arr.shape[0] != count:
        raise InvalidInputError(f"{arr.shape[0]} ids for {count} vectors: give exactly one id per vector")
    if count and (arr == -1).any():
        raise InvalidInputError(f"id -1 (row {int(np.argmax(arr == -1))}) is reserved: it marks padding in search "
                                "results; give that document another id")
    if count:
        uniq, counts = np.unique(arr, return_counts=True)
        if uniq.shape[0] != count:
            dup = int(uniq[np.argmax(counts > 1)])
            raise InvalidInputError(f"id {dup} appears more than once; ids must be unique")
    return arr


def prepared_chunks(source: VectorSource, metric: str):
    """A chunk generator factory (what the store writer reads): ``source``'s rows in chunks, each
    passed through :func:`prepare_rows` as it streams past."""

    def chunks():
        for start, rows in source.chunks():
            yield start, prepare_rows(rows, metric, start, source.description)

    return chunks


def read_metadata(metadata, count: int) -> list[str] | None:
    """Per-document metadata as canonical JSON texts (sorted keys, "" for none), from ``count``
    dicts (or None) or a JSON-lines file."""
    if metadata is None:
        return None
    if isinstance(metadata, (str, os.PathLike)):
        path = os.fspath(metadata)
        if not os.path.exists(path):
            raise StoreNotFoundError(f"metadata file {path!r} does not exist")
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
        items = []
        for i, line in enumerate(lines):
            try:
                items.append(json.loads(line) if line.strip() else None)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}: line {i + 1} is not JSON ({exc.msg})") from None
    else:
        items = list(metadata)
    if len(items) != count:
        raise InvalidInputError(f"{len(items)} metadata entries for {count} vectors: give one per vector")
    texts = []
    for i, item in enumerate(items):
        if item is not None and not isinstance(item, dict):
            raise InvalidInputError(f"metadata entry {i} must be a JSON object (dict) or None")
        try:
            texts.append("" if item is None else json.dumps(item, ensure_ascii=False, sort_keys=True,
                                                               allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"metadata entry {i} is not JSON-serialisable ({exc})") from None
    _check_utf8(texts, "metadata entry")
    return texts
