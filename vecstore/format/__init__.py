"""The file format layer: everything that reads or writes bytes on disk, and nothing that searches.

- schema.py     the HDF5 schema in one place: names, attributes, header validation, the mapping
- writer.py     writing a whole store file (atomic: temporary, fsync, rename)
- segments.py   STORE.segments/: appended segments, deleted ids, the manifest, the writer lock
- digest.py     content digests of learned parameters
- verify.py     checking every checksum of a store and its segments
- untrusted.py  validating a file from outside in a child process first

docs/format.md is the normative text; this package is its implementation.
"""
