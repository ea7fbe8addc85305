"""A view: one consistent state of a store (its main file, the segments appended to it and the ids
deleted from it), opened and validated as one.

Searches take the current view once and use only it, so a reader can move to a new version between
queries (:meth:`vecstore.Store.reload`) while a query in flight finishes on the view it started
with; the old view's mappings are released when the last query using it returns.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from ..errors import FormatError, StoreNotFoundError
from ..format import schema as fmt
from ..format import segments as seg
from ..format.digest import codec_digest
from ..format.untrusted import check_header_in_child
from ..plan import DEFAULT_BUDGET, Plan, default_plan, resolve_plan
from .file import StoreFile
from .masks import FilterCache
from .prepared import PreparedPlan

OPEN_RETRIES = 5
# Plans a view remembers per kind (defaults by budget, resolved options, prepared plans): a server
# passing a new oversample or budget on every call must not grow them without end.
MAX_REMEMBERED = 256


def _keep(cache: dict, key, value):
    """Store ``value`` under ``key`` and return it; past MAX_REMEMBERED entries the oldest goes.
    (Lookups stay plain ``dict.get`` calls: a query pays for one.)"""
    if len(cache) >= MAX_REMEMBERED:
        try:
            cache.pop(next(iter(cache)), None)
        except (RuntimeError, StopIteration):  # another thread changed it meanwhile: skip this once
            pass
    cache[key] = value
    return value


def signature(path: str, base_id: str | None = None) -> tuple:
    """What changes when the store at ``path`` is replaced or its manifest republished."""
    def stamp(p):
        try:
            st = os.stat(p)
        except OSError:  # missing, or a symlink loop: opening it says which
            return None
        return st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size
    return stamp(path), (stamp(seg.manifest_path(path, base_id)) if base_id else None)


class View:
    """One consistent state of a store: its main file, its segments and its deleted ids."""

    def __init__(self, base: StoreFile, base_id: str, segments: list[StoreFile], manifest: seg.Manifest | None,
                 deleted: np.ndarray, signature: tuple):
        self.base, self.base_id, self.segments, self.manifest = base, base_id, segments, manifest
        self.deleted = deleted
        self.signature = signature
        self.parts = [base, *segments]
        if deleted.shape[0]:
            self.dead = [np.intersect1d(deleted, np.asarray(p.ids)) for p in self.parts]
        else:
            self.dead = [deleted] * len(self.parts)
        self.count = sum(p.count for p in self.parts) - int(deleted.shape[0])
        self._live_ids: np.ndarray | None = None
        self._defaults: dict[float, Plan] = {}
        self._plans: dict[tuple, Plan] = {}
        self._prepared: dict[tuple[Plan, int], PreparedPlan] = {}
        self.filter_cache = FilterCache()  # compiled where= texts and their masks (vecstore.store.masks)

    def default_plan(self, budget: float = DEFAULT_BUDGET) -> Plan:
        """The main file's default plan within ``budget`` (vecstore.plan.default_plan), remembered."""
        found = self._defaults.get(budget)
        return found if found is not None else _keep(self._defaults, budget, default_plan(self.base.tiers, budget))

    def resolve(self, tier=None, rescore=None, oversample=None, budget: float = DEFAULT_BUDGET) -> Plan:
        """The plan for these search options (vecstore.plan.resolve_plan on the main file's tiers),
        remembered: a view's tiers never change, and resolving cost microseconds a query."""
        key = (tier, rescore, oversample, budget)
        try:
            found = self._plans.get(key)
        except TypeError:  # an unhashable option, which resolve_plan refuses
            found = None
        if found is not None:
            return found
        return _keep(self._plans, key, resolve_plan(self.base.tier, self.default_plan(budget), tier, rescore,
                                                    oversample))

    def prepared(self, plan: Plan, part: int = 0) -> PreparedPlan:
        """``plan`` prepared over the main file, or over ``self.parts[part]`` (a segment: filtered
        searches go through it too), see vecstore.store.prepared; made once per view."""
        found = self._prepared.get((plan, part))
        return found if found is not None else _keep(self._prepared, (plan, part), PreparedPlan(self.parts[part], plan))

    @property
    def simple(self) -> bool:
        return not self.segments and self.deleted.shape[0] == 0

    def live_rows(self, index: int) -> np.ndarray | None:
        """Rows of part ``index`` that are not deleted (None: all of them)."""
        if self.dead[index].shape[0] == 0:
            return None
        return np.flatnonzero(self.live_mask(index))

    def live_mask(self, index: int) -> np.ndarray:
        """Boolean mask of part ``index``'s rows that are not deleted."""
        return ~self.parts[index].id_mask(self.dead[index])

    @property
    def live_ids(self) -> np.ndarray:
        if self._live_ids is None:
            chunks = []
            for i, part in enumerate(self.parts):
                rows = self.live_rows(i)
                chunks.append(np.asarray(part.ids) if rows is None else np.asarray(part.ids)[rows])
            self._live_ids = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
        return self._live_ids

    def close(self) -> None:
        for part in self.parts:
            part.close()


