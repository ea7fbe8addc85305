"""The HDF5 schema of a vecstore file, in one place.

docs/format.md is the normative description; this module is its implementation. Everything that
names a dataset or an attribute, writes one so that it can be memory-mapped, validates one before it
is mapped, or replaces a file atomically lives here, so the reader and the writer cannot drift apart.

Why the care: a store must open in megabytes whatever its size, so every per-document dataset is
contiguous, uncompressed, allocated early and page-aligned, and is read through one ``mmap`` of the
whole file at the offset HDF5 reports (h5py has no memmap of its own). h5py is used only to write and
to read the small header; it is closed before any search runs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import mmap
import os
import re
import secrets
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import h5py
import numpy as np
import xxhash

from ..errors import FormatError, StoreNotFoundError, StoreWriteError, UnsupportedVersionError

FORMAT_NAME = "vecstore"
# The highest format version this code reads. Version 2 is version 1 plus inverted-file tiers (their
# codes are in list order, which a version-1 reader would misread); a file without one is written as
# version 1, so readers of version 1 still open it (docs/format.md, "Reserved for later versions").
FORMAT_VERSION = 2
IVF_FORMAT_VERSION = 2


def version_for(codecs) -> int:
    """The format version a file holding tiers of these codec pipelines is written as."""
    return IVF_FORMAT_VERSION if any(c.ivf is not None for c in codecs) else 1
METRICS = ("ip", "cosine", "l2")
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
PAGE = 4096

# Attribute and dataset names (docs/format.md, "Layout").
ATTR_FORMAT = "format"
ATTR_VERSION = "format_version"
ATTR_WRITER = "vecstore_version"
ATTR_DIM = "dim"
ATTR_COUNT = "count"
ATTR_METRIC = "metric"
ATTR_MODEL = "model"
ATTR_STORE_ID = "store_id"
ATTR_STORE_CHECKSUM = "store_xxh3_64"  # xxh3_64 of the store_id and the table of datasets (docs/format.md)
STORE_ID = re.compile(r"^[0-9a-f]{16,64}$")
ATTR_CHECKSUM = "xxh3_64"
ATTR_CODEC = "codec"
ATTR_CODEC_STRING = "codec_string"
ATTR_CALIBRATION = "calibration"
IDS = "ids"
KEYS = "keys"
METADATA = "metadata"
TIERS = "tiers"
CODES = "codes"
SQNORMS = "sqnorms"
PARAMS = "params"
# An inverted-file tier's lists (docs/format.md, "Inverted-file tiers"): /tiers/<name>/lists/offsets
# (nlist + 1, <i8) and /tiers/<name>/lists/rows (count, <i8); its codes and sqnorms are in list order.
LISTS = "lists"
LIST_OFFSETS = "offsets"
LIST_ROWS = "rows"
RAW_TIER = "raw"
ENCODERS = "encoders"
ATTR_CONFIG = "config"
VOCAB = "vocab"
ARRAYS = "arrays"
# Filterable fields (docs/format.md, "Fields"): /fields/<name>/..., typed columns over the rows.
FIELDS = "fields"
ATTR_FIELD_TYPE = "type"
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# type -> the datasets of its group (a string column "dictionary" is a group of offsets + data)
FIELD_DATASETS = {
    "int": ("values", "present"),
    "float": ("values", "present"),
    "bool": ("values", "present"),
    "string": ("codes", "dictionary"),
    "tags": ("offsets", "codes", "dictionary"),
}
DICTIONARY = "dictionary"

# Bounds that keep a hostile header from making us allocate or parse without limit.
MAX_ATTR_BYTES = 1 << 20
MAX_NAME_LEN = 256
TIER_NAME = re.compile(r"^[A-Za-z0-9_.,:+\-=]{1,%d}$" % MAX_NAME_LEN)
# numpy dtype -> the one HDF5 type a store may use for it (h5py maps some custom types, e.g. a
# 2-byte non-IEEE float, onto these numpy dtypes; comparing the file's type itself refuses them)
ALLOWED_TYPES = {
    np.dtype("<f4"): h5py.h5t.IEEE_F32LE,
    np.dtype("<f2"): h5py.h5t.IEEE_F16LE,
    np.dtype("<f8"): h5py.h5t.IEEE_F64LE,  # float fields only
    np.dtype("<i8"): h5py.h5t.STD_I64LE,
    np.dtype("<i4"): h5py.h5t.STD_I32LE,
    np.dtype("u1"): h5py.h5t.STD_U8LE,
    np.dtype("i1"): h5py.h5t.STD_I8LE,
}


def dataset_creation_plist() -> h5py.h5p.PropDCID:
    """A property list for a contiguous, early-allocated, never-filled dataset (mappable)."""
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_layout(h5py.h5d.CONTIGUOUS)
    plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    plist.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return plist


def open_h5_readonly(path: str) -> h5py.File:
    """Open an HDF5 file read-only without HDF5's file lock (readers never block a rename).

    HDF5 refuses to open a file twice in one process with different locking flags, so when the
    caller already holds it open with locking, fall back to that.
    """
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        if "locking flag" not in str(exc):
            raise
        return h5py.File(path, "r")


def create_file(path: str) -> h5py.File:
    """Open a new HDF5 file whose datasets start on page boundaries."""
    return h5py.File(path, "w", alignment_threshold=1, alignment_interval=PAGE, locking=False)


class ChecksumWriter:
    """A mappable dataset written in row order while its xxh3_64 digest is computed.

    Rows must be written front to back without gaps, so the streamed digest equals the digest of
    the whole dataset as stored (little-endian, C order).
    """

    def __init__(self, group: h5py.Group, name: str, shape: tuple[int, ...], dtype: np.dtype):
        self.dtype = np.dtype(dtype)
        self.dataset = group.create_dataset(
            name, shape=shape, dtype=self.dtype, dcpl=dataset_creation_plist()
        )
        self.rows = int(shape[0])
        self.written = 0
        self.hasher = xxhash.xxh3_64()

    def write(self, rows: np.ndarray) -> None:
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        end = self.written + rows.shape[0]
        if rows.shape[0]:
            self.dataset[self.written:end] = rows
            self.hasher.update(memoryview(rows).cast("B"))
        self.written = end

    def close(self) -> None:
        if self.written != self.rows:
            raise RuntimeError(f"{self.dataset.name}: wrote {self.written} of {self.rows} rows")
        self.dataset.attrs[ATTR_CHECKSUM] = self.hasher.hexdigest()


def write_array(group: h5py.Group, name: str, array: np.ndarray) -> None:
    """Write a whole array as a mappable, checksummed dataset."""
    array = np.ascontiguousarray(array)
    writer = ChecksumWriter(group, name, array.shape, array.dtype.newbyteorder("<"))
    writer.write(array)
    writer.close()


def write_strings(group: h5py.Group, name: str, strings: list[str]) -> None:
    """Write strings as a UTF-8 byte blob plus int64 offsets (n + 1), both mappable.

    Variable-length HDF5 strings cannot be mapped and their length is unbounded; a blob with
    offsets reads the same in any language.
    """
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype="<i8")
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    sub = group.create_group(name)
    write_array(sub, "offsets", offsets)
    write_array(sub, "data", np.frombuffer(b"".join(encoded), dtype="u1"))


# ---------------------------------------------------------------------------------------------
# Atomic replacement


TMP_MARK = ".vecstore-tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(target: str) -> list[str]:
    """Remove temporary files that an interrupted write to ``target`` left behind.

    A temporary carries its writer's pid; files of a process that is still alive are kept.
    """
    directory = os.path.dirname(os.path.abspath(target))
    return clean_stale_temporaries_in(directory, "." + os.path.basename(target) + TMP_MARK)


def clean_stale_temporaries_in(directory: str, prefix: str = ".", *, any_writer: bool = False) -> list[str]:
    """Remove every temporary in ``directory`` (named ``prefix...TMP_MARK<pid>-...``) whose writer
    is dead; with the default prefix, those of any target. With ``any_writer`` (the caller holds the
    writer lock that every writer of these temporaries takes), remove them whatever their pid."""
    removed = []
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir(directory):
            if not entry.startswith(prefix) or TMP_MARK not in entry:
                continue
            pid_text = entry.split(TMP_MARK, 1)[1].split("-", 1)[0]
            if pid_text.isdigit() and (any_writer or not _pid_alive(int(pid_text))):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(directory, entry))
                    removed.append(entry)
    return removed


def _fsync_path(path: str, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: str) -> None:
    """Make a rename inside ``directory`` durable."""
    _fsync_path(directory, directory=True)


def exchange_paths(a: str, b: str) -> bool:
    """Atomically exchange the files at ``a`` and ``b`` (Linux ``renameat2(RENAME_EXCHANGE)``):
    at every instant each name holds one of the two files. Return False when the system cannot
    (another OS, an old kernel or libc, a filesystem without it); nothing was changed then."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), a, None, b)


