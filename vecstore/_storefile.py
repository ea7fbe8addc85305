"""StoreFile: one open vecstore file (a main store or an appended segment), its tiers and search.

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
from typing import NamedTuple

import numpy as np

from . import _format as fmt
from ._closing import ClosesOnExit
from .errors import ClosedStoreError, FormatError, InvalidInputError, UnknownTierError, VecstoreError
from .search import SearchResult, check_k, finish, prepare_queries
from .tier import Tier, open_tier


DEFAULT_OVERSAMPLE = 4.0


class TextSearchResult(NamedTuple):
    """``D, I, unknown = store.search_text(texts, k)``: as SearchResult, plus the words of each
    text that the encoder's vocabulary does not know (they were skipped)."""

    distances: np.ndarray
    ids: np.ndarray
    unknown_words: list[list[str]]


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
        header, file_map = fmt.open_store_file(self.path)
        self._header = header
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
        self._encoders: dict = {}
        try:
            ids_span = header.datasets[fmt.IDS]
            if ids_span.shape != (self.count,) or ids_span.dtype != np.dtype("<i8"):
                raise FormatError(f"/{fmt.IDS}: {ids_span.dtype.str}{ids_span.shape}, expected <i8({self.count},)")
            self.ids = self._map.array(ids_span)
            self._keys = self._string_column(fmt.KEYS)
            self._metadata = self._string_column(fmt.METADATA)
            self.tiers: dict[str, Tier] = {
                name: open_tier(name, header, self._map, self.dim, self.count, self.metric)
                for name in header.tier_attrs
            }
        except BaseException:
            self._map.close()
            raise
        self._closed = False

    def _string_column(self, name: str) -> StringColumn | None:
        offsets = self._header.datasets.get(f"{name}/offsets")
        if offsets is None:
            return None
        data = self._header.datasets[f"{name}/data"]
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
        self._keys = self._metadata = None
        self._id_index = None
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

    def default_plan(self) -> tuple[str, str | None, float | None]:
        """(tier, rescore, oversample) used when search() is given no tier options.

        The smallest tier whose calibration met its recall target and whose rescoring tier exists;
        exact search on the raw tier when there is none.
        """
        self._check_open()
        calibrated = [t for t in self.tiers.values()
                      if t.calibration and t.calibration.get("meets_target")
                      and self._can_refine(t, t.calibration["rescore"])]
        if not calibrated:
            return fmt.RAW_TIER, None, None
        best = min(calibrated, key=lambda t: (t.bytes_per_vector, t.name))
        return best.name, best.calibration["rescore"], float(best.calibration["oversample"])

    def _can_refine(self, coarse: Tier, fine_name: str) -> bool:
        fine = self.tiers.get(fine_name)
        try:
            return fine is not None and (fine.check_rescores(coarse) is None)
        except InvalidInputError:
            return False

    def search(self, queries, k: int = 10, *, tier: str | None = None, rescore: str | None = None,
               oversample: float | None = None) -> SearchResult:
        """The k nearest documents to each query.

        Parameters
        ----------
        queries : array-like, shape (dim,) or (nq, dim)
            Any real dtype; converted to float32. Cosine stores normalise them.
        k : int
            Results per query. When k exceeds the document count, the extra columns hold id -1
            and distance -inf (ip, cosine) or +inf (l2), as FAISS does.
        tier : str, optional
            Which tier to scan. With no tier, rescore or oversample, the store's calibrated default
            (see :meth:`default_plan`): the smallest compressed tier plus rescoring, or exact search.
        rescore : str, optional
            A finer tier (float32/float16/int8 codes, e.g. "raw") that re-scores the candidates.
        oversample : float, optional
            Candidates taken from ``tier`` per result when rescoring (>= 1): k * oversample rows
            are scanned, rescored, and the best k kept. Default: the tier's calibration, else 4.

        Returns
        -------
        SearchResult
            ``(distances, ids)``, each (nq, k), best first.
        """
        self._check_open()
        plan = self._plan(tier, rescore, oversample)
        xq = prepare_queries(queries, self.dim, self.metric)
        check_k(k, self.count)
        return self.search_prepared(xq, k, plan)

    def search_prepared(self, xq: np.ndarray, k: int, plan: tuple[Tier, Tier | None, float]) -> SearchResult:
        """:meth:`search` for validated queries, a validated k and a plan from :meth:`_plan` (or
        :meth:`plan_named`): (coarse tier, fine tier or None, oversample)."""
        coarse, fine, factor = plan
        kk = min(k, self.count)
        if kk == 0:
            nq = xq.shape[0]
            fill = np.inf if self.metric == "l2" else -np.inf
            return SearchResult(np.full((nq, k), fill, np.float32), np.full((nq, k), -1, np.int64))
        if fine is None:
            return coarse.search(xq, kk, k, self.ids)
        width = min(self.count, int(np.ceil(kk * factor)))
        _, candidates = coarse.scan(xq, width)
        scores, rows = fine.rescore(xq, candidates, kk)
        return finish(scores, rows, self.ids, k, self.metric, xq)

    def plan_named(self, tier: str, rescore: str | None, oversample: float | None) -> tuple[Tier, Tier | None, float]:
        """The plan of an already resolved (tier, rescore, oversample), e.g. one resolved on another
        file holding the same tiers (a segment searched with its main store's plan)."""
        coarse = self.tier(tier)
        return (coarse, None, 1.0) if rescore is None else (coarse, self.tier(rescore), float(oversample))

    def resolve_plan(self, tier: str | None = None, rescore: str | None = None,
                     oversample: float | None = None) -> tuple[str, str | None, float | None]:
        """The (tier, rescore, oversample) that :meth:`search` would use for these options,
        validated: defaults filled in from the calibration, errors raised as search raises them."""
        coarse, fine, factor = self._plan(tier, rescore, oversample)
        return (coarse.name, None, None) if fine is None else (coarse.name, fine.name, factor)

    def _plan(self, tier, rescore, oversample) -> tuple[Tier, Tier | None, float]:
        if oversample is not None and (isinstance(oversample, bool) or not isinstance(oversample, (int, float))
                                       or not np.isfinite(oversample) or oversample < 1):
            raise InvalidInputError(f"oversample must be a number >= 1, got {oversample!r}")
        if tier is None and rescore is None and oversample is None:
            tier, rescore, oversample = self.default_plan()
        coarse = self.tier(tier)
        if rescore is None and oversample is not None:
            rescore = fmt.RAW_TIER
        if rescore is None:
            return coarse, None, 1.0
        fine = self.tier(rescore)
        fine.check_rescores(coarse)
        if oversample is None:
            cal = coarse.calibration
            oversample = float(cal["oversample"]) if cal and cal["rescore"] == fine.name else DEFAULT_OVERSAMPLE
        return coarse, fine, float(oversample)

    # -- documents ------------------------------------------------------------------------------

    def _rows_of(self, ids) -> np.ndarray:
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
        sorted_ids, order = self._id_index
        pos = np.clip(np.searchsorted(sorted_ids, arr), 0, max(self.count - 1, 0))
        found = (self.count > 0) & (sorted_ids[pos] == arr) if self.count else np.zeros(arr.shape, bool)
        return np.where(found, order[pos], -1)

    def keys(self, ids) -> list:
        """The key (title, URL, ...) of each id; None for id -1 or a store without keys.

        Accepts any array shape of ids, e.g. the ``ids`` of a search result, and keeps it.
        """
        return self._lookup(ids, self._keys, lambda s: s)

    def metadata(self, ids) -> list:
        """The JSON metadata of each id (a dict), or None where there is none."""
        return self._lookup(ids, self._metadata, _metadata_object)

    def _lookup(self, ids, column: StringColumn | None, convert):
        self._check_open()
        arr = np.asarray(ids, dtype=np.int64)
        rows = self._rows_of(arr.ravel())
        unknown = (rows < 0) & (arr.ravel() != -1)
        if unknown.any():
            raise InvalidInputError(f"id {int(arr.ravel()[np.argmax(unknown)])} is not in this store")
        out = [None if r < 0 or column is None else convert(column.get(int(r))) for r in rows]
        return np.array(out, dtype=object).reshape(arr.shape).tolist() if arr.ndim > 1 else out

    # -- text queries ---------------------------------------------------------------------------

    @property
    def encoder_names(self) -> list[str]:
        """Names of the text encoders stored with this store (see :meth:`search_text`)."""
        return list(self._header.encoder_configs)

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
        from .encoders import encoder_from_parts

        prefix = f"{fmt.ENCODERS}/{name}"
        vocab = StringColumn(self._map.array(self._header.datasets[f"{prefix}/{fmt.VOCAB}/offsets"]),
                             self._map.array(self._header.datasets[f"{prefix}/{fmt.VOCAB}/data"]),
                             self._header.datasets[f"{prefix}/{fmt.VOCAB}/offsets"].shape[0] - 1,
                             f"{prefix}/{fmt.VOCAB}")
        arrays = {key[len(prefix) + len(fmt.ARRAYS) + 2:]: np.array(self._map.array(span))
                  for key, span in self._header.datasets.items()
                  if key.startswith(f"{prefix}/{fmt.ARRAYS}/")}
        try:
            return encoder_from_parts(self._header.encoder_configs[name],
                                      [vocab.get(i) for i in range(vocab.offsets.shape[0] - 1)], arrays)
        except VecstoreError as exc:
            raise FormatError(f"/{prefix}: {exc}") from None

    def search_text(self, texts, k: int = 10, *, encoder: str | None = None, **options) -> TextSearchResult:
        """Search with text: encode ``texts`` (a string or a list) with a stored encoder, then search.

        Unknown words are skipped and returned per text in ``unknown_words``; a text with no known
        word is an error. ``options`` are those of :meth:`search` (tier, rescore, oversample).
        """
        enc = self.encoder(encoder)
        if enc.dim != self.dim:
            raise FormatError(f"encoder produces {enc.dim}-dim vectors but the store holds {self.dim}")
        batch = [texts] if isinstance(texts, str) else list(texts)
        vectors, unknown = enc.encode(batch)
        distances, ids = self.search(vectors, k, **options)
        return TextSearchResult(distances, ids, unknown)

    # -- memory ---------------------------------------------------------------------------------

    def load(self, tier: str) -> None:
        """Hold ``tier`` in private memory (typically the small coarse tier); others stay mapped."""
        self.tier(tier).load()

    def memory(self) -> dict:
        """Per tier, bytes held in private memory against bytes merely mapped; and the process's
        RssAnon (private) and RssFile (mapped pages in RAM) from /proc/self/status."""
        self._check_open()
        tiers = {name: t.memory() for name, t in self.tiers.items()}
        return {
            "tiers": tiers,
            "resident_bytes": sum(t["resident_bytes"] + t["param_bytes"] for t in tiers.values()),
            "mapped_bytes": self._header.file_size,
            "process": process_memory(),
        }

    # -- reporting ------------------------------------------------------------------------------

    def info(self) -> dict:
        """A JSON-safe summary: count, dim, metric, format version, tiers with sizes."""
        self._check_open()
        return {
            "path": self.path,
            "format_version": self.format_version,
            "store_id": fmt.store_identity(self._header),
            "written_by": self.written_by,
            "count": self.count,
            "dim": self.dim,
            "metric": self.metric,
            "model": self.model,
            "has_keys": self._keys is not None,
            "has_metadata": self._metadata is not None,
            "file_bytes": self._header.file_size,
            "tiers": [t.describe() for t in self.tiers.values()],
            "default_search": list(self.default_plan()),
        }


def _metadata_object(text: str) -> dict | None:
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
