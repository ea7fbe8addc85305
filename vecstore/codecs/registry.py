"""The closed allow-list of codecs: codec ids to classes, and building codecs and chains from their
JSON configs or codec strings (vecstore.codecs.strings). No plugin is ever discovered."""

from __future__ import annotations

from ..errors import FormatError, UnknownCodecError
from .abc import Codec
from .pipeline import Pipeline
from .strings import CODECS, parse_codec_string


def codec_from_config(config: dict, dim: int) -> Codec:
    """Build one stage from its JSON config (allow-listed ids only)."""
    if not isinstance(config, dict) or not isinstance(config.get("id"), str):
        raise FormatError(f"codec config must be an object with a string 'id', got {str(config)[:80]!r}")
    cls = CODECS.get(config["id"])
    if cls is None:
        raise UnknownCodecError(f"unknown codec id {config['id']!r}; known: {', '.join(CODECS)}")
    return cls.from_config(config, dim=dim)


def pipeline_from_config(config: dict) -> Pipeline:
    """Build a chain from its JSON config ``{"id": "pipeline", "dim": D, "stages": [...]}``, each
    stage through :func:`codec_from_config` with the width the stage before it produces."""
    if not isinstance(config, dict) or config.get("id") != Pipeline.codec_id:
        raise FormatError(f"codec config must be a pipeline object, got {str(config)[:80]!r}")
    dim, stages = config.get("dim"), config.get("stages")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise FormatError(f"codec config: 'dim' must be a positive integer, got {dim!r}")
    if not isinstance(stages, list) or not stages:
        raise FormatError("codec config: 'stages' must be a non-empty list")
    built, width = [], dim
    for cfg in stages:
        stage = codec_from_config(cfg, width)
        built.append(stage)
        width = stage.out_dim
    return Pipeline(built, dim)


def get_codec(spec: str | dict, dim: int) -> Pipeline:
    """A pipeline from a codec string or a pipeline config, for vectors of width ``dim``."""
    if isinstance(spec, dict):
        return pipeline_from_config(spec)
    return pipeline_from_config({"id": "pipeline", "dim": dim, "stages": parse_codec_string(spec)})


