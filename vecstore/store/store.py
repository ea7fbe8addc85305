"""Store: what users hold. The current :class:`~vecstore.store.view.View` of a store (main file,
appended segments, deleted ids), and every public operation on it: search, text search, documents,
changes (delegated to vecstore.store.lifecycle), memory and reporting.

A search resolves its plan once on the main file (vecstore.plan), validates the queries once
(vecstore.query), searches every part with that plan and merges the parts' top-k.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ..errors import ClosedStoreError, FormatError, InvalidInputError, ReadOnlyStoreError
from ..format import schema as fmt
from ..plan import DEFAULT_BUDGET, Plan, check_budget
from ..query import (SearchResult, TextSearchResult, check_k, drop_ids, empty_result, merge_results,
                     prepare_queries)
from . import lifecycle
from .closing import ClosesOnExit
from .file import StoreFile, metadata_object, process_memory
from .filtering import part_masks, search_masked
from .provenance import check_encoder, check_model
from .view import View, open_view, signature

MODES = ("r", "a")
#: what Store.search_text does with a text without a known word
ON_EMPTY = ("error", "skip")


class Store(ClosesOnExit):
    """An open vecstore. Create one with :func:`vecstore.open` or :func:`vecstore.build`.

    Attributes
    ----------
    path : str
    dim, count : int        count is the number of live documents (appended included, deleted not)
    metric : {"ip", "cosine", "l2"}
    tiers : dict[str, Tier] the main file's tiers (every segment holds the same ones)
    model : dict or None    the model that produced the vectors (see vecstore.store.provenance)
    """

    def __init__(self, path: str | os.PathLike, *, mode: str = "r", auto_reload: bool = False,
                 untrusted: bool = False, budget: float = DEFAULT_BUDGET):
        if mode not in MODES:
            raise InvalidInputError(f"mode must be 'r' (read only) or 'a' (append and delete), got {mode!r}")
        check_budget(budget)
        self.budget = budget
        self.path = os.path.abspath(os.fspath(path))
        self.mode = mode
        self.auto_reload = bool(auto_reload)
        self.untrusted = bool(untrusted)
        self._resident: list[str] = []
        self._reload_lock = threading.Lock()
        self._view: View | None = open_view(self.path, self.untrusted)
        self._encoder_checked: set[str] = set()

    # -- the current view ---------------------------------------------------------------------

    def _now(self) -> View:
        view = self._view
        if view is None:
            raise ClosedStoreError(f"store {self.path!r} is closed: open it again with vecstore.open()")
        if self.auto_reload and signature(self.path, view.base_id) != view.signature:
            self.reload()
            view = self._view
        return view

    def reload(self) -> bool:
        """Move to the store's newest version (a swap, an append, a delete) if it changed; True if so.

        Queries already running finish on the version they started with; the next ones use the new.
        """
        with self._reload_lock:
            view = self._view
            if view is None:
                raise ClosedStoreError(f"store {self.path!r} is closed: open it again with vecstore.open()")
            if signature(self.path, view.base_id) == view.signature:
                return False
            new = open_view(self.path, self.untrusted)
            for name in self._resident:
                for part in new.parts:
                    if name in part.tiers:
                        part.load(name)
            self._view = new
            self._encoder_checked = set()
            return True

    @property
    def _base(self) -> StoreFile:
        return self._now().base

    # -- description --------------------------------------------------------------------------

    dim = property(lambda self: self._base.dim)
    metric = property(lambda self: self._base.metric)
    model = property(lambda self: self._base.model)
    format_version = property(lambda self: self._base.format_version)
    written_by = property(lambda self: self._base.written_by)
    tiers = property(lambda self: self._base.tiers)
    encoder_names = property(lambda self: self._base.encoder_names)
    fields = property(lambda self: self._base.field_types, doc="filterable field -> type (see docs/filters.md)")

    @property
    def count(self) -> int:
        return self._now().count

    @property
    def ids(self) -> np.ndarray:
        """Ids of the live documents: the main file's, then each segment's, deleted ones left out."""
        view = self._now()
        return view.base.ids if view.simple else view.live_ids

    @property
    def segment_count(self) -> int:
        return len(self._now().segments)

    @property
    def deleted_count(self) -> int:
        return int(self._now().deleted.shape[0])

    def tier(self, name: str | None = None):
        """The tier called ``name`` (default: the raw float32 tier)."""
        return self._base.tier(name)

    def default_plan(self, budget: float | None = None) -> Plan:
        """``(tier, rescore, oversample)`` of a search given no tier options: among the tiers whose
        calibration met its recall target, the fastest whose codes take at most ``budget`` bytes per
        vector (default: the store's, ``open(..., budget=)``, 64), else the smallest; exact search on
        raw when none (vecstore.plan.default_plan)."""
        return self._now().default_plan(self._budget(budget))

    def resolve_plan(self, tier: str | None = None, rescore: str | None = None,
                     oversample: float | None = None, budget: float | None = None) -> Plan:
        """The validated ``(tier, rescore, oversample)`` that :meth:`search` uses for these options."""
        return self._now().resolve(tier, rescore, oversample, self._budget(budget))

    def _budget(self, budget: float | None) -> float:
        if budget is None:
            return self.budget
        check_budget(budget)
        return budget

    def __repr__(self) -> str:
        view = self._view
        if view is None:
            return f"<closed vecstore.Store {self.path!r}>"
        extra = (f" segments={len(view.segments)} deleted={view.deleted.shape[0]}" if not view.simple else "")
        return (f"<vecstore.Store {self.path!r} count={view.count} dim={view.base.dim} "
                f"metric={view.base.metric!r} tiers={list(view.base.tiers)}{extra}>")

    # -- search -------------------------------------------------------------------------------

    def search(self, queries, k: int = 10, *, tier: str | None = None, rescore: str | None = None,
               oversample: float | None = None, model: str | None = None, where: str | None = None,
               allow=None, budget: float | None = None, nprobe: int | None = None) -> SearchResult:
        """The k nearest live documents to each query.

        Parameters
        ----------
        queries : array-like, shape (dim,) or (nq, dim)
            Any real dtype; converted to float32. Cosine stores normalise them.
        k : int
            Results per query. When k exceeds the live document count, the extra columns hold id -1
            and distance -inf (ip, cosine) or +inf (l2), as FAISS does.
        tier : str, optional
            Which tier to scan. With no tier, rescore or oversample, the store's calibrated default
            (see :meth:`default_plan`): the smallest compressed tier plus rescoring, or exact search.
        rescore : str, optional
            A finer tier (float32/float16/int8 codes, e.g. "raw") that re-scores the candidates.
        oversample : float, optional
            Candidates taken from ``tier`` per result when rescoring (>= 1). Default: the tier's
            calibration, else 4.
        model : str, optional
            ``"name@version"`` of the model that made the queries: refused (ModelMismatchError) when
            the store's vectors come from another model or version.
        where : str, optional
            A filter on the store's filterable fields (docs/filters.md), e.g.
            ``"lang = 'en' and year >= 2020"``: only documents satisfying it are returned.
        allow : array-like, optional
            Allowed document ids, or a boolean mask over ``store.ids`` (one entry per live document);
            combined with ``where`` by "and". Ids not in the store are ignored.
        budget : float, optional
            Bytes per vector the default plan's scanned tier may take; default: the store's
            (``vecstore.open(..., budget=)``, 64). Applies only when no tier option is given.
        nprobe : int, optional
            Lists an inverted-file tier (codec ``ivf<nlist>,...``) scans, 1 to nlist; default: the
            tier's calibrated figure (with its oversampling, for the target recall).

        Returns
        -------
        SearchResult
            ``(distances, ids)``, each (nq, k), best first. Deleted documents never appear. With
            ``where`` or ``allow``, a :class:`~vecstore.query.FilteredSearchResult` that also says
            the strategy each part was searched with; fewer matching documents than k are padded.
        """
        return self._search_in(self._now(), queries, k, tier, rescore, oversample, model, where, allow, budget,
                               nprobe)

    def _search_in(self, view: View, queries, k, tier, rescore, oversample, model, where=None,
                   allow=None, budget=None, nprobe=None) -> SearchResult:
        """:meth:`search` on one given view (so a caller that read the view can stay on it)."""
        base = view.base
        if model is not None:
            check_model(base.model, model, "queries")
        plan = view.resolve(tier, rescore, oversample, self._budget(budget))
        # every part probes as many lists as the main file's tier says (segments are not calibrated)
        nprobe = base.tier(plan.tier).check_nprobe(nprobe) or None
        xq = prepare_queries(queries, base.dim, base.metric)
        check_k(k, view.count)
        if where is not None or allow is not None:
            return search_masked(view, xq, k, plan, part_masks(view, where, allow), nprobe)
        if view.simple:
            return view.prepared(plan).search(xq, k, nprobe)
        results = [_search_part(part, dead, xq, k, plan, base.metric, nprobe)
                   for part, dead in zip(view.parts, view.dead)]
        return merge_results(results, k, base.metric)

    def search_text(self, texts, k: int = 10, *, encoder: str | None = None, model: str | None = None,
                    on_empty: str = "error", **options) -> TextSearchResult:
        """Search with text: encode ``texts`` (a string or a list) with a stored encoder, then search.

        Unknown words are skipped and returned per text in ``unknown_words``. ``options`` are those
        of :meth:`search` (tier, rescore, oversample, where, allow). An encoder that is not the model the store's
        vectors came from is refused.

        on_empty : "error" (default) or "skip"
            What to do with a text that has no known word (empty, punctuation only, only unknown
            words, or known words that sum to the zero vector). "error" raises InvalidInputError
            naming the text (the first one, by position); "skip" searches the other texts and gives
            that text a row of padding (ids -1, distances -inf, +inf for l2), its words still listed
            in ``unknown_words``.
        """
        if on_empty not in ON_EMPTY:
            raise InvalidInputError(f"on_empty must be one of {', '.join(map(repr, ON_EMPTY))}, got {on_empty!r}")
        view = self._now()  # one version throughout: the encoder check and the search
        enc = view.base.encoder(encoder)
        name = encoder or view.base.encoder_names[0]
        if name not in self._encoder_checked:
            check_encoder(view.base.model, name, enc)
            self._encoder_checked.add(name)
        if enc.dim != view.base.dim:
            raise FormatError(f"encoder produces {enc.dim}-dim vectors but the store holds {view.base.dim}")
        batch = [texts] if isinstance(texts, str) else list(texts)
        tier, rescore, oversample, where, allow, budget, nprobe = (
            options.pop(o, None) for o in ("tier", "rescore", "oversample", "where", "allow", "budget", "nprobe"))
        if options:
            raise TypeError(f"search_text() got an unexpected keyword argument {sorted(options)[0]!r}")
        if on_empty == "error":
            try:
                vectors, unknown = enc.encode(batch)
            except InvalidInputError as exc:
                raise InvalidInputError(f"{exc}, or pass on_empty='skip' (CLI: --on-empty skip) to search "
                                        "the other texts") from None
            distances, ids = self._search_in(view, vectors, k, tier, rescore, oversample, model, where, allow, budget,
                                                  nprobe)
            return TextSearchResult(distances, ids, unknown)
        vectors, unknown = enc.encode(batch, on_empty="zero")
        live = np.flatnonzero(vectors.any(axis=1))
        if live.shape[0] == len(batch):
            distances, ids = self._search_in(view, vectors, k, tier, rescore, oversample, model, where, allow, budget,
                                                  nprobe)
            return TextSearchResult(distances, ids, unknown)
        check_k(k, view.count)
        distances, ids = empty_result(len(batch), k, view.base.metric)
        if live.shape[0]:
            found = self._search_in(view, vectors[live], k, tier, rescore, oversample, model, where, allow, budget,
                                                  nprobe)
            distances[live], ids[live] = found.distances, found.ids
        else:  # nothing to search, but the options and the model are still checked
            view.resolve(tier, rescore, oversample, self._budget(budget))
            if model is not None:
                check_model(view.base.model, model, "queries")
        return TextSearchResult(distances, ids, unknown)

    def encoder(self, name: str | None = None):
        """The stored text encoder ``name`` (default: the only one), built from its plain arrays."""
        return self._base.encoder(name)

    # -- documents ----------------------------------------------------------------------------

    def keys(self, ids) -> list:
        """The key (title, URL, ...) of each id; None for id -1 or a store without keys. A document
        appended without a key to a store with keys has the empty key "" (as after compaction).

        Accepts any array shape of ids, e.g. the ``ids`` of a search result, and keeps it.
        """
        view = self._now()
        missing = "" if any(p.keys_column is not None for p in view.parts) else None
        return self._lookup(ids, lambda part, row: missing if part.keys_column is None else part.keys_column.get(row), view)

    def metadata(self, ids) -> list:
        """The JSON metadata of each id (a dict), or None where there is none."""
        return self._lookup(ids, lambda part, row: None if part.metadata_column is None
                            else metadata_object(part.metadata_column.get(row)))

    def vectors(self, ids) -> np.ndarray:
        """The stored float32 vectors (raw tier) of ``ids``, shape (len(ids), dim)."""
        arr = np.asarray(ids, dtype=np.int64).ravel()
        view = self._now()
        out = np.empty((arr.shape[0], view.base.dim), dtype=np.float32)
        for part, rows, where in self._locate(view, arr):
            out[where] = part.tier(fmt.RAW_TIER).codes[rows]
        return out

    def _locate(self, view: View, flat: np.ndarray, allow_missing: bool = False):
        """(part, rows, positions) for each part holding some of ``flat``'s ids; unknown or deleted
        ids are errors (id -1 too, unless ``allow_missing``)."""
        if view.deleted.shape[0]:
            gone = np.isin(flat, view.deleted)
            if gone.any():
                raise InvalidInputError(f"id {int(flat[np.argmax(gone)])} was deleted from this store")
        found = flat == -1 if allow_missing else np.zeros(flat.shape, bool)
        for part in view.parts:
            rows = part.rows_of(flat)
            mine = (rows >= 0) & ~found
            if mine.any():
                where = np.flatnonzero(mine)
                found[where] = True
                yield part, rows[where], where
        if not found.all():
            raise InvalidInputError(f"id {int(flat[np.argmax(~found)])} is not in this store")

    def _lookup(self, ids, get, view: View | None = None):
        arr = np.asarray(ids, dtype=np.int64)
        flat = arr.ravel()
        out: list = [None] * flat.shape[0]
        for part, rows, where in self._locate(view or self._now(), flat, allow_missing=True):
            for row, i in zip(rows.tolist(), where.tolist()):
                out[i] = get(part, row)
        return np.array(out, dtype=object).reshape(arr.shape).tolist() if arr.ndim > 1 else out

    # -- changes --------------------------------------------------------------------------------

    def _check_writable(self, what: str) -> None:
        self._now()
        if self.mode != "a":
            raise ReadOnlyStoreError(
                f"cannot {what}: {self.path!r} was opened read-only; open it with vecstore.open(path, mode='a')"
            )

    def add(self, vectors, ids=None, keys=None, metadata=None, *, model: str | None = None,
            progress: bool | None = None, fields=None) -> np.ndarray:
        """Append documents: encoded into every tier with the stored parameters, written as a new
        segment, published atomically. Returns their ids (default: after the largest id so far)."""
        self._check_writable("add documents")
        new_ids = lifecycle.append(self.path, vectors, ids=ids, keys=keys, metadata=metadata, model=model,
                                   progress=progress, fields=fields)
        self.reload()
        return new_ids

    def delete(self, ids) -> int:
        """Mark documents deleted (they never appear in results again); returns how many.
        An id that is not a live document is an error, and then nothing is deleted."""
        self._check_writable("delete documents")
        removed = lifecycle.delete(self.path, ids)
        self.reload()
        return removed

    def compact(self, progress: bool | None = None) -> dict:
        """Rewrite the store as one file without its deleted documents (segments merged in)."""
        self._check_writable("compact")
        report = lifecycle.compact(self.path, progress=progress)
        self.reload()
        return report

    # -- memory -------------------------------------------------------------------------------

    def load(self, tier: str) -> None:
        """Hold ``tier`` in private memory (typically the small coarse tier); others stay mapped.
        Applies to appended segments too, and again after a reload."""
        view = self._now()
        for part in view.parts:
            part.load(tier)
        if tier not in self._resident:
            self._resident.append(tier)

    def memory(self) -> dict:
        """Per tier, bytes held in private memory against bytes merely mapped (segments included);
        and the process's RssAnon (private) and RssFile (mapped pages in RAM) from /proc/self/status."""
        view = self._now()
        report = view.base.memory()
        for part in view.segments:
            extra = part.memory()
            for name, t in extra["tiers"].items():
                for key in ("resident_bytes", "mapped_bytes", "list_bytes", "fastscan_bytes"):
                    report["tiers"][name][key] += t[key]
            report["resident_bytes"] += extra["resident_bytes"] - sum(t["param_bytes"] for t in extra["tiers"].values())
            report["mapped_bytes"] += extra["mapped_bytes"]
        report["process"] = process_memory()
        return report

    def info(self) -> dict:
        """A JSON-safe summary: count, dim, metric, model, tiers with sizes, segments, deletions."""
        view = self._now()
        info = view.base.info()
        info["count"] = view.count
        info["main_count"] = view.base.count
        info["segments"] = [{"file": os.path.basename(p.path), "count": p.count,
                             "file_bytes": p.header.file_size} for p in view.segments]
        info["deleted"] = int(view.deleted.shape[0])
        info["file_bytes"] += sum(p.header.file_size for p in view.segments)
        info["default_search"] = list(view.default_plan(self.budget))
        info["budget"] = self.budget
        return info

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        """Release the file mappings. Safe to call twice."""
        view, self._view = getattr(self, "_view", None), None
        if view is not None:
            view.close()


def _search_part(part: StoreFile, dead: np.ndarray, xq: np.ndarray, k: int, plan: Plan, metric: str,
                 nprobe: int | None = None) -> SearchResult:
    """Top-k live documents of one part. With deletions, ask for a few more than k, and only for
    the queries that still lack k live results ask again for k plus every deleted one."""
    if dead.shape[0] == 0:
        return part.search_plan(xq, k, plan, nprobe)
    want = min(k, part.count - dead.shape[0])
    extra = min(dead.shape[0], max(want, 16))
    first = merge_results([drop_ids(part.search_plan(xq, min(part.count, want + extra), plan, nprobe), dead, metric)],
                          k, metric)
    short = (first.ids >= 0).sum(axis=1) < want
    if short.any() and extra < dead.shape[0]:
        again = drop_ids(part.search_plan(xq[short], min(part.count, want + dead.shape[0]), plan, nprobe), dead, metric)
        again = merge_results([again], k, metric)
        first.distances[short], first.ids[short] = again.distances, again.ids
    return first


def open(path: str | os.PathLike, *, resident: tuple[str, ...] | list[str] = (), mode: str = "r",  # noqa: A001
         auto_reload: bool = False, untrusted: bool = False, budget: float = DEFAULT_BUDGET) -> Store:
    """Open a store; costs megabytes whatever the store's size (tiers are mapped).

    ``resident`` names tiers to copy into private memory at once (e.g. the coarse tier of a
    two-stage search); the rest stay mapped and are paged in by the kernel on demand.
    ``mode="a"`` allows :meth:`Store.add`, :meth:`Store.delete` and :meth:`Store.compact`.
    ``auto_reload=True`` moves to a new version of the store (a swap, an append) between queries.
    ``untrusted=True``: for a file from outside, validate its header in a time- and memory-limited
    child process first (libhdf5 can hang or allocate gigabytes on crafted files; ~1 s per open).
    ``budget``: bytes per vector the default plan's scanned tier may take (see :meth:`Store.default_plan`;
    ``float("inf")``: no limit); a search can override it.
    """
    store = Store(path, mode=mode, auto_reload=auto_reload, untrusted=untrusted, budget=budget)
    try:
        for name in resident:
            store.load(name)
    except BaseException:
        store.close()
        raise
    return store
