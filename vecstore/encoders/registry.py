"""The closed allow-list of encoder kinds, and rebuilding an encoder from stored parts.

An encoder is fully described by three parts, each storable as plain data:

- ``config``: the JSON-safe dict of :meth:`config` (kind, dim, vocab_size, output, tokenizer, ...);
- ``vocab``: the list of words (row i of every (V, ...) array belongs to ``vocab[i]``);
- ``arrays``: float32 arrays by name ("embedding", "idf", "recurrent", "bias").

:func:`encoder_from_parts` checks all three against each other and raises :class:`FormatError`
saying which part is wrong; nothing is executed or imported by name.
"""

from __future__ import annotations

import numpy as np

from ..errors import FormatError, InvalidDtypeError, InvalidInputError
from ._common import TextEncoder
from .elman import OUTPUTS, ElmanEncoder
from .tokenize import TOKENIZER_ID, TOKENIZER_VERSION, tokenizer_config
from .wordvec import WordVectorEncoder

ENCODERS: dict[str, type[TextEncoder]] = {c.kind: c for c in (WordVectorEncoder, ElmanEncoder)}

_COMMON_KEYS = {"kind", "dim", "vocab_size", "tokenizer", "output", "normalize"}
_KEYS = {"wordvec": _COMMON_KEYS | {"weighting"}, "elman": _COMMON_KEYS | {"nonlinearity"}}
_ARRAYS = {("wordvec", "none"): {"embedding"}, ("wordvec", "idf"): {"embedding", "idf"},
           ("elman", None): {"embedding", "recurrent", "bias"}}


def _int(config: dict, key: str, where: str) -> int:
    value = config.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FormatError(f"{where}: config {key!r} must be a positive integer, got {value!r}")
    return value


def check_config(config, where: str = "encoder") -> dict:
    """Validate an encoder config on its own (keys, kind allow-list, tokenizer, modes)."""
    if not isinstance(config, dict):
        raise FormatError(f"{where}: config must be a JSON object, got {type(config).__name__}")
    kind = config.get("kind")
    if kind not in ENCODERS:
        raise FormatError(f"{where}: unknown encoder kind {kind!r}; known: {', '.join(ENCODERS)}")
    keys = set(config)
    if keys != _KEYS[kind]:
        missing, extra = sorted(_KEYS[kind] - keys), sorted(keys - _KEYS[kind])
        raise FormatError(f"{where}: {kind} config keys are wrong (missing: {missing}, unexpected: {extra})")
    _int(config, "dim", where)
    _int(config, "vocab_size", where)
    if config["tokenizer"] != tokenizer_config():
        raise FormatError(
            f"{where}: tokenizer {config['tokenizer']!r} is not known; this vecstore implements "
            f"{TOKENIZER_ID!r} version {TOKENIZER_VERSION}"
        )
    if config["normalize"] != "l2":
        raise FormatError(f"{where}: normalize must be 'l2', got {config['normalize']!r}")
    if kind == "wordvec":
        if config["output"] != "mean":
            raise FormatError(f"{where}: a wordvec output must be 'mean', got {config['output']!r}")
        if config["weighting"] not in ("idf", "none"):
            raise FormatError(f"{where}: weighting must be 'idf' or 'none', got {config['weighting']!r}")
    else:
        if config["output"] not in OUTPUTS:
            raise FormatError(f"{where}: an elman output must be one of {OUTPUTS}, got {config['output']!r}")
        if config["nonlinearity"] != "tanh":
            raise FormatError(f"{where}: nonlinearity must be 'tanh', got {config['nonlinearity']!r}")
    return config


def encoder_from_parts(config: dict, vocab, arrays: dict, where: str = "encoder") -> TextEncoder:
    """Rebuild an encoder from its config, vocabulary and arrays, validating everything.

    Parameters
    ----------
    config : dict, as returned by ``encoder.config()`` (e.g. parsed from a JSON attribute)
    vocab : list of str
    arrays : dict of name -> array; every array must be float32, finite, of the shape the config
        and vocabulary imply. No array may be missing or unexpected.
    where : names the source in error messages (a file, a dataset path).

    Raises
    ------
    FormatError
        Anything inconsistent, with ``where`` and the part at fault in the message.
    """
    config = check_config(config, where)
    kind = config["kind"]
    if not isinstance(arrays, dict):
        raise FormatError(f"{where}: arrays must be a dict of name -> array, got {type(arrays).__name__}")
    required = _ARRAYS[kind, config.get("weighting")]
    if set(arrays) != required:
        raise FormatError(f"{where}: this {kind} encoder needs exactly the arrays {sorted(required)}, "
                          f"has {sorted(arrays)}")
    for name, arr in arrays.items():
        dtype = getattr(arr, "dtype", None)
        if dtype is None or np.dtype(dtype) != np.float32:
            raise FormatError(f"{where}: array {name!r} has dtype {dtype}, expected float32")
    if not isinstance(vocab, (list, tuple)):
        raise FormatError(f"{where}: vocab must be a list of str, got {type(vocab).__name__}")
    if len(vocab) != config["vocab_size"]:
        raise FormatError(f"{where}: vocab has {len(vocab)} words, but the config says {config['vocab_size']}")
    dim = config["dim"]
    shapes = {"embedding": (len(vocab), dim), "idf": (len(vocab),), "recurrent": (dim, dim), "bias": (dim,)}
    for name, arr in arrays.items():
        if tuple(arr.shape) != shapes[name]:
            raise FormatError(f"{where}: array {name!r} has shape {tuple(arr.shape)}, expected {shapes[name]} "
                              f"(vocab_size {len(vocab)}, dim {dim})")
    try:
        if kind == "wordvec":
            encoder = WordVectorEncoder(vocab, arrays["embedding"], arrays.get("idf"))
        else:
            encoder = ElmanEncoder(vocab, arrays["embedding"], arrays["recurrent"], arrays["bias"],
                                   output=config["output"])
    except (InvalidInputError, InvalidDtypeError) as exc:
        raise FormatError(f"{where}: {exc}") from None
    if encoder.config() != config:  # nothing in the config may be ignored
        raise FormatError(f"{where}: config {config} does not describe the arrays ({encoder.config()})")
    return encoder