@contextlib.contextmanager
def atomic_target(target: str, before_rename: Callable[[], None] | None = None) -> Iterator[str]:
    """Yield a temporary path beside ``target``; on success, fsync it and rename it into place
    (calling ``before_rename()`` between the two).

    A crash at any moment leaves either the old ``target`` (or none) plus a temporary that the
    next write removes; never a half-written file at ``target``.
    """
    target = os.path.abspath(target)
    directory = os.path.dirname(target)
    if not os.path.isdir(directory):
        raise StoreNotFoundError(f"directory {directory!r} does not exist: create it first")
    clean_stale_temporaries(target)
    tmp = os.path.join(
        directory, f".{os.path.basename(target)}{TMP_MARK}{os.getpid()}-{secrets.token_hex(4)}"
    )
    try:
        yield tmp
        _fsync_path(tmp)
        if before_rename is not None:
            before_rename()
        os.replace(tmp, target)
    except (OSError, RuntimeError) as exc:
        failure = write_failure(target, exc)
        if failure is None:
            raise
        raise failure from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_path(directory, directory=True)


# What the user's environment does to a write: a full disk or quota, a file size limit, a read-only
# filesystem, no permission. h5py reports these as OSError or RuntimeError with "errno = 28" in a
# multi-line text, so the number is also looked for there.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})
_H5_ERRNO = re.compile(r"errno = (\d+)")


