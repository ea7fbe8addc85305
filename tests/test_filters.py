"""vecstore.filters: the predicate language (parse), its evaluation against a plain per-row Python
reference, the columns (types inferred from metadata, take/concat), and every error a user can cause."""

from __future__ import annotations

import numpy as np
import pytest

from vecstore.errors import FormatError, InvalidInputError
from vecstore.filters import compile_filter, concat, encode_fields, parse, take
from vecstore.filters.columns import check_names, column_from_arrays
from vecstore.filters.parse import And, Compare, Has, In, Missing, Not, Or
from vecstore.filters.strategy import choose_strategy
from vecstore.plan import Plan

LANGS = ["en", "de", "fr", "é", None, "en-GB"]


def documents(n: int = 400, seed: int = 0) -> list[dict | None]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        if i % 37 == 0:
            out.append(None)
            continue
        doc = {"lang": LANGS[int(rng.integers(len(LANGS)))], "year": int(rng.integers(1995, 2030)),
               "score": float(np.round(rng.normal(), 3)), "ok": bool(rng.integers(2)),
               "tags": [t for t in ("a", "b", "c", "it's") if rng.random() < 0.3]}
        if i % 5 == 0:
            del doc["year"]
        if i % 7 == 0:
            doc["score"] = None
        if i % 11 == 0:
            doc["score"] = int(rng.integers(-3, 3))  # ints mixed into a float field
        out.append(doc)
    return out


DOCS = documents()
IDS = np.arange(len(DOCS), dtype=np.int64) * 3
COLUMNS = encode_fields(["lang", "year", "score", "ok", "tags"], DOCS, IDS)
TYPES = {name: col.kind for name, col in COLUMNS.items()}


def value(doc, field):
    return None if doc is None else doc.get(field)


def reference(node, doc) -> bool:
    """A plain per-row reading of docs/filters.md: a comparison on a missing value is false."""
    if isinstance(node, And):
        return reference(node.left, doc) and reference(node.right, doc)
    if isinstance(node, Or):
        return reference(node.left, doc) or reference(node.right, doc)
    if isinstance(node, Not):
        return not reference(node.arg, doc)
    v = value(doc, node.field)
    if isinstance(node, Missing):
        return (v is None or v == []) == (not node.negated)
    if isinstance(node, Has):
        return v is not None and node.value in v
    if v is None:
        return False
    if isinstance(node, In):
        return (v in node.values) != node.negated
    return {"=": v == node.value, "!=": v != node.value, "<": v < node.value, "<=": v <= node.value,
            ">": v > node.value, ">=": v >= node.value}[node.op]


PREDICATES = [
    "lang = 'en'", "lang != 'en'", "lang = 'xx'", "lang != 'xx'", "lang < 'en'", "lang <= 'en'", "lang > 'en'",
    "lang >= 'en-GB'", "lang in ('en', 'fr', 'zz')", "lang not in ('en', 'fr')", "lang = 'é'",
    "year >= 2020", "year < 2000", "year = 2010", "year != 2010", "year < 2020.5", "year <= 2020.5",
    "year > 2020.5", "year >= 2020.5", "year = 2020.5", "year != 2020.5", "year < 99999999999999999999",
    "year > -99999999999999999999", "year in (1999, 2001, 2003.0)", "year not in (2000, 2001)",
    "score > 0.5", "score <= -1", "score = 2", "score != 0", "ok = true", "ok != true", "ok = false",
    "ok in (true)", "tags has 'a'", "tags has 'it''s'", "tags has 'zz'", "not tags has 'b'",
    "lang = 'en' and year >= 2020", "lang = 'en' or lang = 'de' and year < 2005",
    "(lang = 'en' or lang = 'de') and year < 2005", "not (lang = 'en')", "not not ok = true",
    "NOT (year >= 2000 AND tags HAS 'c') OR score > 1e0", "score > -.5 and score < 5E-1",
    # beyond every int64 and every binary64: constants, not an OverflowError
    "year < 1e999", "year = 1e999", "year != -1e999", "year > -1e999", "score < 1e999", "score >= -1e999",
    "score < " + "9" * 400, "score > -" + "9" * 400, "score = " + "9" * 400,
    "lang is missing", "lang is not missing", "year IS MISSING", "score is missing", "ok is not missing",
    "tags is missing", "tags is not missing", "not lang is missing", "lang is missing or lang != 'en'",
    "year is not missing and year < 2000",
]


