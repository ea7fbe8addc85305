"""vecstore: store a neural network's outputs and parameters in one memory-mapped HDF5 file.

>>> import vecstore
>>> store = vecstore.build("docs.vs", vectors, metric="cosine")     # doctest: +SKIP
>>> D, I = vecstore.open("docs.vs").search(queries, k=10)          # doctest: +SKIP
"""

__version__ = "0.1.0"

from . import _runtime  # noqa: F401  (numba threading layer: must precede the first kernel)
from ._build import add_encoder, build, build_text, compress
from ._store import Store, open
from .codecs import get_codec
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
from .search import SearchResult

__all__ = [
    "add_encoder", "ClosedStoreError", "FormatError", "IntegrityError", "InvalidDtypeError", "InvalidInputError",
    "NotFittedError", "SearchResult", "Store", "StoreNotFoundError", "StoreWriteError", "UnknownCodecError",
    "UnknownTierError", "UnsupportedVersionError", "VecstoreError", "__version__", "build", "build_text",
    "compress", "get_codec", "open",
]

from .verify import verify  # noqa: E402
from .shards import ShardedSearchResult, ShardedStore, open_sharded, shard_build  # noqa: E402

__all__ += ["ClusterUnavailableError", "ModelMismatchError", "ReadOnlyStoreError", "ShardUnavailableError",
            "ShardedSearchResult", "ShardedStore", "open_sharded", "shard_build", "verify"]
