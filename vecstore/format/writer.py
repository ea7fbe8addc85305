"""Writing a whole store file in one streamed pass, atomically.

Stores are never modified in place (HDF5 does not survive crashes mid-write): building, adding a tier
or rewriting writes a complete new file beside the target and renames it into place. Each source
chunk of vectors is encoded into every tier that needs encoding, and tiers that already exist are
copied chunk by chunk from the old file's map, so memory stays at one chunk per tier.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import h5py
import numpy as np
from tqdm import tqdm

from .._version import __version__
from ..codecs import Pipeline, codec_string
from ..codecs.ivf import group_by_list
from ..errors import StoreWriteError, VecstoreError
from ..kernels import dispatch
from ..kernels.flat import sqnorms_f32
from . import schema as fmt


@dataclass
class TierPlan:
    """One tier of the file being written.

    ``copy_from`` holds an existing tier's (codes, sqnorms) to copy unchanged (an inverted-file
    tier's in list order, with its ``lists``: (offsets, rows)); without it, every source chunk is
    encoded with ``codec`` (an inverted-file tier's codes are gathered in RAM, then written in list
    order: they are small beside the vectors, which are never all in RAM).
    """

    name: str
    codec: Pipeline
    copy_from: tuple[np.ndarray, np.ndarray | None] | None = None
    calibration: dict | None = None
    lists: tuple[np.ndarray, np.ndarray] | None = None


class EncodedRows:
    """A tier encoded in RAM chunk by chunk: its codes, its norms (l2 stores) and, for an
    inverted-file codec, the list of each row. What the writer does with an inverted-file tier (its
    codes are written in list order, known only at the end) and what compress does with a tier it
    calibrates before writing."""

    def __init__(self, codec: Pipeline, count: int, metric: str):
        self.codec, self.metric = codec, metric
        self.codes = np.empty((count, codec.code_width), dtype=codec.code_dtype)
        self.norms = np.empty(count, dtype=np.float32) if metric == "l2" else None
        self.lists = np.empty(count, dtype=np.int64) if codec.ivf is not None else None

    def add(self, start: int, rows: np.ndarray) -> None:
        stop = start + rows.shape[0]
        self.codes[start:stop] = codes = self.codec.encode(rows)
        if self.norms is not None:
            self.norms[start:stop] = _sqnorms(self.codec, codes, rows)
        if self.lists is not None:
            self.lists[start:stop] = dispatch.assign_lists(rows, self.codec.ivf, self.metric)

    def arrays(self) -> tuple[tuple[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray] | None]:
        """((codes, norms), lists): in row order with lists None, or for an inverted-file codec in
        list order with lists (offsets, rows) (docs/format.md, "Inverted-file tiers")."""
        if self.lists is None:
            return (self.codes, self.norms), None
        rows, offsets = group_by_list(self.lists, self.codec.ivf.nlist)
        return (self.codes[rows], None if self.norms is None else self.norms[rows]), (offsets, rows)


@dataclass
class StoreContents:
    dim: int
    count: int
    metric: str
    ids: np.ndarray
    keys: list[str] | None = None
    metadata: list[str] | None = None  # JSON text per document ("" for none)
    model: dict | None = None
    encoders: dict | None = None  # name -> encoder (vecstore.encoders): config, vocab, arrays
    # filterable field -> (type, {dataset: array, "dictionary": list of strings}); docs/format.md "Fields"
    fields: dict | None = None
    store_id: str = field(default_factory=lambda: secrets.token_hex(16))  # names this file's contents


def _sqnorms(codec: Pipeline, codes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Squared norms of the decoded vectors (what l2 scoring subtracts)."""
    decoded = rows if codec.layout == "f32" and len(codec.stages) == 1 else codec.decode(codes)
    return sqnorms_f32(np.ascontiguousarray(decoded, dtype=np.float32))


