"""The one tokenizer of vecstore's text encoders, specified so that any language can reproduce it.

Tokenizer ``vecstore-words``, version 1. For a text (a sequence of Unicode code points):

1. Normalise to NFKC (Unicode Normalization Form KC): ``ﬁ`` -> ``fi``, full-width ``Ａ２`` -> ``A2``,
   decomposed ``e`` + U+0301 -> ``é``.
2. Lowercase with the Unicode default full lowercase mapping (UnicodeData plus the unconditional
   SpecialCasing entries and the Final_Sigma context; no language tailoring): ``Σ`` at the end of a
   word becomes ``ς``, ``İ`` becomes ``i`` + U+0307. No case folding: ``ß`` stays ``ß``.
3. The tokens are the maximal runs of letters, marks and numbers, left to right:
   every non-overlapping match of the regular expression ``[\\p{L}\\p{M}\\p{N}]+``
   (general categories Lu Ll Lt Lm Lo, Mn Mc Me, Nd Nl No). Everything else separates tokens and
   is dropped: spaces, punctuation (so apostrophes and hyphens split: ``don't`` -> ``don``, ``t``;
   ``out-of-bounds`` -> ``out``, ``of``, ``bounds``), the underscore, symbols, controls.

The steps run in that order (normalise, then lowercase, then split). Categories come from the
Unicode Character Database of the implementation (this one: :data:`UNICODE_VERSION`); versions
differ only on characters assigned in between. Ports:

- Java: ``Normalizer.normalize(s, NFKC).toLowerCase(Locale.ROOT)``, then
  ``Pattern.compile("[\\\\p{L}\\\\p{M}\\\\p{N}]+")`` and ``Matcher.find()`` in a loop.
- C++ with ICU: ``Normalizer2::getNFKCInstance``, ``UnicodeString::toLower(Locale::getRoot())``,
  ``RegexMatcher`` with the same pattern.

Python's ``re`` has no ``\\p{...}`` classes; ``[^\\W_]`` is exactly ``[\\p{L}\\p{N}]`` (checked over all
code points), and the marks are added as an explicit class built once from :mod:`unicodedata`.
"""

from __future__ import annotations

import re
import threading
import unicodedata

from ..errors import InvalidInputError

TOKENIZER_ID = "vecstore-words"
TOKENIZER_VERSION = 1
#: The pattern of step 3, for engines with Unicode property classes (Java, ICU, PCRE, ``regex``).
TOKEN_PATTERN = r"[\p{L}\p{M}\p{N}]+"
UNICODE_VERSION = unicodedata.unidata_version

_pattern: re.Pattern | None = None
_lock = threading.Lock()


def tokenizer_config() -> dict:
    """The JSON-safe identity of this tokenizer, as recorded in every encoder config."""
    return {"id": TOKENIZER_ID, "version": TOKENIZER_VERSION}


def _mark_ranges() -> str:
    """A regex class body listing every code point of general category M (built once, ~0.3 s)."""
    parts = []
    start = None
    for cp in range(0x110001):
        is_mark = cp < 0x110000 and unicodedata.category(chr(cp))[0] == "M"
        if is_mark and start is None:
            start = cp
        elif not is_mark and start is not None:
            end = cp - 1
            parts.append(f"\\U{start:08x}" if start == end else f"\\U{start:08x}-\\U{end:08x}")
            start = None
    return "".join(parts)


def token_regex() -> re.Pattern:
    """The compiled Python equivalent of :data:`TOKEN_PATTERN` (thread-safe, built on first use)."""
    global _pattern
    if _pattern is None:
        with _lock:
            if _pattern is None:
                _pattern = re.compile(f"(?:[^\\W_]|[{_mark_ranges()}])+")
    return _pattern


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lowercase word tokens (see the module docstring for the exact rules).

    >>> tokenize("Don't PANIC: the Ｈｉｔｃｈ-hiker's guide, 2nd ed.")
    ['don', 't', 'panic', 'the', 'hitch', 'hiker', 's', 'guide', '2nd', 'ed']
    """
    if not isinstance(text, str):
        raise InvalidInputError(
            f"a text must be a str, got {type(text).__name__}; decode bytes (UTF-8) before encoding"
        )
    return token_regex().findall(unicodedata.normalize("NFKC", text).lower())