def write_failure(target: str, exc: BaseException) -> StoreWriteError | None:
    """The one-line :class:`StoreWriteError` for an environment failure while writing ``target``
    (an errno in :data:`WRITE_ERRNOS`), or None for anything else."""
    code = getattr(exc, "errno", None)
    if code is None:
        found = _H5_ERRNO.search(str(exc))
        code = int(found.group(1)) if found else None
    if code not in WRITE_ERRNOS:
        return None
    return StoreWriteError(f"could not write {target!r}: {os.strerror(code)}; check free space and permissions "
                           "(nothing was changed)")


# ---------------------------------------------------------------------------------------------
# Reading: validate the header, then map datasets


@dataclass(frozen=True)
class DatasetSpan:
    """Where a validated dataset's bytes live in the file."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int | None  # None only for a dataset of zero bytes
    checksum: str | None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


@dataclass
class Header:
    """Everything read from a store's HDF5 structure; no vector data."""

    path: str
    file_size: int
    attrs: dict
    datasets: dict[str, DatasetSpan] = field(default_factory=dict)
    tier_attrs: dict[str, dict] = field(default_factory=dict)
    encoder_configs: dict[str, dict] = field(default_factory=dict)
    field_types: dict[str, str] = field(default_factory=dict)  # filterable field -> its type


def _attr_text(attrs: h5py.AttributeManager, name: str, where: str, required: bool = True):
    if name not in attrs:
        if required:
            raise FormatError(f"{where}: attribute {name!r} is missing; the file is damaged")
        return None
    value = attrs[name]
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and len(value) > MAX_ATTR_BYTES:
        raise FormatError(f"{where}: attribute {name!r} is longer than {MAX_ATTR_BYTES} bytes")
    if isinstance(value, np.ndarray) and value.dtype.kind == "O":
        raise FormatError(f"{where}: attribute {name!r} holds objects; a store never does")
    return value


def _attr_int(attrs: h5py.AttributeManager, name: str, where: str) -> int:
    value = _attr_text(attrs, name, where)
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise FormatError(f"{where}: attribute {name!r} must be an integer, found {value!r}")
    return int(value)


def attr_json(attrs: h5py.AttributeManager, name: str, where: str, required: bool = True):
    """Read an attribute that holds JSON text."""
    text = _attr_text(attrs, name, where, required)
    if text is None:
        return None
    if not isinstance(text, str):
        raise FormatError(f"{where}: attribute {name!r} must be JSON text")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormatError(f"{where}: attribute {name!r} is not valid JSON ({exc})") from None


