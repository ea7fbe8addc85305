"""Sharded collections: N ordinary vecstore files sharing trained parameters, plus a manifest,
searched from a thread pool or by a Dask cluster and merged into one top-k (docs/shards.md).

>>> import vecstore
>>> vecstore.shard_build("docs.npy", "docs.shards", shards=4, codecs=["pq64"])     # doctest: +SKIP
>>> store = vecstore.open_sharded("docs.shards", client="tcp://scheduler:8786")    # doctest: +SKIP
>>> D, I = store.search(queries, k=10)                                           # doctest: +SKIP
"""

from .build import shard_build
from ..errors import ClusterUnavailableError, ShardUnavailableError
from .manifest import ShardEntry, ShardManifest, TierEntry, read_manifest
from ..query import ShardedSearchResult
from .search import ShardedStore, open_sharded

__all__ = [
    "ClusterUnavailableError", "ShardEntry", "ShardManifest", "ShardUnavailableError", "ShardedSearchResult",
    "ShardedStore", "TierEntry", "open_sharded", "read_manifest", "shard_build",
]
