"""Filterable fields as typed columns: inferring a field's type from documents' metadata, encoding
the values into the arrays docs/format.md ("Fields") defines, validating arrays read from a file,
and taking / concatenating columns (compaction).

A column holds one value per row (or a set of tags per row) in plain numpy arrays, so that a
predicate is evaluated with a few vectorised operations over the whole column
(vecstore/filters/evaluate.py), never row by row in Python.

Types and their arrays (missing values are allowed in every type):

- ``int``    values <i8 (n,), present u1 (n,)   (missing: present 0, value 0)
- ``float``  values <f8 (n,), present u1 (n,)   (ints mixed into a float field become floats)
- ``bool``   values u1 (n,) 0/1, present u1 (n,)
- ``string`` codes <i4 (n,) into a sorted dictionary of distinct strings (missing: -1)
- ``tags``   offsets <i8 (n + 1,), codes <i4 (offsets[n],): each row's distinct tags, ascending
             codes into a sorted dictionary (missing: no tags)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError, InvalidInputError

TYPES = ("int", "float", "bool", "string", "tags")
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Words of the predicate language (vecstore/filters/parse.py): not usable as field names.
KEYWORDS = frozenset({"and", "or", "not", "in", "has", "true", "false"})
INT64 = (-(1 << 63), (1 << 63) - 1)


@dataclass
class Column:
    """One field of one part (a main file or a segment): its type and arrays (see the module doc).

    ``dictionary`` is a list of distinct strings sorted by code point (string and tags columns).
    """

    name: str
    kind: str
    count: int
    values: np.ndarray | None = None
    present: np.ndarray | None = None
    codes: np.ndarray | None = None
    offsets: np.ndarray | None = None
    dictionary: list[str] | None = None
    _index: dict | None = field(default=None, repr=False)
    _tag_rows: np.ndarray | None = field(default=None, repr=False)

    def code_of(self, text: str) -> int:
        """The dictionary code of ``text``, or -1 when no row holds it."""
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.dictionary)}
        return self._index.get(text, -1)

    def tag_rows(self) -> np.ndarray:
        """For a tags column, the row of every entry of ``codes`` (computed once)."""
        if self._tag_rows is None:
            self._tag_rows = np.repeat(np.arange(self.count, dtype=np.int64), np.diff(self.offsets))
        return self._tag_rows

    def datasets(self) -> dict:
        """What docs/format.md stores for this column: dataset name -> array (``dictionary`` ->
        list of strings, written as a string column)."""
        if self.kind in ("int", "float", "bool"):
            return {"values": self.values, "present": self.present}
        if self.kind == "string":
            return {"codes": self.codes, "dictionary": self.dictionary}
        return {"offsets": self.offsets, "codes": self.codes, "dictionary": self.dictionary}


def check_names(names, where: str = "fields") -> list[str]:
    """Validate a list of field names (or one comma-separated string); return it as a list."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    try:
        names = list(names)
    except TypeError:
        raise InvalidInputError(f"{where} must be a list of field names, got {names!r}") from None
    if not names:
        raise InvalidInputError(f"{where}: give at least one field name")
    for name in names:
        if not isinstance(name, str) or not FIELD_NAME.match(name) or name.lower() in KEYWORDS:
            raise InvalidInputError(
                f"{where}: {name!r} is not a usable field name (letters, digits and _, not starting with a "
                f"digit, at most 64 characters, not one of {', '.join(sorted(KEYWORDS))})"
            )
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{where}: a field is named twice ({', '.join(names)})")
    return names


# -- from metadata ----------------------------------------------------------------------------------