def _hard_child(group: h5py.Group, name: str, where: str):
    """Return group[name] only when it is a plain hard link (never external or soft)."""
    link = group.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        raise FormatError(f"{where}/{name}: is a {type(link).__name__}; a store uses only hard links")
    return group[name]


def _span(ds: h5py.Dataset, file_size: int) -> DatasetSpan:
    where = ds.name
    if ds.dtype.kind == "O" or ds.dtype.names is not None or ds.dtype.kind in "SUV":
        raise FormatError(f"{where}: dtype {ds.dtype} is not allowed in a store")
    dtype = ds.dtype
    if dtype not in ALLOWED_TYPES or not ds.id.get_type().equal(ALLOWED_TYPES[dtype]):
        raise FormatError(f"{where}: dtype {dtype.str} is not one a store uses (standard little-endian only)")
    if dtype == np.dtype("<f8") and not where.startswith("/fields/"):
        raise FormatError(f"{where}: dtype <f8 is used only by float fields (under /fields); the file was edited")
    if ds.is_virtual:
        raise FormatError(f"{where}: virtual datasets are refused")
    plist = ds.id.get_create_plist()
    if plist.get_layout() != h5py.h5d.CONTIGUOUS:
        raise FormatError(f"{where}: layout is not contiguous, so it cannot be memory-mapped")
    if plist.get_nfilters() != 0:
        raise FormatError(f"{where}: has filters (compression or checksums); refused")
    if plist.get_external_count() != 0:
        raise FormatError(f"{where}: uses external storage; refused")
    shape = tuple(int(s) for s in ds.shape)
    checksum = ds.attrs.get(ATTR_CHECKSUM)
    if isinstance(checksum, bytes):
        checksum = checksum.decode("ascii", "replace")
    if checksum is not None and not isinstance(checksum, str):
        raise FormatError(f"{where}: attribute {ATTR_CHECKSUM!r} must be text")
    span = DatasetSpan(where.lstrip("/"), dtype, shape, None, checksum)
    if span.nbytes == 0:
        return span
    offset = ds.id.get_offset()
    if offset is None:
        raise FormatError(f"{where}: storage is not allocated; the file is damaged")
    if offset < 0 or offset + span.nbytes > file_size:
        raise FormatError(
            f"{where}: claims bytes {offset}..{offset + span.nbytes} but the file has {file_size}; "
            "it is truncated or damaged"
        )
    return DatasetSpan(span.name, dtype, shape, int(offset), checksum)


