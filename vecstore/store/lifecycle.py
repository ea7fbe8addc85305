"""Changing a store after it was built: append documents, delete them, compact.

Every change holds the store's writer lock, reads the current state afresh, writes new files only,
and ends with one atomic publish (a manifest rename, or the main file's rename for compact). A crash
at any moment leaves the store as before or as after; readers keep the mappings they have.
See vecstore/format/segments.py for the files and docs/format.md ("Segments") for their format.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from ..errors import InvalidInputError
from ..format import segments as seg
from ..codecs.ivf import group_by_list, lists_of_positions
from ..format.writer import StoreContents, TierPlan, write_store
from ..ingest import as_ids, int64_ids, open_vectors, prepared_chunks, read_keys, read_metadata
from ..progress import progress_enabled
from .filtering import append_fields, compacted_fields
from .provenance import check_model
from .view import View, open_view


def next_id(view: View) -> int:
    """The first default id of an append: one past the largest id ever stored."""
    if view.manifest is not None:
        return view.manifest.next_id
    return int(np.max(view.base.ids)) + 1 if view.base.count else 0


def _manifest_for_change(path: str, view: View) -> tuple[seg.Manifest, seg.Manifest]:
    """(the current manifest, a copy to change): a main file without one gets an empty manifest
    first, before any new file goes into the segment directory (see seg.ensure_manifest)."""
    current = seg.ensure_manifest(path, view.base_id, view.manifest, next_id(view))
    return current, dataclasses.replace(current, generation=current.generation + 1, segments=list(current.segments),
                                        retired=dict(current.retired), version=seg.MANIFEST_VERSION)


def replacing_main(path: str, contents: StoreContents):
    """The ``before_rename`` of a write that replaces the main file at ``path`` by ``contents``: it
    publishes the new file's manifest first, retiring the old state (seg.successor_hook)."""
    first_free = int(np.max(contents.ids)) + 1 if contents.count else 0
    return seg.successor_hook(path, contents.store_id, first_free)


def _refuse_known_ids(view: View, ids: np.ndarray) -> None:
    if view.deleted.shape[0]:
        gone = np.isin(ids, view.deleted)
        if gone.any():
            raise InvalidInputError(
                f"id {int(ids[np.argmax(gone)])} was deleted but stays stored until `vecstore compact`: "
                "compact first, or give the new document another id"
            )
    for part in view.parts:
        rows = part.rows_of(ids)
        if (rows >= 0).any():
            raise InvalidInputError(f"id {int(ids[np.argmax(rows >= 0)])} is already in the store; ids must be unique")


def append(path: str | os.PathLike, vectors, *, ids=None, keys=None, metadata=None, model: str | None = None,
           progress: bool | None = None, fields=None) -> np.ndarray:
    """Append documents to the store at ``path`` as a new segment; return their ids.

    Each vector is encoded into every tier with that tier's stored parameters (nothing is retrained)
    and the segment is published atomically. Cost: proportional to the vectors added; the store's
    existing tiers are neither read nor copied. The segment carries the store's filterable fields,
    taken from ``metadata`` with the store's types (``fields``, if given, must name the same).
    """
    path = os.path.abspath(os.fspath(path))
    source = open_vectors(vectors)
    n, dim = source.shape
    if n == 0:
        raise InvalidInputError(f"{source.description}: no vectors to append")
    with seg.writer_lock(path):
        view = open_view(path)
        try:
            base = view.base
            if dim != base.dim:
                raise InvalidInputError(
                    f"{source.description}: vectors of dimension {dim}, but the store holds dimension {base.dim}"
                )
            if model is not None:
                check_model(base.model, model, "the new documents")
            first = next_id(view)
            new_ids = as_ids(ids, n) if ids is not None else np.arange(first, first + n, dtype="<i8")
            _refuse_known_ids(view, new_ids)
            contents = StoreContents(dim, n, base.metric, new_ids,
                                     keys=read_keys(keys, n) if keys is not None else None,
                                     metadata=read_metadata(metadata, n), model=base.model)
            contents.fields = append_fields(base, fields, contents.metadata, new_ids)
            current, manifest = _manifest_for_change(path, view)
            name = seg.new_file_name("segment")
            os.makedirs(seg.sidecar_dir(path), exist_ok=True)
            write_store(os.path.join(seg.sidecar_dir(path), name), contents,
                        [TierPlan(t.name, t.codec) for t in base.tiers.values()],
                        prepared_chunks(source, base.metric), progress=progress_enabled(progress),
                        description=f"append to {os.path.basename(path)}")
            columns = tuple(c for c, col in zip(seg.STRING_COLUMNS, (contents.keys, contents.metadata)) if col is not None)
            manifest.segments.append(seg.SegmentEntry(name, contents.store_id, n, columns))
            manifest.next_id = max(first, int(new_ids.max()) + 1)
            seg.publish_change(path, manifest, current)
        finally:
            view.close()
    return new_ids


