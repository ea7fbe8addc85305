"""An encoder as one JSON document: the parameters as nested lists, readable from any language.

    {"format": "vecstore-encoder", "format_version": 1,
     "config": {"kind": "elman", "dim": 64, "vocab_size": 5000, "output": "last", ...},
     "vocab": ["the", "of", ...],
     "arrays": {"embedding": {"dtype": "float32", "shape": [5000, 64], "data": [[...], ...]},
                "recurrent": {...}, "bias": {...}}}

float32 values are written as the shortest decimal that round-trips their float64 value, so parsing
them as double and rounding to float32 restores the exact bits: an encoder loaded from JSON encodes
exactly as the original. A path ending in ``.gz`` is written and read gzip-compressed.
"""

from __future__ import annotations

import gzip
import json
import os

import numpy as np

from ..errors import FormatError, StoreNotFoundError, StoreWriteError
from ._common import TextEncoder
from .registry import encoder_from_parts

ENCODER_FORMAT = "vecstore-encoder"
ENCODER_FORMAT_VERSION = 1
MAX_JSON_BYTES = 1 << 30
_NUMBER_TYPES = {int, float}


def encoder_document(encoder: TextEncoder) -> dict:
    """The JSON-safe document of an encoder."""
    if not isinstance(encoder, TextEncoder):
        raise TypeError(f"expected a vecstore text encoder, got {type(encoder).__name__}")
    arrays = {name: {"dtype": "float32", "shape": list(arr.shape), "data": arr.astype(np.float64).tolist()}
              for name, arr in encoder.arrays().items()}
    return {"format": ENCODER_FORMAT, "format_version": ENCODER_FORMAT_VERSION,
            "config": encoder.config(), "vocab": list(encoder.vocab), "arrays": arrays}


def _check_data(data, shape: list[int], name: str, where: str) -> None:
    """Nested lists of exactly ``shape`` holding JSON numbers only (no strings, booleans, nulls)."""
    def fail(what: str):
        raise FormatError(f"{where}: array {name!r} {what}")

    if len(shape) == 1:
        if type(data) is not list or len(data) != shape[0]:
            fail(f"must be a list of {shape[0]} numbers")
        if not set(map(type, data)) <= _NUMBER_TYPES:
            bad = next(x for x in data if type(x) not in _NUMBER_TYPES)
            fail(f"holds a non-number: {bad!r}")
        return
    if type(data) is not list or len(data) != shape[0]:
        fail(f"must be a list of {shape[0]} rows (shape {shape}), got "
             f"{len(data) if type(data) is list else type(data).__name__}")
    for i, row in enumerate(data):
        if type(row) is not list or len(row) != shape[1]:
            fail(f"row {i} must be a list of {shape[1]} numbers (shape {shape})")
        if not set(map(type, row)) <= _NUMBER_TYPES:
            bad = next(x for x in row if type(x) not in _NUMBER_TYPES)
            fail(f"row {i} holds a non-number: {bad!r}")


def _array(entry, name: str, where: str) -> np.ndarray:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data"} <= set(entry):
        raise FormatError(f"{where}: array {name!r} must be an object with 'dtype', 'shape' and 'data'")
    if entry["dtype"] != "float32":
        raise FormatError(f"{where}: array {name!r} has dtype {entry['dtype']!r}; only 'float32' is supported")
    shape = entry["shape"]
    if (type(shape) is not list or len(shape) not in (1, 2)
            or any(type(s) is not int or s < 1 for s in shape)):
        raise FormatError(f"{where}: array {name!r} has shape {shape!r}; expected a list of 1 or 2 positive integers")
    _check_data(entry["data"], shape, name, where)
    with np.errstate(over="ignore"):
        arr = np.array(entry["data"], dtype=np.float64).astype(np.float32)
    if not np.isfinite(arr).all():
        flat = int(np.argmin(np.isfinite(arr).ravel()))
        raise FormatError(f"{where}: array {name!r} holds NaN, Infinity or a number too large for float32 "
                          f"at index {tuple(int(i) for i in np.unravel_index(flat, arr.shape))}")
    return arr


def encoder_from_document(doc, where: str = "encoder document") -> TextEncoder:
    """Validate a parsed document and rebuild the encoder it describes."""
    if not isinstance(doc, dict) or doc.get("format") != ENCODER_FORMAT:
        raise FormatError(f"{where}: not a vecstore encoder document ('format' must be {ENCODER_FORMAT!r})")
    version = doc.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= ENCODER_FORMAT_VERSION:
        raise FormatError(f"{where}: encoder format version {version!r}; this vecstore reads version "
                          f"{ENCODER_FORMAT_VERSION}")
    for field in ("config", "vocab", "arrays"):
        if field not in doc:
            raise FormatError(f"{where}: missing field {field!r}")
    vocab = doc["vocab"]
    if type(vocab) is not list or not all(type(w) is str for w in vocab):
        raise FormatError(f"{where}: 'vocab' must be a list of strings")
    if not isinstance(doc["arrays"], dict):
        raise FormatError(f"{where}: 'arrays' must be an object of named arrays")
    arrays = {name: _array(entry, name, where) for name, entry in doc["arrays"].items()}
    return encoder_from_parts(doc["config"], vocab, arrays, where=where)


def dump_encoder_json(encoder: TextEncoder, path: str | os.PathLike) -> None:
    """Write ``encoder`` as one JSON document (gzip-compressed if ``path`` ends in .gz), atomically."""
    path = os.fspath(path)
    text = json.dumps(encoder_document(encoder), ensure_ascii=False, separators=(",", ":"))
    data = text.encode("utf-8")
    if path.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:  # codecs/params_json.py:write_error says the same for parameter exports
        folder = os.path.dirname(os.path.abspath(path))
        reason = (f"directory {folder!r} does not exist; create it first" if not os.path.isdir(folder)
                  else f"{exc.strerror or exc}; check free space and permissions")
        raise StoreWriteError(f"cannot write {path!r}: {reason}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_encoder_json(path: str | os.PathLike) -> TextEncoder:
    """Read an encoder written by :func:`dump_encoder_json` (or by hand, or by another language)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise StoreNotFoundError(f"encoder file {path!r} does not exist")
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                raw = fh.read(MAX_JSON_BYTES + 1)
        else:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_JSON_BYTES + 1)
    except (OSError, EOFError) as exc:
        raise FormatError(f"{path!r} cannot be read ({exc})") from None
    if len(raw) > MAX_JSON_BYTES:
        raise FormatError(f"{path!r} holds more than {MAX_JSON_BYTES} bytes of JSON; refusing to parse it")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise FormatError(f"{path!r} is not valid UTF-8 JSON ({exc})") from None
    return encoder_from_document(doc, path)
