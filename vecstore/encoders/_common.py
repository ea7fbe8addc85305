"""What both text encoders share: input validation, text -> token ids, the result type.

Constructors raise :class:`InvalidInputError` (or :class:`InvalidDtypeError` for a non-float array);
``encoder_from_parts`` and the JSON loader turn those into :class:`FormatError` naming the source.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import numba
import numpy as np

from ..errors import InvalidDtypeError, InvalidInputError
from .tokenize import tokenize, tokenizer_config

#: Token ids are int32 in the kernels.
MAX_VOCAB = 2**31 - 1
ON_EMPTY = ("raise", "zero")
# A batch goes to the parallel kernel from this many multiply-adds on (below it, thread start-up
# costs more than it saves; a single short query always runs serially on the calling thread).
PARALLEL_MIN_WORK = 1 << 20


class Encoded(NamedTuple):
    """``vectors, unknown = encoder.encode(texts)``.

    vectors : (n, dim) float32, one unit-length row per text (all zeros for a text without a known
              word when ``on_empty="zero"``).
    unknown : n lists of the text's words that are not in the vocabulary, each word once, in order
              of first appearance.
    """

    vectors: np.ndarray
    unknown: list[list[str]]


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def check_vocab(vocab) -> list[str]:
    """A list of distinct non-empty strings (any iterable of str is accepted)."""
    if isinstance(vocab, (str, bytes)):
        raise InvalidInputError("vocab must be a list of words, not a single string")
    try:
        words = list(vocab)
    except TypeError:
        raise InvalidInputError(f"vocab must be a list of words, got {type(vocab).__name__}") from None
    if not words:
        raise InvalidInputError("vocab is empty: give at least one word")
    if len(words) > MAX_VOCAB:
        raise InvalidInputError(f"vocab has {len(words)} words; at most {MAX_VOCAB} are supported")
    seen: dict[str, int] = {}
    for i, word in enumerate(words):
        if not isinstance(word, str):
            raise InvalidInputError(
                f"vocab word {i} is a {type(word).__name__}, not a str; decode bytes (UTF-8) first"
            )
        if not word:
            raise InvalidInputError(f"vocab word {i} is the empty string")
        first = seen.setdefault(word, i)
        if first != i:
            raise InvalidInputError(
                f"vocab word {word!r} appears twice (positions {first} and {i}); each word needs one row"
            )
    return [str(w) for w in words]


def check_array(arr, name: str, shape: tuple) -> np.ndarray:
    """A finite float32 C-contiguous read-only view of ``arr`` with ``shape`` (None = any length).

    Real float dtypes (float16/32/64) are accepted and converted; anything else is refused.
    """
    if arr is None:
        raise InvalidInputError(f"{name} is missing")
    try:
        a = np.asarray(arr)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"{name} cannot be read as an array ({exc})") from None
    if a.dtype.kind != "f" or a.dtype.names is not None:
        raise InvalidDtypeError(
            f"{name} has dtype {a.dtype}; give floating-point values (float32, or float64 to convert)"
        )
    if a.ndim != len(shape) or any(want is not None and got != want for got, want in zip(a.shape, shape)):
        want = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise InvalidInputError(f"{name} has shape {a.shape}, expected {want}")
    if any(s == 0 for s in a.shape):
        raise InvalidInputError(f"{name} has shape {a.shape}: it holds no values")
    with np.errstate(over="ignore"):
        a = np.ascontiguousarray(a, dtype=np.float32)
    finite = np.isfinite(a)
    if not finite.all():
        where = np.unravel_index(int(np.argmin(finite.ravel())), a.shape)
        raise InvalidInputError(
            f"{name} holds NaN or Inf (or a value too large for float32) at index {tuple(int(i) for i in where)}"
        )
    view = a.view()
    view.flags.writeable = False
    return view


def check_texts(texts) -> list[str]:
    """One str, or a non-empty sequence of str."""
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, bytes):
        raise InvalidInputError("texts must be str, not bytes; decode them (UTF-8) first")
    try:
        items = list(texts)
    except TypeError:
        raise InvalidInputError(f"texts must be a str or a list of str, got {type(texts).__name__}") from None
    if not items:
        raise InvalidInputError("no texts given: pass at least one text")
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InvalidInputError(f"text {i} is a {type(t).__name__}, not a str")
    return items


class TextEncoder:
    """Base class: a vocabulary, the tokenizer, and the batch plumbing around a numba kernel."""

    kind: ClassVar[str]
    array_names: ClassVar[tuple[str, ...]]

    def __init__(self, vocab):
        self.vocab = check_vocab(vocab)
        self._index = {w: i for i, w in enumerate(self.vocab)}

    # -- description ----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-safe description: kind, dim, output mode, tokenizer, vocabulary size."""
        raise NotImplementedError

    def arrays(self) -> dict[str, np.ndarray]:
        """The parameters as plain float32 arrays, by name (read-only views, not copies)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        cfg = self.config()
        extra = ", ".join(f"{k}={v!r}" for k, v in cfg.items() if k not in ("kind", "tokenizer"))
        return f"{type(self).__name__}({extra})"

    def __eq__(self, other) -> bool:
        if type(self) is not type(other) or self.config() != other.config() or self.vocab != other.vocab:
            return False
        mine, theirs = self.arrays(), other.arrays()
        return mine.keys() == theirs.keys() and all(np.array_equal(mine[k], theirs[k]) for k in mine)

    __hash__ = None

    # -- encoding -------------------------------------------------------------------------------

    def token_ids(self, texts) -> tuple[np.ndarray, np.ndarray, list[list[str]], list[str]]:
        """Tokenize and look up ``texts``.

        Returns ``offsets`` (n + 1,) int64 and ``ids`` (total,) int32 (text i's known tokens are
        ``ids[offsets[i]:offsets[i + 1]]``, in order, repeats kept), the unknown words per text and
        the texts as a list.
        """
        items = check_texts(texts)
        index = self._index
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        flat: list[int] = []
        unknown: list[list[str]] = []
        for i, text in enumerate(items):
            missing: dict[str, None] = {}
            for word in tokenize(text):
                row = index.get(word)
                if row is None:
                    missing[word] = None
                else:
                    flat.append(row)
            unknown.append(list(missing))
            offsets[i + 1] = len(flat)
        return offsets, np.array(flat, dtype=np.int32), unknown, items

    def encode(self, texts, *, on_empty: str = "raise") -> Encoded:
        """Encode texts into unit vectors.

        Parameters
        ----------
        texts : str or sequence of str
            One text gives a (1, dim) result.
        on_empty : "raise" or "zero"
            A text without a known word (empty, punctuation only, or only unknown words), or whose
            known words sum to the zero vector, raises :class:`InvalidInputError` naming it
            ("raise"), or gets an all-zero row ("zero").

        Returns
        -------
        Encoded
            ``(vectors (n, dim) float32, unknown words per text)``.
        """
        if on_empty not in ON_EMPTY:
            raise InvalidInputError(f"on_empty must be one of {ON_EMPTY}, got {on_empty!r}")
        offsets, ids, unknown, items = self.token_ids(texts)
        if on_empty == "raise":
            counts = np.diff(offsets)
            if (counts == 0).any():
                i = int(np.argmax(counts == 0))
                self._raise_empty(i, items[i], unknown[i])
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        work = int(ids.shape[0]) * self._work_per_token()
        parallel = len(items) > 1 and work >= PARALLEL_MIN_WORK and numba.get_num_threads() > 1
        nparts = min(len(items), 4 * numba.get_num_threads()) if parallel else 1
        self._run_kernel(offsets, ids, out, nparts, parallel)
        if on_empty == "raise":
            zero = ~out.any(axis=1)
            if zero.any():
                i = int(np.argmax(zero))
                raise InvalidInputError(
                    f"text {i} ({_short(items[i])}): its known words add up to the zero vector, "
                    "so it has no direction; add other words"
                )
        return Encoded(out, unknown)

    def _raise_empty(self, i: int, text: str, unknown: list[str]) -> None:
        if not unknown:
            raise InvalidInputError(
                f"text {i} ({_short(text)}) is empty: it has no words (runs of letters, marks or "
                "digits); give at least one word"
            )
        shown = ", ".join(repr(w) for w in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise InvalidInputError(
            f"text {i} ({_short(text)}) has no word in the vocabulary (unknown: {shown}); use other words"
        )

    def _work_per_token(self) -> int:
        raise NotImplementedError

    def _run_kernel(self, offsets, ids, out, nparts, parallel) -> None:
        raise NotImplementedError

    def _base_config(self) -> dict:
        return {"kind": self.kind, "dim": self.dim, "vocab_size": len(self.vocab),
                "tokenizer": tokenizer_config()}
