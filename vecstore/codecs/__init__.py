"""Codecs: float32, float16, int8, PCA and product quantization, chained into pipelines."""

from .abc import Codec
from .pipeline import Pipeline
from .registry import CODECS, codec_string, get_codec, parse_codec_string

__all__ = ["CODECS", "Codec", "Pipeline", "codec_string", "get_codec", "parse_codec_string"]
