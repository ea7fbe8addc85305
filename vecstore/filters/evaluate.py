"""Checking a parsed filter against a store's fields, and evaluating it over a part's columns into
one boolean row mask, with whole-column numpy operations (never a Python loop over rows).

Semantics (docs/filters.md, normative for any reader):

- A comparison (``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in``, ``not in``, ``has``) is false on a
  row whose value is missing; ``is missing`` holds exactly there, ``is not missing`` elsewhere; ``not`` is the plain complement, so ``not (lang = 'en')`` holds for
  rows without a language and ``lang != 'en'`` does not.
- int fields compare exactly with any number (``year < 2020.5`` is ``year <= 2020``); float fields
  compare as float64. Strings compare by Unicode code point. bool fields take ``=``/``!=``/``in``
  with true/false. tags fields take only ``has``: the row holds that tag.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping

import numpy as np

from ..errors import InvalidInputError
from .columns import Column
from .parse import And, Compare, Has, In, Missing, Not, Or, fields_of, parse

_NAMES = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
_KIND_OF_VALUE = {bool: "bool", int: "number", float: "number", str: "string"}
_ACCEPTS = {"int": "number", "float": "number", "bool": "bool", "string": "string"}


def no_fields_message(what: str = "this store") -> str:
    return (f"{what} has no filterable fields: add them from the documents' metadata with "
            "vecstore.add_fields(path, ['lang', 'year']) (CLI: vecstore add-fields STORE lang,year), or declare "
            "them when building (vecstore.build(..., fields=[...]), CLI: vecstore build ... --fields lang,year)")


class Predicate:
    """A filter checked against a store's field types; :meth:`mask` evaluates it on one part."""

    def __init__(self, text: str, types: Mapping[str, str]):
        self.text = text
        self.tree = parse(text)
        self.types = dict(types)
        self._check(self.tree)

    def __repr__(self) -> str:
        return f"Predicate({self.text!r})"

    @property
    def fields(self) -> list[str]:
        return fields_of(self.tree)

    # -- checks --------------------------------------------------------------------------------------

    def _fail(self, message: str, pos: int):
        raise InvalidInputError(f"filter {self.text!r}: {message} (at position {pos})")

    def _check(self, node) -> None:
        if isinstance(node, (And, Or)):
            self._check(node.left)
            self._check(node.right)
            return
        if isinstance(node, Not):
            self._check(node.arg)
            return
        kind = self.types.get(node.field)
        if kind is None:
            known = ", ".join(f"{n} ({t})" for n, t in self.types.items())
            self._fail(f"unknown field {node.field!r}; the store's fields are {known}", node.pos)
        if isinstance(node, Missing):  # any type
            return
        if isinstance(node, Has):
            if kind != "tags":
                self._fail(f"'has' tests a tags field, but {node.field!r} is {kind}: use {node.field} = ...",
                           node.pos)
            return
        if kind == "tags":
            self._fail(f"{node.field!r} is a tags field: test it with {node.field} has 'tag'", node.pos)
        values = node.values if isinstance(node, In) else (node.value,)
        for value in values:
            got = _KIND_OF_VALUE[type(value)]
            if got != _ACCEPTS[kind]:
                self._fail(f"field {node.field!r} is {kind}, but {value!r} is {_NAMES[type(value)]}", node.pos)
        if kind == "bool" and isinstance(node, Compare) and node.op not in ("=", "!="):
            self._fail(f"field {node.field!r} is bool: compare it with = or !=, not {node.op}", node.pos)

    # -- evaluation -------------------------------------------------------------------------------

    def mask(self, columns: Mapping[str, Column], count: int) -> np.ndarray:
        """Boolean (count,) mask of the rows that satisfy the filter."""
        out = _eval(self.tree, columns, count)
        if out.shape != (count,):  # a constant (a literal no row holds, an out-of-range number)
            out = np.broadcast_to(out, (count,)).copy()
        return out


