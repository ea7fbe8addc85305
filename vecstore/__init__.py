"""vecstore: store a neural network's outputs and parameters in one memory-mapped HDF5 file.

>>> import vecstore
>>> store = vecstore.build("docs.vs", vectors, metric="cosine")     # doctest: +SKIP
>>> D, I = vecstore.open("docs.vs").search(queries, k=10)          # doctest: +SKIP

This module is the public API; docs/architecture.md maps the packages behind it.

The names below the errors are imported on first use (PEP 562): ``import vecstore`` loads neither
numba nor h5py, so a command that searches one small store and exits pays only for what it runs.
The errors are imported at once (they are small and every layer raises them).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import (
    ClosedStoreError,
    ClusterUnavailableError,
    FormatError,
    IntegrityError,
    InvalidDtypeError,
    InvalidInputError,
    ModelMismatchError,
    NotFittedError,
    ReadOnlyStoreError,
    ShardUnavailableError,
    StoreNotFoundError,
    StoreWriteError,
    UnknownCodecError,
    UnknownTierError,
    UnsupportedVersionError,
    VecstoreError,
)

if TYPE_CHECKING:  # the same names, for type checkers and readers; at run time see _LAZY
    from .codecs import get_codec
    from .codecs.params_json import dump_params, load_params
    from .format.verify import verify
    from .plan import Plan
    from .query import FilteredSearchResult, SearchResult, ShardedSearchResult, TextSearchResult
    from .shards import ShardedStore, open_sharded, shard_build
    from .store import (
        Store,
        add_encoder,
        add_fields,
        append,
        build,
        build_text,
        check_drift,
        compact,
        compress,
        delete,
        open,
        self_check,
        swap,
    )
    from .store.provenance import describe as describe_model
    from .store.provenance import load_model_params

# public name -> (module, its name there)
_LAZY = {
    "get_codec": (".codecs", "get_codec"),
    "dump_params": (".codecs.params_json", "dump_params"),
    "load_params": (".codecs.params_json", "load_params"),
    "verify": (".format.verify", "verify"),
    "Plan": (".plan", "Plan"),
    **{name: (".query", name) for name in
       ("FilteredSearchResult", "SearchResult", "ShardedSearchResult", "TextSearchResult")},
    **{name: (".shards", name) for name in ("ShardedStore", "open_sharded", "shard_build")},
    **{name: (".store", name) for name in
       ("Store", "add_encoder", "add_fields", "append", "build", "build_text", "check_drift", "compact",
        "compress", "delete", "open", "self_check", "swap")},
    "describe_model": (".store.provenance", "describe"),
    "load_model_params": (".store.provenance", "load_model_params"),
}


def __getattr__(name: str):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'vecstore' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module, __name__), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ClosedStoreError", "ClusterUnavailableError", "FormatError", "IntegrityError", "InvalidDtypeError",
    "FilteredSearchResult", "InvalidInputError", "ModelMismatchError", "NotFittedError", "Plan", "ReadOnlyStoreError", "SearchResult",
    "ShardUnavailableError", "ShardedSearchResult", "ShardedStore", "Store", "StoreNotFoundError",
    "StoreWriteError", "TextSearchResult", "UnknownCodecError", "UnknownTierError", "UnsupportedVersionError",
    "VecstoreError", "__version__", "add_encoder", "add_fields", "append", "build", "build_text", "check_drift", "compact",
    "compress", "delete", "describe_model", "dump_params", "get_codec", "load_model_params", "load_params",
    "open", "open_sharded", "self_check", "shard_build", "swap", "verify",
]
