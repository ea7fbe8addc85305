"""Text encoders whose parameters are plain arrays: word vectors and an Elman RNN.

>>> from vecstore.encoders import WordVectorEncoder
>>> enc = WordVectorEncoder(["small", "dog"], [[1.0, 0.0], [0.0, 1.0]])
>>> vectors, unknown = enc.encode(["small dog", "big dog"])
>>> unknown
[[], ['big']]

numpy and numba only. The exact tokenizer and forward passes are in docs/encoders.md.
"""

from .. import _runtime  # noqa: F401  (numba's threading layer: set before the first parallel region)
from ._common import Encoded, TextEncoder
from .elman import ElmanEncoder
from .portable import (
    ENCODER_FORMAT,
    ENCODER_FORMAT_VERSION,
    dump_encoder_json,
    encoder_document,
    encoder_from_document,
    load_encoder_json,
)
from .registry import ENCODERS, check_config, encoder_from_parts
from .tokenize import TOKEN_PATTERN, TOKENIZER_ID, TOKENIZER_VERSION, tokenize, tokenizer_config
from .wordvec import WordVectorEncoder

__all__ = [
    "ENCODERS", "ENCODER_FORMAT", "ENCODER_FORMAT_VERSION", "ElmanEncoder", "Encoded", "TOKENIZER_ID",
    "TOKENIZER_VERSION", "TOKEN_PATTERN", "TextEncoder", "WordVectorEncoder", "check_config",
    "dump_encoder_json", "encoder_document", "encoder_from_document", "encoder_from_parts",
    "load_encoder_json", "tokenize", "tokenizer_config",
]