def compile_filter(text: str, types: Mapping[str, str]) -> Predicate:
    """Parse ``text`` and check it against a store's ``{field: type}`` (InvalidInputError if the
    store has no fields, names an unknown field, or compares a field with a value of another type)."""
    if not types:
        parse(text)  # a syntax error first: it is the nearer mistake
        raise InvalidInputError(no_fields_message())
    return Predicate(text, types)


def _eval(node, columns: Mapping[str, Column], count: int) -> np.ndarray:
    if isinstance(node, And):
        return _eval(node.left, columns, count) & _eval(node.right, columns, count)
    if isinstance(node, Or):
        return _eval(node.left, columns, count) | _eval(node.right, columns, count)
    if isinstance(node, Not):
        return ~_eval(node.arg, columns, count)
    col = columns[node.field]
    if isinstance(node, Missing):
        present = _present(col, count)
        return present.copy() if node.negated else ~present
    if isinstance(node, Has):
        return _has(col, node.value, count)
    if isinstance(node, In):
        hit = np.zeros(count, dtype=bool)
        for value in node.values:
            hit |= _compare(col, "=", value, count)
        if node.negated:
            return _present(col, count) & ~hit
        return hit
    return _compare(col, node.op, node.value, count)


def _present(col: Column, count: int) -> np.ndarray:
    """Rows whose value is not missing (docs/format.md, Fields: a tags value is missing when empty)."""
    if col.kind == "string":
        return np.asarray(col.codes) >= 0
    if col.kind == "tags":
        return np.diff(np.asarray(col.offsets)) > 0
    return np.asarray(col.present).view(bool)


def _compare(col: Column, op: str, value, count: int) -> np.ndarray:
    if col.kind == "string":
        return _compare_string(col, op, value)
    present = np.asarray(col.present).view(bool)
    values = np.asarray(col.values)
    if col.kind == "int":
        test = _int_comparison(op, value)
        if isinstance(test, bool):
            return present.copy() if test else np.zeros(count, dtype=bool)
        op, value = test
    elif col.kind == "bool":
        value = np.uint8(value)
    else:
        value = _binary64(value)
    hit = {"=": np.equal, "!=": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater,
           ">=": np.greater_equal}[op](values, value)
    return hit & present


def _binary64(value) -> float:
    """A number literal as an IEEE binary64 (an integer rounded to nearest, beyond the range an
    infinity), what a float field compares with (docs/filters.md)."""
    if isinstance(value, float):
        return value
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _int_comparison(op: str, value):
    """``x op value`` for int64 x and any number value, as (op, int64 value), or a bool when it
    holds for every present row (True) or none (False)."""
    if isinstance(value, float) and math.isinf(value):  # 1e999: beyond every int64
        value = (1 << 64) if value > 0 else -(1 << 64)
    elif isinstance(value, float):
        if op in ("=", "!="):
            if value != math.floor(value):
                return op == "!="
            value = int(value)
        elif op in ("<", ">="):
            value = math.ceil(value)
        else:
            value = math.floor(value)
    lo, hi = -(1 << 63), (1 << 63) - 1
    if value > hi:
        return op in ("<", "<=", "!=")
    if value < lo:
        return op in (">", ">=", "!=")
    return op, np.int64(value)


def _compare_string(col: Column, op: str, value: str) -> np.ndarray:
    codes = np.asarray(col.codes)
    if op in ("=", "!="):
        code = col.code_of(value)
        if code < 0:
            return codes >= 0 if op == "!=" else np.zeros(codes.shape, dtype=bool)
        return codes == code if op == "=" else (codes != code) & (codes >= 0)
    # the dictionary is sorted by code point: an order on strings is an order on codes
    if op == "<":
        return (codes >= 0) & (codes < bisect.bisect_left(col.dictionary, value))
    if op == "<=":
        return (codes >= 0) & (codes < bisect.bisect_right(col.dictionary, value))
    if op == ">":
        return codes >= bisect.bisect_right(col.dictionary, value)
    return codes >= bisect.bisect_left(col.dictionary, value)


def _has(col: Column, value: str, count: int) -> np.ndarray:
    out = np.zeros(count, dtype=bool)
    code = col.code_of(value)
    if code >= 0:
        out[col.tag_rows()[np.asarray(col.codes) == code]] = True
    return out