def _open_file(path: str, untrusted: bool) -> StoreFile:
    if untrusted:
        check_header_in_child(path)
    return StoreFile(path)


def open_view(path: str, untrusted: bool = False) -> View:
    """Open the main file at ``path`` and whatever its manifest adds; validated as one store.
    ``untrusted``: validate each file's header in a child process first (see vecstore.format.untrusted)."""
    for attempt in range(OPEN_RETRIES):
        before = signature(path)
        base = _open_file(path, untrusted)
        last = attempt == OPEN_RETRIES - 1
        base_id, stamp = None, None
        try:
            base_id = fmt.store_identity(base.header)
            stamp = signature(path, base_id)
            manifest = seg.read_manifest(path, base_id)
            if manifest is None:
                if signature(path)[0] != before[0] and not last:
                    raise _Changed  # a writer renamed a new main file in while this one was opened
                seg.check_unmatched(path, base_id)
                return View(base, base_id, [], None, np.empty(0, dtype=np.int64), (before[0], None))
            segments = _open_segments(path, base, manifest, untrusted)
            try:
                deleted = seg.read_deleted(path, manifest)
            except BaseException:
                for part in segments:
                    part.close()
                raise
            return View(base, base_id, segments, manifest, deleted, stamp)
        except _Changed:
            base.close()
        except (StoreNotFoundError, FormatError) as exc:
            base.close()
            # a file named by the manifest vanished: retry if the store changed meanwhile (its writer
            # retires what it replaces for seg.RETIRE_GRACE_S, so only an open slower than that sees it)
            changed = (signature(path, base_id) != stamp) if stamp is not None else (signature(path)[0] != before[0])
            if last or not changed:
                if isinstance(exc, StoreNotFoundError):
                    raise FormatError(f"{path!r}: a segment its manifest names is missing; the store is damaged") from None
                raise
        except BaseException:
            base.close()
            raise
    raise AssertionError("unreachable")


class _Changed(Exception):
    """The main file was replaced while it was being opened."""


def _open_segments(path: str, base: StoreFile, manifest: seg.Manifest, untrusted: bool) -> list[StoreFile]:
    digests = {name: codec_digest(t.codec) for name, t in base.tiers.items()}
    segments: list[StoreFile] = []
    try:
        for i, entry in enumerate(manifest.segments):
            part = _open_file(os.path.join(seg.sidecar_dir(path), entry.file), untrusted)
            segments.append(part)
            where = f"segment {entry.file} of {path!r}"
            if fmt.store_identity(part.header) != entry.store_id or part.count != entry.count:
                raise FormatError(f"{where} is not the file its manifest names (identity or count); the store is damaged")
            if part.dim != base.dim or part.metric != base.metric:
                raise FormatError(f"{where} holds {part.dim}-dim {part.metric} vectors, the store "
                                  f"{base.dim}-dim {base.metric}; the store is damaged")
            if set(part.tiers) != set(base.tiers) or any(codec_digest(t.codec) != digests[n]
                                                         for n, t in part.tiers.items()):
                raise FormatError(f"{where} was not encoded with the store's tiers and parameters; "
                                  "the store is damaged")
            columns = tuple(c for c, col in zip(seg.STRING_COLUMNS, (part.keys_column, part.metadata_column))
                            if col is not None)
            if entry.columns is None:  # a manifest of version 1: record what the file holds
                manifest.segments[i] = dataclasses.replace(entry, columns=columns)
            elif columns != entry.columns:
                raise FormatError(f"{where} holds the string columns {list(columns)} but its manifest records "
                                  f"{list(entry.columns)}; the store is damaged")
    except BaseException:
        for part in segments:
            part.close()
        raise
    return segments