def open_store_file(path: str, *, map_file: bool = True, check_identity: bool = True) -> tuple[Header, FileMap | None]:
    """Validate the store at ``path`` and map it, all through ONE file descriptor.

    Stat, HDF5 header and mapping come from the same open file, so a writer renaming a new store
    over ``path`` meanwhile can never pair one file's header with another's bytes. Anything that is
    not a regular file (a directory, a FIFO that would block) is refused before it is opened.
    Raises a :class:`FormatError` for anything that is not a store this code can map safely.
    With ``map_file=False`` only the header is read and validated (the map is None).
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise StoreNotFoundError(f"{path!r} does not exist: check the path, or build a store there") from None
    except OSError as exc:  # a symlink loop (ELOOP), a file used as a directory, no permission ...
        raise StoreNotFoundError(f"{path!r} cannot be reached ({exc.strerror}): check the path and its links") from None
    if stat.S_ISDIR(st.st_mode):
        raise StoreNotFoundError(f"{path!r} is a directory, not a store file")
    if not stat.S_ISREG(st.st_mode):
        raise FormatError(f"{path!r} is not a regular file (a pipe, socket or device); a store is a file")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FormatError(f"{path!r} is not a regular file; a store is a file")
        if os.pread(fd, len(HDF5_SIGNATURE), 0) != HDF5_SIGNATURE:
            raise FormatError(
                f"{path!r} is not an HDF5 file (no HDF5 signature at byte 0): build a store with "
                "`vecstore build`"
            )
        with os.fdopen(os.dup(fd), "rb") as fileobj:
            header = _read_header_from(path, st.st_size, fileobj)
        if check_identity:
            check_store_checksum(header, path)
        return header, (FileMap(fd, st.st_size) if map_file else None)
    finally:
        os.close(fd)


def _read_header_from(path: str, file_size: int, fileobj) -> Header:
    try:
        handle = h5py.File(fileobj, "r")
    except Exception as exc:  # h5py raises OSError and others for damaged files
        raise FormatError(f"{path!r} could not be read as HDF5 ({exc}); it is damaged") from None
    try:
        with handle:
            return _read_structure(path, file_size, handle)
    except FormatError:
        raise
    except Exception as exc:  # a damaged object deep in the file
        raise FormatError(f"{path!r}: damaged HDF5 structure ({type(exc).__name__}: {exc})") from None


def _read_structure(path: str, file_size: int, f: h5py.File) -> Header:
    where = path
    if f.userblock_size:
        raise FormatError(f"{where}: has a user block; a store never does")
    fmt = _attr_text(f.attrs, ATTR_FORMAT, where, required=False)
    if fmt != FORMAT_NAME:
        raise FormatError(
            f"{path!r} is an HDF5 file but not a vecstore (no format='vecstore' attribute); "
            "build one with `vecstore build`"
        )
    version = _attr_int(f.attrs, ATTR_VERSION, where)
    if version > FORMAT_VERSION:
        raise UnsupportedVersionError(
            f"{path!r} has format version {version}; this vecstore reads up to {FORMAT_VERSION}: "
            "upgrade vecstore"
        )
    if version < 1:
        raise FormatError(f"{where}: format version {version} is not valid")
    attrs = {
        ATTR_VERSION: version,
        ATTR_WRITER: str(_attr_text(f.attrs, ATTR_WRITER, where)),
        ATTR_DIM: _attr_int(f.attrs, ATTR_DIM, where),
        ATTR_COUNT: _attr_int(f.attrs, ATTR_COUNT, where),
        ATTR_METRIC: _attr_text(f.attrs, ATTR_METRIC, where),
        ATTR_MODEL: attr_json(f.attrs, ATTR_MODEL, where, required=False),
        ATTR_STORE_ID: _attr_text(f.attrs, ATTR_STORE_ID, where, required=False),
        ATTR_STORE_CHECKSUM: _attr_text(f.attrs, ATTR_STORE_CHECKSUM, where, required=False),
    }
    if attrs[ATTR_STORE_ID] is not None and not STORE_ID.match(str(attrs[ATTR_STORE_ID])):
        raise FormatError(f"{where}: attribute {ATTR_STORE_ID!r} must be 16 to 64 lowercase hex digits")
    if attrs[ATTR_METRIC] not in METRICS:
        raise FormatError(f"{where}: metric {attrs[ATTR_METRIC]!r} is not one of {METRICS}")
    if attrs[ATTR_DIM] < 1 or attrs[ATTR_COUNT] < 0:
        raise FormatError(f"{where}: dim {attrs[ATTR_DIM]} / count {attrs[ATTR_COUNT]} are invalid")
    header = Header(path, file_size, attrs)

    def add(ds_parent: h5py.Group, name: str, where_: str, required: bool = True):
        obj = _hard_child(ds_parent, name, where_)
        if obj is None:
            if required:
                raise FormatError(f"{where_}/{name}: dataset is missing; the file is damaged")
            return None
        if not isinstance(obj, h5py.Dataset):
            raise FormatError(f"{obj.name}: expected a dataset")
        span = _span(obj, file_size)
        header.datasets[span.name] = span
        return span

    add(f, IDS, "")
    for blob in (KEYS, METADATA):
        grp = _hard_child(f, blob, "")
        if grp is not None:
            if not isinstance(grp, h5py.Group):
                raise FormatError(f"/{blob}: expected a group")
            add(grp, "offsets", f"/{blob}")
            add(grp, "data", f"/{blob}")

    def add_arrays(group, where_: str) -> None:
        if not isinstance(group, h5py.Group):
            raise FormatError(f"{where_}: expected a group")
        for pname in group:
            if len(pname) > MAX_NAME_LEN:
                raise FormatError(f"{where_}: an array name is too long")
            span = add(group, pname, where_)
            if span.nbytes > 1 << 31:
                raise FormatError(f"{span.name}: {span.nbytes} bytes is too large for a parameter")

    tiers = _hard_child(f, TIERS, "")
    if tiers is None or not isinstance(tiers, h5py.Group):
        raise FormatError(f"{where}: group /{TIERS} is missing; the file is damaged")
    for name in tiers:
        if not TIER_NAME.match(name):
            raise FormatError(f"/{TIERS}/{name[:64]!r}: not a valid tier name")
        tier = _hard_child(tiers, name, f"/{TIERS}")
        if not isinstance(tier, h5py.Group):
            raise FormatError(f"/{TIERS}/{name}: expected a group")
        tw = f"/{TIERS}/{name}"
        header.tier_attrs[name] = {
            ATTR_CODEC: attr_json(tier.attrs, ATTR_CODEC, tw),
            ATTR_CODEC_STRING: str(_attr_text(tier.attrs, ATTR_CODEC_STRING, tw)),
            ATTR_CALIBRATION: attr_json(tier.attrs, ATTR_CALIBRATION, tw, required=False),
        }
        add(tier, CODES, tw)
        add(tier, SQNORMS, tw, required=False)
        lists = _hard_child(tier, LISTS, tw)
        if lists is not None:
            if not isinstance(lists, h5py.Group):
                raise FormatError(f"{tw}/{LISTS}: expected a group")
            add(lists, LIST_OFFSETS, f"{tw}/{LISTS}")
            add(lists, LIST_ROWS, f"{tw}/{LISTS}")
        params = _hard_child(tier, PARAMS, tw)
        if params is not None:
            add_arrays(params, f"{tw}/{PARAMS}")

    encoders = _hard_child(f, ENCODERS, "")
    if encoders is not None:
        if not isinstance(encoders, h5py.Group):
            raise FormatError(f"/{ENCODERS}: expected a group")
        for name in encoders:
            if not TIER_NAME.match(name):
                raise FormatError(f"/{ENCODERS}/{name[:64]!r}: not a valid encoder name")
            enc = _hard_child(encoders, name, f"/{ENCODERS}")
            ew = f"/{ENCODERS}/{name}"
            if not isinstance(enc, h5py.Group):
                raise FormatError(f"{ew}: expected a group")
            header.encoder_configs[name] = attr_json(enc.attrs, ATTR_CONFIG, ew)
            vocab = _hard_child(enc, VOCAB, ew)
            if not isinstance(vocab, h5py.Group):
                raise FormatError(f"{ew}/{VOCAB}: the vocabulary group is missing")
            add(vocab, "offsets", f"{ew}/{VOCAB}")
            add(vocab, "data", f"{ew}/{VOCAB}")
            add_arrays(_hard_child(enc, ARRAYS, ew), f"{ew}/{ARRAYS}")
    _read_fields(f, header, add)
    if RAW_TIER not in header.tier_attrs:
        raise FormatError(f"{where}: the raw tier /{TIERS}/{RAW_TIER} is missing; the file is damaged")
    raw_stages = (header.tier_attrs[RAW_TIER][ATTR_CODEC] or {}).get("stages") if isinstance(
        header.tier_attrs[RAW_TIER][ATTR_CODEC], dict) else None
    if raw_stages != [{"id": "float32"}]:
        raise FormatError(f"{where}: the raw tier must hold float32 vectors (codec [float32]); the file was edited")
    _refuse_overlaps(header)
    return header


def store_checksum(store_id: str, datasets) -> str:
    """xxh3_64 (16 hex digits) of the UTF-8 text ``<store_id>\\0`` followed, for every dataset in
    order of its path (no leading slash), by ``<path>\\0<dtype>\\0<shape>\\0``: what makes the
    file's identity and its table of contents verifiable (docs/format.md "Store identity").
    ``datasets``: (path, numpy dtype string, shape tuple) triples."""
    hasher = xxhash.xxh3_64()
    hasher.update(f"{store_id}\0".encode("utf-8"))
    for path, dtype, shape in sorted(datasets):
        hasher.update(f"{path}\0{dtype}\0{tuple(shape)}\0".encode("utf-8"))
    return hasher.hexdigest()


def check_store_checksum(header: Header, where: str) -> None:
    """Refuse a file whose ``store_id`` or set of datasets differs from what its writer recorded
    in ``store_xxh3_64``. Files written before the attribute existed have none and are accepted."""
    recorded = header.attrs.get(ATTR_STORE_CHECKSUM)
    if recorded is None:
        return
    store_id = header.attrs.get(ATTR_STORE_ID)
    if not store_id:
        raise FormatError(f"{where}: has {ATTR_STORE_CHECKSUM!r} but no {ATTR_STORE_ID!r}: its identity was "
                          "removed, so its appended segments and deletions cannot be found; restore the file")
    computed = store_checksum(str(store_id), [(n, s.dtype.str, s.shape) for n, s in header.datasets.items()])
    if recorded != computed:
        raise FormatError(f"{where}: its {ATTR_STORE_ID!r} or its list of datasets does not match its checksum "
                          f"({ATTR_STORE_CHECKSUM}); the file was damaged or edited: restore it or rebuild the store")


def _read_fields(f: h5py.File, header: Header, add) -> None:
    """The optional /fields group: one group per field with a known ``type`` attribute and that
    type's datasets (validated and mapped like every other). A field of a type this reader does not
    know is ignored, as the format's rule for additions says."""
    fields = _hard_child(f, FIELDS, "")
    if fields is None:
        return
    if not isinstance(fields, h5py.Group):
        raise FormatError(f"/{FIELDS}: expected a group")
    for name in fields:
        if not FIELD_NAME.match(name):
            raise FormatError(f"/{FIELDS}/{name[:64]!r}: not a valid field name")
        fw = f"/{FIELDS}/{name}"
        group = _hard_child(fields, name, f"/{FIELDS}")
        if not isinstance(group, h5py.Group):
            raise FormatError(f"{fw}: expected a group")
        kind = _attr_text(group.attrs, ATTR_FIELD_TYPE, fw)
        if kind not in FIELD_DATASETS:
            continue
        for part in FIELD_DATASETS[kind]:
            if part == DICTIONARY:
                sub = _hard_child(group, DICTIONARY, fw)
                if not isinstance(sub, h5py.Group):
                    raise FormatError(f"{fw}/{DICTIONARY}: the dictionary group is missing")
                add(sub, "offsets", f"{fw}/{DICTIONARY}")
                add(sub, "data", f"{fw}/{DICTIONARY}")
            else:
                add(group, part, fw)
        header.field_types[name] = kind