def delete(path: str | os.PathLike, ids) -> int:
    """Mark ``ids`` deleted in the store at ``path``; return how many. Every id must be a live
    document (an unknown or already deleted id is an error, and then nothing is deleted)."""
    path = os.path.abspath(os.fspath(path))
    arr = int64_ids(ids, "ids to delete").ravel()
    if arr.size == 0:
        raise InvalidInputError("ids to delete must be a non-empty list of integers")
    arr = np.unique(arr)
    with seg.writer_lock(path):
        view = open_view(path)
        try:
            if view.deleted.shape[0]:
                gone = np.isin(arr, view.deleted)
                if gone.any():
                    raise InvalidInputError(f"id {int(arr[np.argmax(gone)])} is already deleted; nothing was deleted")
            present = np.zeros(arr.shape, dtype=bool)
            for part in view.parts:
                present |= part.rows_of(arr) >= 0
            if not present.all():
                missing = arr[~present]
                shown = ", ".join(str(int(i)) for i in missing[:5]) + (" ..." if missing.shape[0] > 5 else "")
                raise InvalidInputError(
                    f"{missing.shape[0]} id(s) are not in the store ({shown}); nothing was deleted"
                )
            everything = np.union1d(view.deleted, arr)
            current, manifest = _manifest_for_change(path, view)
            manifest.deleted_file, manifest.deleted_checksum = seg.write_deleted(path, everything)
            manifest.deleted_count = int(everything.shape[0])
            seg.publish_change(path, manifest, current)
        finally:
            view.close()
    return int(arr.shape[0])


class _Gather:
    """The live rows of one array per part, read as one array by slices (what the writer copies)."""

    def __init__(self, arrays: list[np.ndarray], rows: list[np.ndarray | None]):
        self.arrays, self.rows = arrays, rows
        lengths = [a.shape[0] if r is None else r.shape[0] for a, r in zip(arrays, rows)]
        self.starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def __getitem__(self, window: slice) -> np.ndarray:
        out = []
        for i, (arr, rows) in enumerate(zip(self.arrays, self.rows)):
            lo, hi = max(window.start, self.starts[i]), min(window.stop, self.starts[i + 1])
            if lo < hi:
                a, b = int(lo - self.starts[i]), int(hi - self.starts[i])
                out.append(arr[a:b] if rows is None else arr[rows[a:b]])
        if not out:
            return self.arrays[0][0:0]
        return out[0] if len(out) == 1 else np.concatenate(out)


def _strings(view: View, column: str, live: list[np.ndarray | None]) -> list[str] | None:
    columns = [getattr(part, column) for part in view.parts]
    if all(c is None for c in columns):
        return None
    out: list[str] = []
    for part, col, rows in zip(view.parts, columns, live):
        wanted = range(part.count) if rows is None else rows.tolist()
        out.extend("" if col is None else col.get(int(r)) for r in wanted)
    return out


def _relisted(name: str, tier, view: View, live: list[np.ndarray | None]) -> TierPlan:
    """An inverted-file tier of every part merged: each part's codes, norms and lists back in row
    order, the live rows kept, then grouped by list again (in RAM: codes are small; nothing is
    re-encoded, every document keeps the list it was assigned to)."""
    codes, norms, lists = [], [], []
    for part, rows in zip(view.parts, live):
        own = part.tiers[name]
        order = own.lists.checked_rows()
        by_row = np.empty_like(np.asarray(own.codes))
        by_row[order] = own.codes
        list_of = np.empty(part.count, dtype=np.int64)
        list_of[order] = lists_of_positions(own.lists.offsets)
        keep = slice(None) if rows is None else rows
        codes.append(by_row[keep])
        lists.append(list_of[keep])
        if own.sqnorms is not None:
            norm_of = np.empty(part.count, dtype=np.float32)
            norm_of[order] = own.sqnorms
            norms.append(norm_of[keep])
    order, offsets = group_by_list(np.concatenate(lists), tier.codec.ivf.nlist)
    merged_norms = np.concatenate(norms)[order] if norms else None
    return TierPlan(name, tier.codec, (np.concatenate(codes)[order], merged_norms), tier.calibration, (offsets, order))


def compact_locked(path: str, *, progress: bool | None = None) -> dict:
    """:func:`compact` for a caller that holds the writer lock."""
    started = time.perf_counter()
    view = open_view(path)
    try:
        if view.simple:
            return {"documents": view.count, "merged_segments": 0, "dropped": 0, "seconds": 0.0}
        live = [view.live_rows(i) for i in range(len(view.parts))]
        ids = _Gather([np.asarray(p.ids) for p in view.parts], live)[0:view.count]
        base = view.base
        contents = StoreContents(base.dim, view.count, base.metric, np.asarray(ids, dtype="<i8"),
                                 keys=_strings(view, "keys_column", live), metadata=_strings(view, "metadata_column", live),
                                 model=base.model,
                                 encoders={name: base.encoder(name) for name in base.encoder_names},
                                 fields=compacted_fields(view, live))
        plans = []
        for name, tier in base.tiers.items():
            if tier.lists is not None:
                plans.append(_relisted(name, tier, view, live))
                continue
            codes = _Gather([p.tiers[name].codes for p in view.parts], live)
            norms = (_Gather([p.tiers[name].sqnorms for p in view.parts], live)
                     if tier.sqnorms is not None else None)
            plans.append(TierPlan(name, tier.codec, (codes, norms), tier.calibration))
        write_store(path, contents, plans, None, progress=progress_enabled(progress),
                    description=f"compact {os.path.basename(path)}", before_rename=replacing_main(path, contents))
        report = {"documents": view.count, "merged_segments": len(view.segments),
                  "dropped": int(view.deleted.shape[0]), "seconds": time.perf_counter() - started}
    finally:
        view.close()
    return report


def compact(path: str | os.PathLike, *, progress: bool | None = None) -> dict:
    """Rewrite the store at ``path`` as one file: segments merged in, deleted documents dropped.
    Codes are copied, not re-encoded; the main file is replaced atomically."""
    path = os.path.abspath(os.fspath(path))
    with seg.writer_lock(path):
        return compact_locked(path, progress=progress)
