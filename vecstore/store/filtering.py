"""Filtered search over a view (main file + segments - deletions): ``where=`` and ``allow=`` turned
into one uint8 row mask per part, each part searched with its mask, the results merged; and the
filterable fields a build, an append, a compaction or :func:`add_fields` writes.

Deleted documents are one more mask: with a filter, a part's deleted rows are zero in its mask, so
the kernels never see them (no over-asking and dropping as in an unfiltered search).
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import FormatError, InvalidInputError
from ..filters import Column, check_names, compile_filter, concat, encode_fields, take
from ..filters.columns import TYPES
from ..ingest import int64_ids
from ..plan import Plan
from ..query import FilteredSearchResult, filtered_result, merge_results
from .file import StoreFile
from .masks import RowMask
from .view import View


def part_masks(view: View, where, allow) -> list[RowMask]:
    """One :class:`RowMask` per part of ``view``: rows that are live, satisfy ``where`` (a filter
    text) and are in ``allow`` (ids, or a boolean mask over the store's live ids in the order of
    ``Store.ids``). Validated before any part is touched. A ``where`` text is compiled and evaluated
    once per view (the view's FilterCache keeps both); ``allow`` is applied per call."""
    cache = view.filter_cache
    text = where if isinstance(where, str) else None
    masks = cache.get_masks(text) if text is not None else None
    predicate = None
    if masks is None and where is not None:
        predicate = cache.get_filter(text) if text is not None else None
        if predicate is None:
            predicate = compile_filter(where, view.base.field_types)
            if text is not None:
                cache.put_filter(text, predicate)
    allowed_parts = _allow_parts(view, allow) if allow is not None else None
    if masks is None and (predicate is not None or allowed_parts is None):
        masks = [RowMask(_where_mask(view, i, predicate)) for i in range(len(view.parts))]
        if text is not None:
            cache.put_masks(text, masks)
    if allowed_parts is None:
        return masks
    out = []
    for i, allowed in enumerate(allowed_parts):  # fresh arrays: safe to change in place
        if masks is None:
            if view.dead[i].shape[0]:
                allowed &= view.live_mask(i)
        else:
            allowed &= masks[i].mask.view(bool)
        out.append(RowMask(allowed))
    return out


def _where_mask(view: View, i: int, predicate) -> np.ndarray:
    """Boolean mask of part i's live rows that satisfy ``predicate`` (None: every live row)."""
    part = view.parts[i]
    if predicate is not None:
        if part.field_types != view.base.field_types:
            raise FormatError(f"{part.path!r} has other fields than the store's main file; the store is damaged")
        mask = predicate.mask(part.field_columns(), part.count)
    else:
        mask = np.ones(part.count, dtype=bool)
    if view.dead[i].shape[0]:
        mask &= view.live_mask(i)
    return mask


def _allow_parts(view: View, allow) -> list[np.ndarray]:
    try:
        arr = np.asarray(allow)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"allow= must be ids or a boolean mask over the store's ids ({exc})") from None
    if arr.dtype == bool:
        if arr.shape != (view.count,):
            raise InvalidInputError(
                f"allow= as a boolean mask needs one entry per live document in the order of store.ids "
                f"({view.count}), got shape {arr.shape}; or pass the allowed ids")
        out, start = [], 0
        for i, part in enumerate(view.parts):
            rows = view.live_rows(i)
            live = part.count if rows is None else rows.shape[0]
            mask = np.zeros(part.count, dtype=bool)
            mask[slice(None) if rows is None else rows] = arr[start:start + live]
            out.append(mask)
            start += live
        return out
    ids = int64_ids(arr.ravel() if arr.ndim else arr.reshape(1), "allow= ids")
    return [part.id_mask(ids) for part in view.parts]


def search_masked(view: View, xq: np.ndarray, k: int, plan: Plan, masks: list[RowMask],
                  nprobe: int | None = None) -> FilteredSearchResult:
    """Each part's top-k among its mask's rows (PreparedPlan.search_allowed), merged."""
    if len(masks) == 1:
        return view.prepared(plan).search_allowed(xq, k, masks[0], nprobe)
    results = [view.prepared(plan, i).search_allowed(xq, k, mask, nprobe) for i, mask in enumerate(masks)]
    merged = merge_results(results, k, view.base.metric)
    return filtered_result(merged, tuple(r.strategies[0] for r in results), sum(r.allowed for r in results))


# -- writing fields -----------------------------------------------------------------------------------


def metadata_dicts(texts: list[str] | None, count: int) -> list[dict | None]:
    """Per-document metadata dicts from the canonical JSON texts ingest.read_metadata returns."""
    if texts is None:
        return [None] * count
    return [json.loads(t) if t else None for t in texts]


def field_contents(columns: dict[str, Column]) -> dict:
    """What StoreContents.fields holds: name -> (type, {dataset: array or strings})."""
    return {name: (col.kind, col.datasets()) for name, col in columns.items()}


def build_fields(fields, metadata_texts: list[str] | None, ids: np.ndarray) -> dict | None:
    """The columns a build writes for ``fields`` (names, "a,b", or {name: type} to fix the types
    instead of inferring them), from the documents' metadata."""
    if fields is None:
        return None
    types = None
    if isinstance(fields, dict):
        types = {name: kind for name, kind in fields.items()}
        bad = [k for k in types.values() if k not in TYPES]
        if bad:
            raise InvalidInputError(f"field type {bad[0]!r} is not one of {', '.join(TYPES)}")
    names = check_names(list(fields) if isinstance(fields, dict) else fields)
    if metadata_texts is None:
        raise InvalidInputError("fields= takes each document's values from its metadata: give metadata= "
                                "(CLI: --metadata FILE.jsonl) too")
    return field_contents(encode_fields(names, metadata_dicts(metadata_texts, ids.shape[0]), ids, types))


def append_fields(base: StoreFile, fields, metadata_texts: list[str] | None, ids: np.ndarray) -> dict | None:
    """The columns of an appended segment: the store's fields, with the store's types."""
    types = base.field_types
    if fields is not None and check_names(fields) != list(types):
        raise InvalidInputError(
            f"the store's filterable fields are {', '.join(types) or 'none'}: an append takes them as they are "
            "(add others to the whole store with vecstore.add_fields)")
    if not types:
        return None
    return field_contents(encode_fields(list(types), metadata_dicts(metadata_texts, ids.shape[0]), ids, types))


def compacted_fields(view: View, live: list[np.ndarray | None]) -> dict | None:
    """The fields of a compaction: each part's live rows, concatenated."""
    types = view.base.field_types
    if not types:
        return None
    out = {}
    for name in types:
        parts = []
        for part, rows in zip(view.parts, live):
            if part.field_types.get(name) != types[name]:
                raise FormatError(f"{part.path!r}: field {name!r} differs from the main file's; the store is damaged")
            parts.append(take(part.field_columns()[name], rows))
        out[name] = concat(parts)
    return field_contents(out)
