"""Codecs: float32, float16, int8, PCA and product quantization, chained into pipelines.

A codec is a JSON config plus plain learned arrays (abc.py); the registry builds codecs and chains
from configs or codec strings, from a closed allow-list; params_json.py exports a fitted chain as
JSON lists for other languages.
"""

from .abc import Codec
from .pipeline import Pipeline
from .registry import codec_from_config, get_codec, pipeline_from_config
from .strings import CODECS, codec_string, parse_codec_string

__all__ = ["CODECS", "Codec", "Pipeline", "codec_from_config", "codec_string", "get_codec",
           "parse_codec_string", "pipeline_from_config"]
