"""vecstore: store a neural network's outputs and parameters in one memory-mapped HDF5 file.

>>> import vecstore
>>> store = vecstore.build("docs.vs", vectors, metric="cosine")     # doctest: +SKIP
>>> D, I = vecstore.open("docs.vs").search(queries, k=10)          # doctest: +SKIP

This module is the public API; docs/architecture.md maps the packages behind it.
"""

from . import _runtime  # noqa: F401  (numba threading layer: must precede the first kernel)
from ._version import __version__
from .codecs import get_codec
from .codecs.params_json import dump_params, load_params
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

__all__ = [
    "ClosedStoreError", "ClusterUnavailableError", "FormatError", "IntegrityError", "InvalidDtypeError",
    "FilteredSearchResult", "InvalidInputError", "ModelMismatchError", "NotFittedError", "Plan", "ReadOnlyStoreError", "SearchResult",
    "ShardUnavailableError", "ShardedSearchResult", "ShardedStore", "Store", "StoreNotFoundError",
    "StoreWriteError", "TextSearchResult", "UnknownCodecError", "UnknownTierError", "UnsupportedVersionError",
    "VecstoreError", "__version__", "add_encoder", "add_fields", "append", "build", "build_text", "check_drift", "compact",
    "compress", "delete", "describe_model", "dump_params", "get_codec", "load_model_params", "load_params",
    "open", "open_sharded", "self_check", "shard_build", "swap", "verify",
]