def write_store(path: str, contents: StoreContents, tiers: list[TierPlan],
                source: Callable[[], Iterable[tuple[int, np.ndarray]]], *,
                progress: bool = False, description: str = "writing",
                before_rename: Callable[[], None] | None = None,
                release: Callable[[np.ndarray], None] | None = None) -> None:
    """Write a complete store at ``path`` (atomically). ``source()`` yields (start, float32 rows).
    ``before_rename()`` runs once the file is complete, just before it is renamed into place.
    ``release(chunk)``, if given, is called on every chunk copied from a ``copy_from`` array once it
    is written (StoreFile.release: a mapped tier's pages leave the resident set as they are copied).

    An operating-system failure (disk full, no permission) becomes a StoreWriteError; the
    temporary file is removed and ``path`` keeps what it held before.
    """
    try:
        _write_store(path, contents, tiers, source, progress=progress, description=description,
                     before_rename=before_rename, release=release)
    except VecstoreError:
        raise
    except OSError as exc:  # the environment's failures are StoreWriteErrors from fmt.atomic_target already
        reason = exc.strerror or str(exc).splitlines()[0]
        raise StoreWriteError(
            f"could not write {path!r}: {reason}; check free space and permissions (nothing was changed)"
        ) from None


def _write_store(path: str, contents: StoreContents, tiers: list[TierPlan],
                 source: Callable[[], Iterable[tuple[int, np.ndarray]]], *,
                 progress: bool, description: str, before_rename: Callable[[], None] | None = None,
                 release: Callable[[np.ndarray], None] | None = None) -> None:
    need_source = any(t.copy_from is None for t in tiers)
    with fmt.atomic_target(path, before_rename) as tmp:
        with fmt.create_file(tmp) as f:
            f.attrs[fmt.ATTR_FORMAT] = fmt.FORMAT_NAME
            f.attrs[fmt.ATTR_VERSION] = np.int64(fmt.version_for(t.codec for t in tiers))
            f.attrs[fmt.ATTR_WRITER] = __version__
            f.attrs[fmt.ATTR_DIM] = np.int64(contents.dim)
            f.attrs[fmt.ATTR_COUNT] = np.int64(contents.count)
            f.attrs[fmt.ATTR_METRIC] = contents.metric
            f.attrs[fmt.ATTR_STORE_ID] = contents.store_id
            if contents.model is not None:
                f.attrs[fmt.ATTR_MODEL] = json.dumps(contents.model, sort_keys=True)
            fmt.write_array(f, fmt.IDS, contents.ids.astype("<i8"))
            if contents.keys is not None:
                fmt.write_strings(f, fmt.KEYS, contents.keys)
            if contents.metadata is not None:
                fmt.write_strings(f, fmt.METADATA, contents.metadata)
            for name, encoder in (contents.encoders or {}).items():
                group = f.require_group(fmt.ENCODERS).create_group(name)
                group.attrs[fmt.ATTR_CONFIG] = json.dumps(encoder.config(), sort_keys=True)
                fmt.write_strings(group, fmt.VOCAB, list(encoder.vocab))
                arrays = group.create_group(fmt.ARRAYS)
                for aname, arr in encoder.arrays().items():
                    fmt.write_array(arrays, aname, np.asarray(arr))
            for name, (kind, datasets) in (contents.fields or {}).items():
                group = f.require_group(fmt.FIELDS).create_group(name)
                group.attrs[fmt.ATTR_FIELD_TYPE] = kind
                for dname, data in datasets.items():
                    if dname == fmt.DICTIONARY:
                        fmt.write_strings(group, dname, list(data))
                    else:
                        fmt.write_array(group, dname, np.asarray(data))
            tiers_group = f.create_group(fmt.TIERS)
            writers = []
            for plan in tiers:
                group = tiers_group.create_group(plan.name)
                group.attrs[fmt.ATTR_CODEC] = json.dumps(plan.codec.get_config(), sort_keys=True)
                group.attrs[fmt.ATTR_CODEC_STRING] = codec_string(plan.codec)
                if plan.calibration is not None:
                    group.attrs[fmt.ATTR_CALIBRATION] = json.dumps(plan.calibration, sort_keys=True)
                params = plan.codec.params()
                if params:
                    pgroup = group.create_group(fmt.PARAMS)
                    for pname, arr in params.items():
                        fmt.write_array(pgroup, pname, arr)
                codes = fmt.ChecksumWriter(group, fmt.CODES, (contents.count, plan.codec.code_width),
                                           plan.codec.code_dtype)
                norms = (fmt.ChecksumWriter(group, fmt.SQNORMS, (contents.count,), np.dtype("<f4"))
                         if contents.metric == "l2" else None)
                if plan.codec.ivf is not None and plan.copy_from is None:
                    listing = EncodedRows(plan.codec, contents.count, contents.metric)
                    writers.append((listing, codes, norms))
                else:
                    _write_lists(group, plan.name, plan.codec, plan.lists)
                    writers.append((plan, codes, norms))
            bar = tqdm(total=contents.count, unit="vec", desc=description, disable=not progress,
                       dynamic_ncols=True)
            with bar:
                for start, stop, rows in _chunks(source if need_source else None, contents.count):
                    for plan, codes_w, norms_w in writers:
                        if isinstance(plan, EncodedRows):
                            plan.add(start, rows)
                            continue
                        if plan.copy_from is not None:
                            old_codes, old_norms = plan.copy_from
                            codes_w.write(old_codes[start:stop])
                            if norms_w is not None:
                                norms_w.write(old_norms[start:stop])
                            if release is not None:
                                release(old_codes[start:stop])
                                if norms_w is not None:
                                    release(old_norms[start:stop])
                            continue
                        codes = plan.codec.encode(rows)
                        codes_w.write(codes)
                        if norms_w is not None:
                            norms_w.write(_sqnorms(plan.codec, codes, rows))
                    bar.update(stop - start)
            for plan, codes_w, norms_w in writers:
                if isinstance(plan, EncodedRows):  # in RAM: written whole, in list order
                    (codes, norms), lists = plan.arrays()
                    _write_lists(codes_w.dataset.parent, codes_w.dataset.parent.name, plan.codec, lists)
                    codes_w.write(codes)
                    if norms_w is not None:
                        norms_w.write(norms)
                codes_w.close()
                if norms_w is not None:
                    norms_w.close()
            listing: list[tuple[str, str, tuple]] = []
            f.visititems(lambda name, obj: listing.append((name, obj.dtype.str, obj.shape))
                         if isinstance(obj, h5py.Dataset) else None)
            f.attrs[fmt.ATTR_STORE_CHECKSUM] = fmt.store_checksum(contents.store_id, listing)


