"""The store layer: what a user opens, builds and changes.

- tier.py       one encoding of every document, mapped from the file; scans through kernels.dispatch
- file.py       one open store file (main file or segment): header, tiers, ids, strings, encoders
- view.py       one consistent state: main file + segments + deleted ids, validated together
- store.py      Store, what users hold: search, text search, documents, memory, reload
- build.py      build, build_text, compress, add_encoder, add_fields (a new file, renamed over the old)
- lifecycle.py  append, delete, compact (new files only, one atomic publish)
- filtering.py  where= / allow= as row masks per part, filtered search, the fields a write carries
- quality.py    calibration, recall self-check, drift check (the store measures itself)
- deploy.py     swap: re-deploy a new version with a rollback
- provenance.py which model produced the vectors
"""

from .build import add_encoder, add_fields, build, build_text, compress
from .deploy import swap
from .lifecycle import append, compact, delete
from .quality import check_drift, self_check
from .store import Store, open

__all__ = ["Store", "add_encoder", "add_fields", "append", "build", "build_text", "check_drift", "compact", "compress",
           "delete", "open", "self_check", "swap"]