@pytest.mark.parametrize("text", PREDICATES)
def test_evaluation_matches_a_per_row_reference(text):
    predicate = compile_filter(text, TYPES)
    mask = predicate.mask(COLUMNS, len(DOCS))
    expect = np.array([reference(predicate.tree, doc) for doc in DOCS])
    assert mask.dtype == bool and mask.shape == (len(DOCS),)
    np.testing.assert_array_equal(mask, expect)


def test_parse_tree_and_precedence():
    assert parse("a = 1 or b = 2 and not c = 3") == Or(
        Compare("a", "=", 1, 0), And(Compare("b", "=", 2, 9), Not(Compare("c", "=", 3, 23))))
    assert parse("x not in ('a', 'b')") == In("x", ("a", "b"), True, 0)
    assert parse("t HAS 'q'") == Has("t", "q", 0)
    assert parse("s = 'it''s'").value == "it's"
    assert parse("n = -2.5e3").value == -2500.0 and isinstance(parse("n = 7").value, int)
    assert parse("a is missing") == Missing("a", False, 0)
    assert parse("a IS NOT Missing and b = 1") == And(Missing("a", True, 0), Compare("b", "=", 1, 21))
    # 'is' and 'missing' are keywords only after a field name: fields may still be called so
    assert parse("is is missing") == Missing("is", False, 0)
    assert parse("missing = 1 or is != 2") == Or(Compare("missing", "=", 1, 0), Compare("is", "!=", 2, 15))


@pytest.mark.parametrize("text, message, position", [
    ("", "empty", 0),
    ("lang = ", "expected a value", 7),
    ("lang = 'en", "never closed", 7),
    ("lang == 'en'", "expected a value", 6),
    ("lang = 'en' and", "expected a field name", 15),
    ("(lang = 'en'", "expected ')'", 12),
    ("lang 'en'", "expected an operator", 5),
    ("lang = 'en' year = 1", "expected 'and', 'or'", 12),
    ("year in 2020", "expected '('", 8),
    ("year in (1, 2", "expected ',' or ')'", 13),
    ("lang not = 'x'", "expected 'in' after 'not'", 9),
    ("lang = 'en' & year = 1", "unexpected character '&'", 12),
    ("tags has 3", "'has' takes a string", 9),
    ("year = \u0663", "unexpected character", 7),           # digits are ASCII digits
    ("lang is 'en'", "expected 'missing' after is", 8),
    ("lang is not", "expected 'missing' after is not", 11),
    ("lang is not null", "expected 'missing' after is not", 12),
])
def test_syntax_errors_point_at_the_position(text, message, position):
    with pytest.raises(InvalidInputError) as info:
        compile_filter(text, TYPES)
    assert message in str(info.value) and f"position {position}" in str(info.value)


@pytest.mark.parametrize("text, message", [
    ("lng = 'en'", "unknown field 'lng'; the store's fields are lang (string), year (int)"),
    ("year = 'x'", "field 'year' is int, but 'x' is a string"),
    ("lang = 3", "field 'lang' is string, but 3 is a number"),
    ("ok = 1", "field 'ok' is bool, but 1 is a number"),
    ("ok < true", "compare it with = or !="),
    ("year in (1, 'a')", "field 'year' is int, but 'a' is a string"),
    ("tags = 'a'", "is a tags field: test it with tags has 'tag'"),
    ("lang has 'a'", "'has' tests a tags field, but 'lang' is string"),
])
def test_field_and_type_errors(text, message):
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compile_filter(text, TYPES)


def test_a_store_without_fields_says_how_to_add_them():
    with pytest.raises(InvalidInputError, match="add-fields") as info:
        compile_filter("lang = 'en'", {})
    assert "--fields" in str(info.value)
    with pytest.raises(InvalidInputError, match="position"):
        compile_filter("lang = ", {})