def _kind_of(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return "tags"
    return "?"


def _describe(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def encode_fields(names: Sequence[str], metadata: Sequence[dict | None], ids: np.ndarray,
                  types: dict[str, str] | None = None) -> dict[str, Column]:
    """Columns of ``names`` from each document's metadata dict (None: no metadata).

    A field's type is inferred from its values (``types`` fixes it, for an append to a store that
    already has the field): ints, floats (ints mixed in become floats), booleans, strings, lists of
    strings (tags). A missing key or a None value is a missing value. Anything else (another type
    in the same field, a nested object, a list holding non-strings, an int beyond int64, a
    non-finite float) is an InvalidInputError naming the document and the field.
    """
    out = {}
    for name in names:
        values = [None if doc is None else doc.get(name) for doc in metadata]
        kind = None if types is None else types[name]
        inferred = None
        for row, value in enumerate(values):
            k = _kind_of(value)
            if k is None:
                continue
            if k == "?":
                raise InvalidInputError(
                    f"document {row} (id {int(ids[row])}), field {name!r}: {_describe(value)} cannot be filtered "
                    "on (use a number, true/false, a string or a list of strings)")
            expect = kind or inferred
            if expect is None or expect == k or (expect == "float" and k == "int"):
                inferred = inferred or k
                continue
            if kind is None and expect == "int" and k == "float":
                inferred = "float"
                continue
            raise InvalidInputError(
                f"document {row} (id {int(ids[row])}), field {name!r}: {_describe(value)} is {k}, but the field "
                f"is {expect}{'' if kind else ' (from earlier documents)'}: give every document the same type")
        kind = kind or inferred
        if kind is None:
            raise InvalidInputError(f"field {name!r}: no document has a value for it (check the metadata's keys)")
        out[name] = _encode(name, kind, values, ids)
    return out


def _encode(name: str, kind: str, values: list, ids: np.ndarray) -> Column:
    n = len(values)
    present = np.array([v is not None for v in values], dtype=np.uint8)
    if kind in ("int", "float", "bool"):
        filled = [0 if v is None else v for v in values]
        if kind == "int":
            for row, v in enumerate(filled):
                if not INT64[0] <= v <= INT64[1]:
                    raise InvalidInputError(f"document {row} (id {int(ids[row])}), field {name!r}: {v} is beyond "
                                            "int64")
            arr = np.array(filled, dtype="<i8").reshape(n)
        elif kind == "float":
            arr = np.array([float(v) for v in filled], dtype="<f8").reshape(n)
            bad = ~np.isfinite(arr)
            if bad.any():
                row = int(np.argmax(bad))
                raise InvalidInputError(f"document {row} (id {int(ids[row])}), field {name!r}: {values[row]} is "
                                        "not a finite number")
        else:
            arr = np.array(filled, dtype=np.uint8).reshape(n)
        return Column(name, kind, n, values=arr, present=present)
    if kind == "string":
        dictionary = sorted({v for v in values if v is not None})
        index = {s: i for i, s in enumerate(dictionary)}
        codes = np.array([-1 if v is None else index[v] for v in values], dtype="<i4").reshape(n)
        return Column(name, kind, n, codes=codes, dictionary=dictionary)
    dictionary = sorted({t for v in values if v is not None for t in v})
    index = {s: i for i, s in enumerate(dictionary)}
    per_row = [sorted({index[t] for t in v}) if v else [] for v in values]
    offsets = np.zeros(n + 1, dtype="<i8")
    np.cumsum([len(r) for r in per_row], out=offsets[1:])
    codes = np.array([c for r in per_row for c in r], dtype="<i4").reshape(-1)
    return Column(name, kind, n, codes=codes, offsets=offsets, dictionary=dictionary)


# -- from a file --------------------------------------------------------------------------------------


def column_from_arrays(name: str, kind: str, count: int, arrays: dict, where: str) -> Column:
    """A column from arrays read from a file (``dictionary``: the decoded strings), checked against
    docs/format.md; a FormatError says what is wrong. Costs one pass over the arrays."""

    def expect(key, dtype, shape):
        arr = arrays[key]
        if arr.dtype != np.dtype(dtype) or arr.shape != shape:
            raise FormatError(f"{where}/{key}: {arr.dtype.str}{arr.shape}, expected {np.dtype(dtype).str}{shape}")
        return arr

    if kind in ("int", "float", "bool"):
        values = expect("values", {"int": "<i8", "float": "<f8", "bool": "u1"}[kind], (count,))
        present = expect("present", "u1", (count,))
        if (present > 1).any() or (kind == "bool" and (values > 1).any()):
            raise FormatError(f"{where}: 'present' and boolean values must be 0 or 1; the file is damaged")
        if kind == "float" and not np.isfinite(values).all():
            raise FormatError(f"{where}/values: not finite; the file is damaged")
        return Column(name, kind, count, values=values, present=present)
    dictionary = arrays["dictionary"]
    if any(a >= b for a, b in zip(dictionary, dictionary[1:])):
        raise FormatError(f"{where}/dictionary: not sorted and distinct; the file is damaged")
    if kind == "string":
        codes = expect("codes", "<i4", (count,))
        offsets = None
    else:
        offsets = expect("offsets", "<i8", (count + 1,))
        if offsets[0] != 0 or (np.diff(offsets) < 0).any():
            raise FormatError(f"{where}/offsets: must start at 0 and not decrease; the file is damaged")
        codes = arrays["codes"]
        if codes.dtype != np.dtype("<i4") or codes.shape != (int(offsets[-1]),):
            raise FormatError(f"{where}/codes: {codes.dtype.str}{codes.shape}, expected <i4({int(offsets[-1])},)")
    low = -1 if kind == "string" else 0
    if codes.shape[0] and (codes.min() < low or codes.max() >= len(dictionary)):
        raise FormatError(f"{where}/codes: a code outside the dictionary; the file is damaged")
    return Column(name, kind, count, codes=codes, offsets=offsets, dictionary=list(dictionary))


# -- taking rows and concatenating (compaction) -----------------------------------------------------


def take(column: Column, rows: np.ndarray | None) -> Column:
    """The column restricted to ``rows`` (sorted; None: all rows), in memory."""
    if rows is None:
        rows = np.arange(column.count, dtype=np.int64)
    n = rows.shape[0]
    if column.kind in ("int", "float", "bool"):
        return Column(column.name, column.kind, n, values=np.asarray(column.values)[rows],
                      present=np.asarray(column.present)[rows])
    if column.kind == "string":
        return Column(column.name, column.kind, n, codes=np.asarray(column.codes)[rows],
                      dictionary=column.dictionary)
    offsets = np.asarray(column.offsets)
    lengths = offsets[rows + 1] - offsets[rows]
    new_offsets = np.zeros(n + 1, dtype="<i8")
    np.cumsum(lengths, out=new_offsets[1:])
    # positions of the kept entries: for each kept row, offsets[row] .. offsets[row + 1]
    starts = np.repeat(offsets[rows] - new_offsets[:-1], lengths)
    picked = np.asarray(column.codes)[starts + np.arange(new_offsets[-1])]
    return Column(column.name, column.kind, n, codes=picked.astype("<i4"), offsets=new_offsets,
                  dictionary=column.dictionary)


def concat(columns: Sequence[Column]) -> Column:
    """One column of the parts' rows in order (dictionaries merged and codes renumbered)."""
    first = columns[0]
    kind = first.kind
    if any(c.kind != kind for c in columns):
        raise FormatError(f"field {first.name!r} has different types in the store's parts; the store is damaged")
    n = sum(c.count for c in columns)
    if kind in ("int", "float", "bool"):
        return Column(first.name, kind, n, values=np.concatenate([np.asarray(c.values) for c in columns]),
                      present=np.concatenate([np.asarray(c.present) for c in columns]))
    dictionary = sorted(set().union(*(c.dictionary for c in columns)))
    index = {s: i for i, s in enumerate(dictionary)}
    remapped = []
    for c in columns:
        table = np.array([index[s] for s in c.dictionary] + [-1], dtype="<i4")  # code -1 -> the last entry
        remapped.append(table[np.asarray(c.codes)])
    codes = np.concatenate(remapped).astype("<i4") if remapped else np.zeros(0, "<i4")
    if kind == "string":
        return Column(first.name, kind, n, codes=codes, dictionary=dictionary)
    offsets = np.zeros(n + 1, dtype="<i8")
    np.cumsum(np.concatenate([np.diff(np.asarray(c.offsets)) for c in columns]), out=offsets[1:])
    # each row's codes stay ascending: renumbering keeps the order of a sorted dictionary's codes
    return Column(first.name, kind, n, codes=codes, offsets=offsets, dictionary=dictionary)


def finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
