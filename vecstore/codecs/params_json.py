"""Codec parameters as portable JSON: the codec chain plus every learned array as nested lists.

    {"format": "vecstore-params", "format_version": 1,
     "codec": {"id": "pipeline", "dim": 384, "stages": [...]},
     "codec_string": "pca64,pq16",
     "arrays": {"0.mean": {"dtype": "float32", "shape": [384], "data": [...]}, ...}}

float32 values are written with Python's shortest round-trip repr of their double value, so parsing
them back and casting to float32 restores the exact bits: re-encoding gives identical codes.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .pipeline import Pipeline
from .registry import pipeline_from_config
from .strings import codec_string
from ..errors import FormatError, StoreNotFoundError, StoreWriteError

PARAMS_FORMAT = "vecstore-params"
PARAMS_VERSION = 1
MAX_JSON_BYTES = 1 << 30


def params_document(codec: Pipeline) -> dict:
    """The JSON-safe document for a fitted pipeline."""
    arrays = {
        name: {"dtype": str(arr.dtype.newbyteorder("=").name), "shape": list(arr.shape),
               "data": arr.astype(np.float64 if arr.dtype.kind == "f" else np.int64).tolist()}
        for name, arr in codec.params().items()
    }
    return {"format": PARAMS_FORMAT, "format_version": PARAMS_VERSION, "codec": codec.get_config(),
            "codec_string": codec_string(codec), "arrays": arrays}


def dump_params(codec: Pipeline, path: str) -> None:
    """Write :func:`params_document` to ``path`` (atomically)."""
    text = json.dumps(params_document(codec))
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_error(path: str, exc: OSError) -> StoreWriteError:
    """The one-line error for a JSON export that could not be written (missing directory, full disk)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return StoreWriteError(f"cannot write {path!r}: directory {directory!r} does not exist; create it first")
    return StoreWriteError(f"cannot write {path!r}: {exc.strerror or exc}; check free space and permissions")


def codec_from_document(doc, where: str) -> Pipeline:
    """Validate a params document and return the fitted pipeline it describes."""
    if not isinstance(doc, dict) or doc.get("format") != PARAMS_FORMAT:
        raise FormatError(f"{where}: not a vecstore parameter file (format must be {PARAMS_FORMAT!r})")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > PARAMS_VERSION:
        raise FormatError(f"{where}: parameter format version {version!r}; this vecstore reads {PARAMS_VERSION}")
    codec = pipeline_from_config(doc.get("codec"))
    arrays = doc.get("arrays")
    if not isinstance(arrays, dict):
        raise FormatError(f"{where}: 'arrays' must be an object of named arrays")
    params = {}
    for name, entry in arrays.items():
        if not isinstance(entry, dict) or "data" not in entry:
            raise FormatError(f"{where}: array {name!r} must be an object with 'data'")
        try:
            arr = np.asarray(entry["data"], dtype=np.float64)
        except (ValueError, TypeError):
            raise FormatError(f"{where}: array {name!r} holds non-numbers or ragged lists") from None
        if "shape" in entry and list(arr.shape) != entry["shape"]:
            raise FormatError(f"{where}: array {name!r} has shape {list(arr.shape)}, but says {entry['shape']}")
        params[name] = arr
    return codec.set_params(params, where=where)


def load_params(path: str) -> Pipeline:
    """Read a parameter JSON file written by :func:`dump_params` (or by hand, or by another stack)."""
    if not os.path.exists(path):
        raise StoreNotFoundError(f"parameter file {path!r} does not exist")
    if os.path.getsize(path) > MAX_JSON_BYTES:
        raise FormatError(f"{path!r} is larger than {MAX_JSON_BYTES} bytes")
    with open(path, encoding="utf-8") as fh:
        try:
            doc = json.load(fh)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(f"{path!r} is not valid JSON ({exc})") from None
    return codec_from_document(doc, path)
