"""The ``vecstore`` command line: one click group (group.py), shared output helpers (options.py) and
one module per family of commands. Commands call the public API (``import vecstore``) only.

- store.py      build, info, search, compress, export-params, verify
- text.py       build-text, add-encoder, export-encoder
- lifecycle.py  append, delete, compact, swap, check
- shards.py     shard-build, shard-search
- bench.py      bench
"""

from . import bench, lifecycle, shards, store, text  # noqa: F401  (each registers its commands)
from .group import cli, main

__all__ = ["cli", "main"]