def _refuse_overlaps(header: Header) -> None:
    """Two datasets claiming the same bytes mean an edited file (safetensors' rule)."""
    spans = sorted((s for s in header.datasets.values() if s.offset is not None), key=lambda s: s.offset)
    for before, after in zip(spans, spans[1:]):
        if before.offset + before.nbytes > after.offset:
            raise FormatError(f"/{before.name} and /{after.name} overlap in the file; it was edited")


class FileMap:
    """One read-only ``mmap`` of a whole store file, and array views into it."""

    def __init__(self, fd: int, size: int):
        self.mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ) if size else None

    def array(self, span: DatasetSpan) -> np.ndarray:
        """A read-only view of a validated dataset (no bytes are read until used)."""
        if span.offset is None or self.mm is None:
            return np.zeros(span.shape, dtype=span.dtype)
        count = span.nbytes // span.dtype.itemsize
        flat = np.frombuffer(self.mm, dtype=span.dtype, count=count, offset=span.offset)
        return flat.reshape(span.shape)

    def advise_random(self, span: DatasetSpan) -> None:
        """Tell the kernel that ``span`` is read in scattered rows (MADV_RANDOM): no readahead on its
        page faults. A rescoring tier reads a few rows per query; with the default readahead a query
        on a tier out of the page cache read 544 MB to rescore 1.3 MB (4096-d, 80 rows)."""
        if self.mm is None or span.offset is None or not hasattr(mmap, "MADV_RANDOM") or span.nbytes == 0:
            return
        start = span.offset - span.offset % mmap.PAGESIZE
        try:
            self.mm.madvise(mmap.MADV_RANDOM, start, span.offset + span.nbytes - start)
        except (OSError, ValueError):
            pass  # advice only: a kernel that refuses it reads as before

    def close(self) -> None:
        if self.mm is not None:
            try:
                self.mm.close()
            except BufferError:
                pass  # arrays handed out still view the map; it closes when they are freed
            self.mm = None


def store_identity(header: Header) -> str:
    """What names this exact file's contents: its ``store_id`` attribute (random, written by every
    write), or for files written before it existed a digest of every dataset's recorded checksum."""
    if header.attrs.get(ATTR_STORE_ID):
        return str(header.attrs[ATTR_STORE_ID])
    hasher = xxhash.xxh3_128()
    for name, span in sorted(header.datasets.items()):
        hasher.update(f"{name}\0{span.dtype.str}\0{span.shape}\0{span.checksum}\0".encode("utf-8"))
    return hasher.hexdigest()
