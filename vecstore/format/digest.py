"""Content digests of learned parameters: one definition shared by segments, shards and model
provenance, so that "the same parameters" means the same thing everywhere.

A digest is xxh3_64 (hex) over a canonical byte stream: for each array in name order, its name,
dtype (numpy ``str``, e.g. ``<f4``), shape and little-endian C-order bytes; preceded by an
optional text (a codec config as sorted JSON). docs/format.md defines it for other languages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import xxhash


def digest_arrays(arrays: Mapping[str, np.ndarray], text: str = "") -> str:
    """xxh3_64 hex digest of ``text`` and the named arrays (see the module docstring)."""
    hasher = xxhash.xxh3_64()
    hasher.update(text.encode("utf-8"))
    for name in sorted(arrays):
        arr = np.asarray(arrays[name])
        little = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        hasher.update(f"\0{name}\0{little.dtype.str}\0{list(arr.shape)}\0".encode("utf-8"))
        hasher.update(np.ascontiguousarray(little).tobytes())
    return hasher.hexdigest()


def codec_digest(codec) -> str:
    """Digest of a fitted codec pipeline: its config and every learned array."""
    return digest_arrays(codec.params(), json.dumps(codec.get_config(), sort_keys=True))
