"""StoreFile: one open vecstore file (a main store or an appended segment): its tiers, ids, string
columns and encoders, and the search of one resolved plan over it.

:class:`vecstore.Store` is what users hold: a StoreFile plus its appended segments and deletions.
Opening reads and validates the HDF5 header with h5py, closes it, and maps the file once with
``mmap``. From then on no HDF5 call is made: searches read the mapped tiers directly, so any number
of Python threads can search one open store at once (the kernels release the GIL).
"""

from __future__ import annotations

import builtins
import json
import os
import threading

import numpy as np

from ..errors import ClosedStoreError, FormatError, UnknownTierError, VecstoreError
from ..format import schema as fmt
from ..kernels import dispatch
from ..filters import Column
from ..filters.columns import column_from_arrays
from ..filters.strategy import choose_strategy
from ..plan import Plan, default_plan
from ..query import FilteredSearchResult, SearchResult, empty_result, filtered_result
from .closing import ClosesOnExit
from .masks import RowMask
from .tier import Tier, open_tier


class StringColumn:
    """Per-document strings stored as a UTF-8 blob plus offsets, decoded on demand."""

    def __init__(self, offsets: np.ndarray, data: np.ndarray, count: int, where: str):
        if offsets.shape != (count + 1,):
            raise FormatError(f"/{where}/offsets: shape {offsets.shape}, expected ({count + 1},)")
        self.offsets, self.data, self.where = offsets, data, where
        self._checked = False

    def _check(self) -> None:
        # Checked on first use, not at open, so that opening stays O(1) in the document count.
        if self._checked:
            return
        offs = self.offsets
        if offs.shape[0] and (offs[0] != 0 or offs[-1] != self.data.shape[0] or (np.diff(offs) < 0).any()):
            raise FormatError(f"/{self.where}/offsets do not describe /{self.where}/data; the file is damaged")
        self._checked = True

    def get(self, row: int) -> str:
        self._check()
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        try:
            return bytes(self.data[a:b]).decode("utf-8")
        except UnicodeDecodeError:
            raise FormatError(f"/{self.where}: entry {row} is not valid UTF-8; the file is damaged") from None