COPY_ROWS = 65536


def _write_lists(group: h5py.Group, name: str, codec: Pipeline, lists: tuple[np.ndarray, np.ndarray] | None) -> None:
    """An inverted-file tier's lists (offsets, rows) (docs/format.md, "Inverted-file tiers");
    nothing for other tiers."""
    if codec.ivf is None:
        return
    if lists is None:
        raise RuntimeError(f"tier {name!r}: an ivf tier copied from another needs its lists")
    offsets, rows = lists
    lists = group.create_group(fmt.LISTS)
    fmt.write_array(lists, fmt.LIST_OFFSETS, np.asarray(offsets, dtype="<i8"))
    fmt.write_array(lists, fmt.LIST_ROWS, np.asarray(rows, dtype="<i8"))


def _chunks(source, count: int) -> Iterator[tuple[int, int, np.ndarray | None]]:
    if source is None:
        for start in range(0, count, COPY_ROWS):
            yield start, min(start + COPY_ROWS, count), None
        return
    expected = 0
    for start, rows in source():
        if start != expected:
            raise RuntimeError(f"source chunks out of order: {start} after {expected}")
        expected = start + rows.shape[0]
        yield start, expected, rows
    if expected != count:
        raise RuntimeError(f"source yielded {expected} rows, expected {count}")
