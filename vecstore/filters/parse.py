"""The predicate language of ``where=`` (docs/filters.md): parsing text into a small tree.

    expr       = term { "or" term }
    term       = factor { "and" factor }
    factor     = "not" factor | "(" expr ")" | comparison
    comparison = FIELD op literal
               | FIELD [ "not" ] "in" "(" literal { "," literal } ")"
               | FIELD "has" STRING
               | FIELD "is" [ "not" ] "missing"
    op         = "=" | "!=" | "<" | "<=" | ">" | ">="
    literal    = STRING | NUMBER | "true" | "false"
    STRING     = "'" { any character but "'", or "''" for one quote } "'"
    NUMBER     = [ "-" ] digits [ "." digits ] [ ( "e" | "E" ) [ "+" | "-" ] digits ]
    FIELD      = letter or "_", then letters, digits, "_"

Letters, digits and white space are ASCII (a "٣" is not a digit here). A NUMBER with a "." or an
exponent is a binary64 (the nearest to its decimal text); one without is an integer of any size.

Keywords are case-insensitive; field names are not. ``is`` and ``missing`` are keywords only in
that place (after a field name), so fields may still be called ``is`` or ``missing``. ``and`` binds tighter than ``or``; ``not``
tighter than both. Errors are InvalidInputErrors that give the position (0-based character offset).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import InvalidInputError

OPS = ("=", "!=", "<", "<=", ">", ">=")


@dataclass(frozen=True)
class Compare:
    field: str
    op: str          # one of OPS
    value: object    # str, int, float or bool
    pos: int


@dataclass(frozen=True)
class In:
    field: str
    values: tuple
    negated: bool
    pos: int


@dataclass(frozen=True)
class Has:
    field: str
    value: str
    pos: int


@dataclass(frozen=True)
class Missing:
    """``field is missing`` (or ``is not missing``: negated)."""
    field: str
    negated: bool
    pos: int


@dataclass(frozen=True)
class Not:
    arg: object


@dataclass(frozen=True)
class And:
    left: object
    right: object


@dataclass(frozen=True)
class Or:
    left: object
    right: object


_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<number>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>!=|<=|>=|=|<|>)
  | (?P<punct>[(),])
  | (?P<unclosed>')
""", re.VERBOSE | re.ASCII)   # digits and white space are ASCII, as the grammar says
KEYWORDS = {"and", "or", "not", "in", "has", "true", "false"}


@dataclass(frozen=True)
class _Tok:
    kind: str   # string number word keyword op punct end
    text: str
    value: object
    pos: int