class StoreFile(ClosesOnExit):
    """One open, read-only vecstore file (see :class:`vecstore.Store` for the public view).

    Attributes
    ----------
    path : str
    dim, count : int
    metric : {"ip", "cosine", "l2"}
    tiers : dict[str, Tier]   the raw float32 tier and every compressed tier
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(os.fspath(path))
        # the identity checksum last: a damaged dataset is named by the checks of its own kind first
        header, file_map = fmt.open_store_file(self.path, check_identity=False)
        self.header = header
        attrs = header.attrs
        self.format_version: int = attrs[fmt.ATTR_VERSION]
        self.written_by: str = attrs[fmt.ATTR_WRITER]
        self.dim: int = attrs[fmt.ATTR_DIM]
        self.count: int = attrs[fmt.ATTR_COUNT]
        self.metric: str = attrs[fmt.ATTR_METRIC]
        self.model: dict | None = attrs[fmt.ATTR_MODEL]
        self._map = file_map
        self._lock = threading.Lock()
        self._id_index: tuple[np.ndarray, np.ndarray] | None = None
        self._ids_are_rows = False  # (set with the index)
        self._encoders: dict = {}
        self._random_access: set[str] = set()
        self._fields: dict[str, Column] | None = None
        try:
            ids_span = header.datasets[fmt.IDS]
            if ids_span.shape != (self.count,) or ids_span.dtype != np.dtype("<i8"):
                raise FormatError(f"/{fmt.IDS}: {ids_span.dtype.str}{ids_span.shape}, expected <i8({self.count},)")
            self.ids = self._map.array(ids_span)
            self._map.advise_random(ids_span)  # a search reads k ids at scattered rows
            self.keys_column = self._string_column(fmt.KEYS)
            self.metadata_column = self._string_column(fmt.METADATA)
            self.tiers: dict[str, Tier] = {
                name: open_tier(name, header, self._map, self.dim, self.count, self.metric)
                for name in header.tier_attrs
            }
            if self.format_version < fmt.IVF_FORMAT_VERSION and any(t.lists is not None for t in self.tiers.values()):
                raise FormatError(f"{self.path!r}: format version {self.format_version} cannot hold an inverted-file "
                                  "tier (version 2 can); the file was edited")
            fmt.check_store_checksum(header, self.path)
        except BaseException:
            self._map.close()
            raise
        self._closed = False

    def _string_column(self, name: str) -> StringColumn | None:
        offsets = self.header.datasets.get(f"{name}/offsets")
        if offsets is None:
            return None
        data = self.header.datasets[f"{name}/data"]
        if offsets.dtype != np.dtype("<i8") or data.dtype != np.dtype("u1") or len(data.shape) != 1:
            raise FormatError(f"/{name}: offsets must be <i8 and data u1 (1-D)")
        return StringColumn(self._map.array(offsets), self._map.array(data), self.count, name)

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the file mapping. Safe to call twice."""
        if getattr(self, "_closed", True):
            return
        self._closed = True
        self.tiers = {}
        self.ids = None
        self.keys_column = self.metadata_column = None
        self._id_index = None
        self._fields = None
        self._map.close()

    def __repr__(self) -> str:
        if self._closed:
            return f"<closed vecstore.StoreFile {self.path!r}>"
        return (f"<vecstore.StoreFile {self.path!r} count={self.count} dim={self.dim} "
                f"metric={self.metric!r} tiers={list(self.tiers)}>")

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedStoreError(f"store {self.path!r} is closed: open it again with vecstore.open()")

    # -- search ---------------------------------------------------------------------------------

    def tier(self, name: str | None = None) -> Tier:
        """The tier called ``name`` (default: the raw float32 tier)."""
        self._check_open()
        name = fmt.RAW_TIER if name is None else name
        try:
            return self.tiers[name]
        except KeyError:
            raise UnknownTierError(
                f"store has no tier {name!r}; tiers: {', '.join(self.tiers)} "
                "(add one with `vecstore compress`)"
            ) from None

    def default_plan(self) -> Plan:
        """The plan of a search given no tier options (see vecstore.plan.default_plan)."""
        self._check_open()
        return default_plan(self.tiers)

    def release(self, view: np.ndarray) -> None:
        """Drop the mapped pages of ``view`` (a tier's codes or a slice of them) from this process's
        resident set after a sequential pass (format.schema.FileMap.release); other arrays: nothing."""
        self._map.release(view)

    def rescoring_tier(self, name: str) -> Tier:
        """Tier ``name`` for rescoring: its mapped codes are read a few scattered rows at a time, so the
        first use turns readahead off for them (FileMap.advise_random)."""
        tier = self.tier(name)
        if name not in self._random_access:
            self._map.advise_random(self.header.datasets[f"{fmt.TIERS}/{name}/{fmt.CODES}"])
            self._random_access.add(name)
        return tier

    def search_plan(self, xq: np.ndarray, k: int, plan: Plan, nprobe: int | None = None) -> SearchResult:
        """Top-k of validated queries ``xq`` under a resolved ``plan`` (vecstore.plan.resolve_plan):
        scan the plan's tier (an inverted-file tier: ``nprobe`` lists), rescore ``k * oversample``
        candidates from its rescoring tier if it names one. ``k`` is validated and may exceed the
        count: the extra columns are padding."""
        kk = min(k, self.count)
        if kk == 0:
            return empty_result(xq.shape[0], k, self.metric)
        coarse = self.tier(plan.tier)
        if plan.rescore is None:
            scores, rows = coarse.scan(xq, kk, nprobe=nprobe)
        else:
            width = min(self.count, int(np.ceil(kk * plan.oversample)))
            _, candidates = coarse.scan(xq, width, candidates=True, nprobe=nprobe, any_order=True)
            scores, rows = self.rescoring_tier(plan.rescore).rescore(xq, candidates, kk)
        return SearchResult(*dispatch.finish(scores, rows, self.ids, k, self.metric, xq))

    def search_allowed(self, xq: np.ndarray, k: int, plan: Plan, allow: RowMask,
                       nprobe: int | None = None) -> FilteredSearchResult:
        """Top-k of validated queries among the rows ``allow`` admits, with the strategy used
        (:meth:`allowed_strategy`) and the admitted count: few allowed rows are scored exactly on the plan's fine tier;
        otherwise the plan's tier is scanned with the mask and, for a two-stage plan, its best
        ``k * oversample`` allowed rows are rescored. Fewer than k allowed: those, padded. (One to
        four queries usually take the fused path instead: vecstore.store.prepared.)"""
        kk, strategy = self.allowed_strategy(k, plan, allow.allowed)
        if kk == 0:
            return filtered_result(empty_result(xq.shape[0], k, self.metric), (strategy,), allow.allowed)
        mask = allow.mask
        if strategy == "exact":
            scores, rows = self.tier(plan.rescore or plan.tier).scan_allowed(xq, kk, mask, allow.rows())
        elif plan.rescore is None:
            tier = self.tier(plan.tier)
            rows = allow.rows() if tier.layout in dispatch.RESCORE_LAYOUTS and tier.lists is None else None
            scores, rows = tier.scan_allowed(xq, kk, mask, rows, nprobe=nprobe)
        else:
            width = min(allow.allowed, int(np.ceil(kk * plan.oversample)))
            _, candidates = self.tier(plan.tier).scan_allowed(xq, width, mask, candidates=True, nprobe=nprobe,
                                                              any_order=True)
            scores, rows = self.tier(plan.rescore).rescore(xq, candidates, kk)
        return filtered_result(dispatch.finish(scores, rows, self.ids, k, self.metric, xq), (strategy,), allow.allowed)

    def allowed_strategy(self, k: int, plan: Plan, allowed: int) -> tuple[int, str]:
        """(results to find, min(k, allowed); the strategy, vecstore.filters.strategy) of a
        filtered search of this file admitting ``allowed`` rows."""
        kk = min(k, allowed)
        return kk, choose_strategy(allowed, kk, self.dim, plan, self.count * self.tier(plan.tier).code_size)

    # -- filterable fields ----------------------------------------------------------------------

    @property
    def field_types(self) -> dict[str, str]:
        """Filterable field -> type ("int", "float", "bool", "string", "tags"); docs/format.md "Fields"."""
        return dict(self.header.field_types)

    def field_columns(self) -> dict[str, Column]:
        """Every field's column, mapped from the file and checked on first use (one pass each)."""
        self._check_open()
        with self._lock:
            if self._fields is None:
                self._fields = {name: self._field_column(name, kind) for name, kind in self.header.field_types.items()}
            return self._fields

    def _field_column(self, name: str, kind: str) -> Column:
        prefix = f"{fmt.FIELDS}/{name}"
        arrays = {}
        for part in fmt.FIELD_DATASETS[kind]:
            if part == fmt.DICTIONARY:
                offsets = self._map.array(self.header.datasets[f"{prefix}/{part}/offsets"])
                if offsets.dtype != np.dtype("<i8") or offsets.ndim != 1 or offsets.shape[0] < 1:
                    raise FormatError(f"/{prefix}/{part}/offsets: must be <i8 with at least one entry")
                column = StringColumn(offsets, self._map.array(self.header.datasets[f"{prefix}/{part}/data"]),
                                      offsets.shape[0] - 1, f"{prefix}/{part}")
                arrays[part] = [column.get(i) for i in range(offsets.shape[0] - 1)]
            else:
                arrays[part] = self._map.array(self.header.datasets[f"{prefix}/{part}"])
        return column_from_arrays(name, kind, self.count, arrays, f"/{prefix}")

    # -- documents ------------------------------------------------------------------------------

    def rows_of(self, ids) -> np.ndarray:
        """The row of each id (int64, -1 for an id this file does not hold), through an index of the
        ids made on first use: a binary search each, or, when the ids are the row numbers (as
        ``build`` gives them by default), none (allow= with 50,000 ids over 100,000 rows: 1.2 ms
        by binary search, 0.1 so)."""
        arr = np.asarray(ids, dtype=np.int64)
        with self._lock:
            if self._id_index is None:
                order = np.argsort(self.ids, kind="stable")
                sorted_ids = np.asarray(self.ids)[order]
                twice = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
                if twice.shape[0]:
                    raise FormatError(f"/{fmt.IDS}: id {int(sorted_ids[twice[0]])} appears more than once; "
                                      "the file was edited or damaged")
                self._id_index = (sorted_ids, order)
                self._ids_are_rows = bool((order == np.arange(self.count)).all() and
                                          (self.count == 0 or (sorted_ids[0] == 0 and sorted_ids[-1] == self.count - 1)))
        if self._ids_are_rows:  # distinct ids in row order from 0 to count - 1: id i is row i
            return np.where((arr >= 0) & (arr < self.count), arr, -1)
        sorted_ids, order = self._id_index
        pos = np.clip(np.searchsorted(sorted_ids, arr), 0, max(self.count - 1, 0))
        found = (self.count > 0) & (sorted_ids[pos] == arr) if self.count else np.zeros(arr.shape, bool)
        return np.where(found, order[pos], -1)

    def id_mask(self, ids) -> np.ndarray:
        """Boolean mask of this file's rows whose id is in ``ids`` (any order; repeats and ids it
        does not hold are ignored): each id looked up by :meth:`rows_of`, rather than each row
        searched among the ids (100,000 rows, one query with 5,000 allowed ids: 2.0 ms a call)."""
        rows = self.rows_of(ids)
        mask = np.zeros(self.count, dtype=bool)
        mask[rows[rows >= 0]] = True
        return mask

    # -- text queries ---------------------------------------------------------------------------

    @property
    def encoder_names(self) -> list[str]:
        """Names of the text encoders stored with this store (see :meth:`search_text`)."""
        return list(self.header.encoder_configs)

    def encoder(self, name: str | None = None):
        """The stored text encoder ``name`` (default: the only one), built from its plain arrays."""
        self._check_open()
        names = self.encoder_names
        if name is None:
            if len(names) != 1:
                raise UnknownTierError(
                    "store has no text encoder: add one with `vecstore add-encoder`" if not names else
                    f"store has several encoders ({', '.join(names)}): name one"
                )
            name = names[0]
        if name not in names:
            raise UnknownTierError(f"store has no encoder {name!r}; encoders: {', '.join(names) or 'none'}")
        with self._lock:
            if name not in self._encoders:
                self._encoders[name] = self._load_encoder(name)
        return self._encoders[name]

    def _load_encoder(self, name: str):
        prefix = f"{fmt.ENCODERS}/{name}"
        vocab = StringColumn(self._map.array(self.header.datasets[f"{prefix}/{fmt.VOCAB}/offsets"]),
                             self._map.array(self.header.datasets[f"{prefix}/{fmt.VOCAB}/data"]),
                             self.header.datasets[f"{prefix}/{fmt.VOCAB}/offsets"].shape[0] - 1,
                             f"{prefix}/{fmt.VOCAB}")
        arrays = {key[len(prefix) + len(fmt.ARRAYS) + 2:]: np.array(self._map.array(span))
                  for key, span in self.header.datasets.items()
                  if key.startswith(f"{prefix}/{fmt.ARRAYS}/")}
        from ..encoders import encoder_from_parts  # (not at import: the encoders import numba)

        try:
            return encoder_from_parts(self.header.encoder_configs[name],
                                      [vocab.get(i) for i in range(vocab.offsets.shape[0] - 1)], arrays)
        except VecstoreError as exc:
            raise FormatError(f"/{prefix}: {exc}") from None

    # -- memory ---------------------------------------------------------------------------------

    def load(self, tier: str) -> None:
        """Hold ``tier`` in private memory (typically the small coarse tier); others stay mapped. A
        4-bit tier held as fast-scan blocks (Tier.load) drops the mapped pages of the codes it read."""
        found = self.tier(tier)
        found.load()
        self.release(found.codes)

    def memory(self) -> dict:
        """Per tier, bytes held in private memory against bytes merely mapped; and the process's
        RssAnon (private) and RssFile (mapped pages in RAM) from /proc/self/status."""
        self._check_open()
        tiers = {name: t.memory() for name, t in self.tiers.items()}
        return {
            "tiers": tiers,
            "resident_bytes": sum(t["resident_bytes"] + t["param_bytes"] + t["fastscan_bytes"] for t in tiers.values()),
            "mapped_bytes": self.header.file_size,
            "process": process_memory(),
        }

    # -- reporting ------------------------------------------------------------------------------

    def info(self) -> dict:
        """A JSON-safe summary: count, dim, metric, format version, tiers with sizes."""
        self._check_open()
        return {
            "path": self.path,
            "format_version": self.format_version,
            "store_id": fmt.store_identity(self.header),
            "written_by": self.written_by,
            "count": self.count,
            "dim": self.dim,
            "metric": self.metric,
            "model": self.model,
            "has_keys": self.keys_column is not None,
            "has_metadata": self.metadata_column is not None,
            "fields": self.field_types,
            "file_bytes": self.header.file_size,
            "tiers": [t.describe() for t in self.tiers.values()],
            "default_search": list(self.default_plan()),
        }


def metadata_object(text: str) -> dict | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise FormatError(f"/{fmt.METADATA}: an entry is not a JSON object; the file is damaged")
    return value


def process_memory() -> dict:
    """RssAnon, RssFile and VmHWM of this process in bytes (Linux; empty elsewhere)."""
    out = {}
    try:
        with builtins.open("/proc/self/status") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name in ("RssAnon", "RssFile", "VmHWM", "VmRSS"):
                    out[name] = int(value.split()[0]) * 1024
    except OSError:
        pass
    return out
