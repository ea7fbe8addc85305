"""Codec strings: the comma-separated chains, pre-transforms first, as in FAISS's index_factory:

    float32 | float16 | int8 | int8c<q> | pca<n> | pq<m> | pq<m>x4 | pq<m>x8, after an optional ivf<nlist>

e.g. ``float16``, ``int8``, ``pca256,int8``, ``pq64``, ``pca256,pq64``, ``pq128x4``, ``ivf4096,pq32x4``. A chain with
no code stage ends in float32 (``pca256`` stores float32 projections). ``int8c0.001`` clips each
dimension's range to its 0.1% / 99.9% quantiles. Strings print back in this canonical form.
"""

from __future__ import annotations

import re

from ..errors import UnknownCodecError
from .abc import Codec
from .ivf import IVF
from .pca import PCA
from .pq import PQ
from .scalar import Float16, Float32, Int8

# The closed allow-list: codec id -> class (vecstore.codecs.registry builds from it).
CODECS: dict[str, type[Codec]] = {c.codec_id: c for c in (Float32, Float16, Int8, PCA, PQ, IVF)}

_TOKENS = [
    (re.compile(r"^float32$"), lambda m: {"id": "float32"}),
    (re.compile(r"^float16$"), lambda m: {"id": "float16"}),
    (re.compile(r"^int8$"), lambda m: {"id": "int8"}),
    (re.compile(r"^int8c([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)$"), lambda m: {"id": "int8", "clip": float(m[1])}),
    (re.compile(r"^ivf([0-9]+)$"), lambda m: {"id": "ivf", "nlist": int(m[1])}),
    (re.compile(r"^pca([0-9]+)$"), lambda m: {"id": "pca", "n_components": int(m[1])}),
    (re.compile(r"^pq([0-9]+)$"), lambda m: {"id": "pq", "m": int(m[1]), "nbits": 8}),
    (re.compile(r"^pq([0-9]+)x([0-9]+)$"), lambda m: {"id": "pq", "m": int(m[1]), "nbits": int(m[2])}),
]


def parse_codec_string(text: str) -> list[dict]:
    """``"pca256,pq64"`` -> stage configs; raises UnknownCodecError naming the bad token."""
    if not isinstance(text, str) or not text.strip():
        raise UnknownCodecError("empty codec string; try e.g. 'float16', 'int8', 'pca256,pq64'")
    configs = []
    for token in (t.strip().lower() for t in text.split(",")):
        for pattern, make in _TOKENS:
            match = pattern.match(token)
            if match:
                configs.append(make(match))
                break
        else:
            raise UnknownCodecError(
                f"unknown codec {token!r} in {text!r}; known: float32, float16, int8, int8c<q>, "
                "pca<n>, pq<m>, pq<m>x4, ivf<nlist>"
            )
    if CODECS[configs[-1]["id"]].layout is None:
        configs.append({"id": "float32"})
    return configs


def _token(stage: Codec) -> str:
    cfg = stage.get_config()
    if cfg["id"] == "ivf":
        return f"ivf{cfg['nlist']}"
    if cfg["id"] == "pca":
        return f"pca{cfg['n_components']}"
    if cfg["id"] == "pq":
        return f"pq{cfg['m']}" + ("" if cfg["nbits"] == 8 else f"x{cfg['nbits']}")
    if cfg["id"] == "int8" and "clip" in cfg:
        return f"int8c{cfg['clip']!r}"
    return cfg["id"]


def codec_string(pipeline) -> str:
    """Canonical string of a pipeline (an implicit trailing float32 is left out)."""
    stages = pipeline.stages
    if len(stages) > 1 and stages[-1].codec_id == "float32":
        stages = stages[:-1]
    return ",".join(_token(s) for s in stages)
