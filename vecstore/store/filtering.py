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
from ..query import FilteredSearchResult, merge_results
from .file import StoreFile
from .view import View


def part_masks(view: View, where, allow) -> list[np.ndarray]:
    """One uint8 mask (part.count,) per part of ``view``: rows that are live, satisfy ``where`` (a
    filter text) and are in ``allow`` (ids, or a boolean mask over the store's live ids in the order
    of ``Store.ids``). Validated before any part is touched."""
    predicate = None
    if where is not None:
        predicate = compile_filter(where, view.base.field_types)
    allowed_parts = _allow_parts(view, allow) if allow is not None else None
    masks = []
    for i, part in enumerate(view.parts):
        if predicate is not None:
            if part.field_types != view.base.field_types:
                raise FormatError(f"{part.path!r} has other fields than the store's main file; the store is damaged")
            mask = predicate.mask(part.field_columns(), part.count)
        else:
            mask = np.ones(part.count, dtype=bool)
        if allowed_parts is not None:
            mask &= allowed_parts[i]
        dead = view.dead[i]
        if dead.shape[0]:
            mask &= ~_member(np.asarray(part.ids), dead)
        masks.append(mask.view(np.uint8))
    return masks


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """values[i] in sorted_set (sorted, unique), as a boolean array (a binary search each)."""
    if sorted_set.shape[0] == 0:
        return np.zeros(values.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_set, values), sorted_set.shape[0] - 1)
    return sorted_set[pos] == values


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
    ids = np.unique(int64_ids(arr.ravel() if arr.ndim else arr.reshape(1), "allow= ids"))
    return [_member(np.asarray(part.ids), ids) for part in view.parts]


def search_masked(view: View, xq: np.ndarray, k: int, plan: Plan, masks: list[np.ndarray],
                  nprobe: int | None = None) -> FilteredSearchResult:
    """Each part's top-k among its mask's rows (StoreFile.search_allowed), merged."""
    results, strategies = [], []
    for part, mask in zip(view.parts, masks):
        result, strategy = part.search_allowed(xq, k, plan, mask, nprobe)
        results.append(result)
        strategies.append(strategy)
    merged = results[0] if len(results) == 1 else merge_results(results, k, view.base.metric)
    allowed = sum(int(np.count_nonzero(m)) for m in masks)
    return FilteredSearchResult(merged.distances, merged.ids, strategies, allowed)


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
