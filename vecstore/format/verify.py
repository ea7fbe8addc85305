"""Integrity: recompute every dataset's checksum and compare it with the one recorded at write.

HDF5's own checksums (fletcher32) force chunked storage, which cannot be memory-mapped, so every
dataset carries an ``xxh3_64`` attribute over its bytes as stored (little-endian, C order).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import xxhash

from ..errors import IntegrityError
from . import schema as fmt
from . import segments as seg
from .untrusted import check_header_in_child

READ_BYTES = 64 << 20


@dataclass
class DatasetCheck:
    name: str
    nbytes: int
    recorded: str | None
    computed: str

    @property
    def ok(self) -> bool:
        return self.recorded == self.computed


def _digest_span(file_map: fmt.FileMap, span: fmt.DatasetSpan) -> str:
    hasher = xxhash.xxh3_64()
    if span.offset is not None and file_map.mm is not None:
        view = memoryview(file_map.mm)
        try:
            for start in range(span.offset, span.offset + span.nbytes, READ_BYTES):
                hasher.update(view[start:min(start + READ_BYTES, span.offset + span.nbytes)])
        finally:
            view.release()
    return hasher.hexdigest()


def _verify_file(path: str, prefix: str, untrusted: bool) -> list[DatasetCheck]:
    if untrusted:
        check_header_in_child(path)
    header, file_map = fmt.open_store_file(path)
    try:
        return [DatasetCheck(prefix + name, span.nbytes, span.checksum, _digest_span(file_map, span))
                for name, span in sorted(header.datasets.items())]
    finally:
        file_map.close()


def verify(path: str | os.PathLike, *, raise_on_error: bool = True, untrusted: bool = False) -> list[DatasetCheck]:
    """Check every dataset of the store at ``path`` and of its appended segments; raise
    IntegrityError naming any mismatch.

    Returns one :class:`DatasetCheck` per dataset (a segment's are prefixed with its file name).
    The structure is validated first (FormatError); ``untrusted`` as in :func:`vecstore.open`.
    """
    path = os.fspath(path)
    checks = _verify_file(path, "", untrusted)
    header, file_map = fmt.open_store_file(path)
    file_map.close()
    identity = fmt.store_identity(header)
    manifest = seg.read_manifest(path, identity)
    if manifest is None:
        seg.check_unmatched(path, identity)  # segments or deletions that no manifest links to this file
    else:
        seg.read_deleted(path, manifest)  # its checksum is in the manifest: a mismatch raises
        for entry in manifest.segments:
            checks += _verify_file(os.path.join(seg.sidecar_dir(path), entry.file), f"{entry.file}:", untrusted)
    bad = [c for c in checks if not c.ok]
    if bad and raise_on_error:
        names = ", ".join(f"/{c.name}" + (" (no checksum recorded)" if c.recorded is None else "") for c in bad)
        raise IntegrityError(
            f"{path!r}: {len(bad)} dataset(s) do not match their recorded checksum: {names}; "
            "the file is damaged: rebuild it or restore a copy"
        )
    return checks