def test_inferred_types_and_arrays():
    assert TYPES == {"lang": "string", "year": "int", "score": "float", "ok": "bool", "tags": "tags"}
    lang = COLUMNS["lang"]
    assert lang.dictionary == sorted({d["lang"] for d in DOCS if d and d["lang"]})
    assert lang.codes.dtype == np.dtype("<i4") and (lang.codes[[i for i, d in enumerate(DOCS) if not d]] == -1).all()
    tags = COLUMNS["tags"]
    for i, doc in enumerate(DOCS):
        got = [tags.dictionary[c] for c in tags.codes[tags.offsets[i]:tags.offsets[i + 1]]]
        assert got == sorted(set(value(doc, "tags") or []))
    assert COLUMNS["year"].values.dtype == np.dtype("<i8") and COLUMNS["score"].values.dtype == np.dtype("<f8")


@pytest.mark.parametrize("docs, message", [
    ([{"a": 1}, {"a": "x"}], r"document 1 \(id 3\), field 'a': 'x' is string, but the field is int"),
    ([{"a": [1]}], "cannot be filtered on"),
    ([{"a": {"b": 1}}], "cannot be filtered on"),
    ([{"a": True}, {"a": 1}], "is int, but the field is bool"),
    ([{"a": 1 << 64}], "beyond int64"),
    ([{"a": float("nan")}], "not a finite number"),
    ([{"b": 1}, None], "no document has a value"),
])
def test_bad_values_name_the_document_and_field(docs, message):
    with pytest.raises(InvalidInputError, match=message):
        encode_fields(["a"], docs, np.arange(len(docs)) * 3)


def test_field_names_are_checked():
    assert check_names("a, b_2") == ["a", "b_2"]
    for bad in (["2x"], ["a-b"], ["and"], ["a", "a"], [], [""]):
        with pytest.raises(InvalidInputError):
            check_names(bad)


def test_take_and_concat_keep_every_value():
    rows = np.array([0, 3, 5, 100, 399])
    parts = [take(col, rows) for col in (COLUMNS["tags"],)] + [take(COLUMNS["tags"], None)]
    merged = concat(parts)
    pred = compile_filter("tags has 'a' or tags has 'it''s'", TYPES)
    expect = np.concatenate([pred.mask(COLUMNS, len(DOCS))[rows], pred.mask(COLUMNS, len(DOCS))])
    np.testing.assert_array_equal(pred.mask({"tags": merged}, merged.count), expect)
    other = encode_fields(["lang"], [{"lang": "zz"}, {"lang": "aa"}, None], np.arange(3))["lang"]
    both = concat([COLUMNS["lang"], other])
    assert both.dictionary == sorted(set(COLUMNS["lang"].dictionary) | {"zz", "aa"})
    texts = [None if c < 0 else both.dictionary[c] for c in both.codes]
    assert texts == [value(d, "lang") for d in DOCS] + ["zz", "aa", None]


def test_columns_read_from_a_file_are_checked():
    col = COLUMNS["tags"]
    arrays = {"offsets": col.offsets, "codes": col.codes, "dictionary": col.dictionary}
    assert column_from_arrays("tags", "tags", len(DOCS), arrays, "/fields/tags").count == len(DOCS)
    bad = dict(arrays, codes=np.full_like(col.codes, 99))
    with pytest.raises(FormatError, match="outside the dictionary"):
        column_from_arrays("tags", "tags", len(DOCS), bad, "/fields/tags")
    with pytest.raises(FormatError, match="sorted"):
        column_from_arrays("tags", "tags", len(DOCS), dict(arrays, dictionary=col.dictionary[::-1]), "/fields/tags")
    year = COLUMNS["year"]
    with pytest.raises(FormatError, match="expected <i8"):
        column_from_arrays("year", "int", len(DOCS) + 1, {"values": year.values, "present": year.present}, "/f")


def test_strategy_choice():
    two = Plan("pq48", "raw", 4.0)
    assert choose_strategy(0, 0, 384, two, 4_800_000) == "none"
    assert choose_strategy(5, 5, 384, two, 4_800_000) == "exact"
    assert choose_strategy(500, 10, 384, two, 4_800_000) == "exact"
    # docs/format.md: exact while admitted x dim <= 0.2 x rows x code bytes (pq96x4 over 100,000 x 384)
    assert choose_strategy(2_500, 10, 384, two, 4_800_000) == "exact"
    assert choose_strategy(2_501, 10, 384, two, 4_800_000) == "filtered-two-stage"
    assert choose_strategy(10_000, 10, 384, two, 4_800_000) == "filtered-two-stage"
    assert choose_strategy(50_000, 10, 384, Plan("raw"), 4_800_000) == "filtered-scan"