class FilterSyntax:
    """Parser state over one text (recursive descent, one token of look-ahead)."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = self._tokenize(text)
        self.i = 0

    def fail(self, what: str, pos: int):
        shown = self.text if len(self.text) <= 120 else self.text[:117] + "..."
        near = self.text[pos:pos + 20]
        where = f"at position {pos}" + (f" (near {near!r})" if near.strip() else " (end of the filter)")
        raise InvalidInputError(f"filter {shown!r}: {what} {where}")

    def _tokenize(self, text: str) -> list[_Tok]:
        out, pos = [], 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                self.fail(f"unexpected character {text[pos]!r}", pos)
            kind, raw = m.lastgroup, m.group()
            if kind == "unclosed":
                self.fail("a string that is never closed (strings are in single quotes; '' is a quote)", pos)
            if kind == "string":
                out.append(_Tok("string", raw, raw[1:-1].replace("''", "'"), pos))
            elif kind == "number":
                value = float(raw) if any(c in raw for c in ".eE") else int(raw)
                out.append(_Tok("number", raw, value, pos))
            elif kind == "word":
                low = raw.lower()
                if low in KEYWORDS:
                    out.append(_Tok("keyword", low, {"true": True, "false": False}.get(low), pos))
                else:
                    out.append(_Tok("word", raw, raw, pos))
            elif kind != "space":
                out.append(_Tok(kind, raw, raw, pos))
            pos = m.end()
        out.append(_Tok("end", "", None, len(text)))
        return out

    # -- grammar -----------------------------------------------------------------------------------

    @property
    def tok(self) -> _Tok:
        return self.tokens[self.i]

    def take(self) -> _Tok:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def is_kw(self, word: str) -> bool:
        return self.tok.kind == "keyword" and self.tok.text == word

    def parse(self):
        if self.tok.kind == "end":
            self.fail("the filter is empty: expected a condition such as lang = 'en'", 0)
        node = self.expr()
        if self.tok.kind != "end":
            self.fail(f"expected 'and', 'or' or the end, found {self.tok.text!r}", self.tok.pos)
        return node

    def expr(self):
        node = self.term()
        while self.is_kw("or"):
            self.take()
            node = Or(node, self.term())
        return node

    def term(self):
        node = self.factor()
        while self.is_kw("and"):
            self.take()
            node = And(node, self.factor())
        return node

    def factor(self):
        if self.is_kw("not"):
            self.take()
            return Not(self.factor())
        if self.tok.kind == "punct" and self.tok.text == "(":
            self.take()
            node = self.expr()
            if not (self.tok.kind == "punct" and self.tok.text == ")"):
                self.fail("expected ')'", self.tok.pos)
            self.take()
            return node
        return self.comparison()

    def comparison(self):
        tok = self.take()
        if tok.kind != "word":
            what = "the end" if tok.kind == "end" else repr(tok.text)
            self.fail(f"expected a field name, '(' or 'not', found {what}", tok.pos)
        field, pos = tok.value, tok.pos
        if self.tok.kind == "op":
            op = self.take().text
            return Compare(field, op, self.literal(), pos)
        if self.tok.kind == "word" and self.tok.text.lower() == "is":
            self.take()
            negated = False
            if self.is_kw("not"):
                self.take()
                negated = True
            if not (self.tok.kind == "word" and self.tok.text.lower() == "missing"):
                found = "the end" if self.tok.kind == "end" else repr(self.tok.text)
                self.fail(f"expected 'missing' after {'is not' if negated else 'is'}, found {found}", self.tok.pos)
            self.take()
            return Missing(field, negated, pos)
        if self.is_kw("has"):
            self.take()
            value_tok = self.tok
            value = self.literal()
            if not isinstance(value, str):
                self.fail("'has' takes a string in single quotes", value_tok.pos)
            return Has(field, value, pos)
        negated = False
        if self.is_kw("not"):
            self.take()
            negated = True
            if not self.is_kw("in"):
                self.fail("expected 'in' after 'not'", self.tok.pos)
        if self.is_kw("in"):
            self.take()
            if not (self.tok.kind == "punct" and self.tok.text == "("):
                self.fail("expected '(' and a list of values after 'in'", self.tok.pos)
            self.take()
            values = [self.literal()]
            while self.tok.kind == "punct" and self.tok.text == ",":
                self.take()
                values.append(self.literal())
            if not (self.tok.kind == "punct" and self.tok.text == ")"):
                self.fail("expected ',' or ')' in the list of values", self.tok.pos)
            self.take()
            return In(field, tuple(values), negated, pos)
        found = "the end" if self.tok.kind == "end" else repr(self.tok.text)
        self.fail(f"expected an operator (= != < <= > >= in, not in, has, is missing) after {field!r}, found {found}",
                  self.tok.pos)

    def literal(self):
        tok = self.take()
        if tok.kind in ("string", "number") or (tok.kind == "keyword" and tok.text in ("true", "false")):
            return tok.value
        what = "the end" if tok.kind == "end" else repr(tok.text)
        self.fail(f"expected a value (a 'string', a number, true or false), found {what}", tok.pos)


def parse(text: str):
    """The tree of a filter text (see the module doc); InvalidInputError with the position if it
    is not one."""
    if not isinstance(text, str):
        raise InvalidInputError(f"where= must be a filter text such as \"lang = 'en'\", got {type(text).__name__}")
    return FilterSyntax(text).parse()


def fields_of(node) -> list[str]:
    """The field names a tree uses, in order of first use."""
    out: list[str] = []

    def walk(n):
        if isinstance(n, (And, Or)):
            walk(n.left)
            walk(n.right)
        elif isinstance(n, Not):
            walk(n.arg)
        elif n.field not in out:
            out.append(n.field)

    walk(node)
    return out
