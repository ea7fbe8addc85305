"""Integrity harnesses for issue 16 (segments, deletions, cleanup, swap): fuzz, cleanup race, kill
points, and errors that escape as something else. Run through ``benchmarks/bench_integrity.py``.

Only the public API (``import vecstore``), the CLI (``python -m vecstore``) and plain file operations
are used; files are found by the names docs/format.md ("Segments") and docs/errors.md document.
"""
