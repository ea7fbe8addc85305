"""The ``vecstore`` command line: one click group (group.py), shared output helpers (options.py) and
one module per family of commands. Commands call the public API (``import vecstore``) only.

- store.py      build, info, search, compress, export-params, verify, add-fields
- text.py       build-text, add-encoder, export-encoder
- lifecycle.py  append, delete, compact, swap, check
- shards.py     shard-build, shard-search
- bench.py      bench

A family's module is imported when one of its commands runs (group.py: COMMANDS), so a search does
not import what the text, shard or bench commands need.
"""

from .group import cli, main

__all__ = ["cli", "main"]
