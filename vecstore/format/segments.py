"""The segment directory beside a store: appended segments, deleted ids, and the manifest naming them.

A store file is never modified in place. Appending writes a *segment* (a complete v1 store of the new
documents, encoded with the main store's parameters) into ``STORE.segments/``; deleting writes the
full sorted set of deleted ids into a new file there; each change then publishes a new *manifest*
by an atomic rename. The manifest is keyed by the identity of the main file it extends
(``manifest-<store_id>.json``), so replacing the main file (compact, compress, swap) with a single
rename switches the whole store at once: a file with a new identity has no segments yet.

A crash before the rename leaves the previous manifest (the store as before); after it, the new one
(the store as after). A file the new manifest no longer needs is *retired*: the manifest records it
with the time it stopped being needed (``retired``), and a later writer removes it only once it has
been retired for :data:`RETIRE_GRACE_S`, longer than any open takes (a reader that has just read the
previous manifest may still be opening it). A writer that replaces the main file (compact, compress,
swap, build over a store) publishes the new file's manifest, retiring the old one, *before* its rename,
so while the directory exists some manifest always matches the main file: a directory whose manifests
match none was damaged, and is refused (:func:`check_unmatched`), never silently ignored or cleaned.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import xxhash

from ..errors import FormatError, ReadOnlyStoreError, StoreWriteError, VecstoreError
from . import schema as fmt

MANIFEST_FORMAT = "vecstore-segments"
MANIFEST_VERSION = 3  # 2: a checksum of the whole manifest, each segment's string columns; 3: retired files
MANIFEST_FIELDS = ("format", "version", "base", "generation", "next_id", "segments", "deleted")
MAX_RETIRED = 100_000
STRING_COLUMNS = (fmt.KEYS, fmt.METADATA)
MAX_MANIFEST_BYTES = 16 << 20
MAX_SEGMENTS = 10_000
RETIRE_GRACE_S = 600  # a retired file is removed this long after it stopped being needed (docs/format.md)
SEGMENT_FILE = re.compile(r"^seg-[0-9a-f]{32}\.vs$")
DELETED_FILE = re.compile(r"^deleted-[0-9a-f]{32}\.i64$")
MANIFEST_FILE = re.compile(r"^manifest-[0-9a-f]{16,64}\.json$")
LOCK_TIMEOUT_S = 60.0


def sidecar_dir(store_path: str) -> str:
    """``STORE.segments``: where a store's segments, deleted ids and manifests live."""
    return os.path.abspath(store_path) + ".segments"


def manifest_name(store_id: str) -> str:
    return f"manifest-{store_id}.json"


def manifest_path(store_path: str, store_id: str) -> str:
    return os.path.join(sidecar_dir(store_path), manifest_name(store_id))


@dataclass(frozen=True)
class SegmentEntry:
    file: str       # file name inside the segment directory
    store_id: str   # the segment file's own store_id
    count: int
    columns: tuple[str, ...] | None = None  # its string columns (keys, metadata); None: not recorded (v1)


@dataclass
class Manifest:
    """What extends one main file: its segments in append order and the deleted ids."""

    base_id: str
    generation: int = 0
    segments: list[SegmentEntry] = field(default_factory=list)
    deleted_file: str | None = None
    deleted_count: int = 0
    deleted_checksum: str | None = None
    next_id: int = 0
    retired: dict[str, int] = field(default_factory=dict)  # file -> unix time (s) it stopped being needed
    version: int = MANIFEST_VERSION  # as read (1 and 2 predate ``retired``)

    def to_json(self) -> str:
        doc = {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "base": self.base_id,
            "generation": self.generation,
            "next_id": self.next_id,
            "segments": [{"file": s.file, "store_id": s.store_id, "count": s.count, "columns": list(s.columns)}
                         for s in self.segments],
            "deleted": None if self.deleted_file is None else {
                "file": self.deleted_file, "count": self.deleted_count, "xxh3_64": self.deleted_checksum},
            "retired": [{"file": name, "since": since} for name, since in sorted(self.retired.items())],
        }
        doc["xxh3_64"] = manifest_checksum(doc)
        return json.dumps(doc, indent=1, sort_keys=True)


def manifest_checksum(doc: dict) -> str:
    """xxh3_64 of the manifest's canonical JSON without its ``xxh3_64`` field (docs/format.md "Segments")."""
    body = {k: v for k, v in doc.items() if k != "xxh3_64"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return xxhash.xxh3_64_hexdigest(canonical.encode("ascii"))


def _int(value, where: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or value >= 1 << 63:
        raise FormatError(f"{where}: expected an integer >= {low}, found {value!r}; the manifest is damaged")
    return value


def _parse(text: bytes, where: str, base_id: str | None) -> Manifest:
    """The manifest in ``text``, validated; ``base_id`` None: of whichever main file it names."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):  # RecursionError: nested too deeply
        raise FormatError(f"{where}: not valid JSON; the segment manifest is damaged") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise FormatError(f"{where}: not a vecstore segment manifest")
    version = _int(doc.get("version"), f"{where}: version", 1)
    if version > MANIFEST_VERSION:
        raise FormatError(f"{where}: manifest version {version}; this vecstore reads up to {MANIFEST_VERSION}: "
                          "upgrade vecstore")
    missing = [name for name in MANIFEST_FIELDS if name not in doc]
    missing += [name for name, since in (("xxh3_64", 2), ("retired", 3)) if version >= since and name not in doc]
    if missing:
        raise FormatError(f"{where}: lacks the field(s) {', '.join(missing)}; the segment manifest is damaged")
    if "xxh3_64" in doc:
        try:
            intact = doc["xxh3_64"] == manifest_checksum(doc)
        except (ValueError, RecursionError):
            intact = False
        if not intact:
            raise FormatError(f"{where}: does not match its checksum (xxh3_64); the segment manifest is damaged")
    if base_id is None and isinstance(doc.get("base"), str) and fmt.STORE_ID.match(doc["base"]):
        base_id = doc["base"]
    if doc.get("base") != base_id:
        raise FormatError(f"{where}: names main file {doc.get('base')!r}, not this one ({base_id})")
    entries = doc.get("segments")
    if not isinstance(entries, list) or len(entries) > MAX_SEGMENTS:
        raise FormatError(f"{where}: 'segments' must be a list of at most {MAX_SEGMENTS}")
    segments = []
    for i, entry in enumerate(entries):
        if (not isinstance(entry, dict) or not isinstance(entry.get("file"), str)
                or not SEGMENT_FILE.match(entry["file"]) or not isinstance(entry.get("store_id"), str)
                or not fmt.STORE_ID.match(entry["store_id"])):
            raise FormatError(f"{where}: segment {i} must name a file seg-<32 hex>.vs and its store_id")
        columns = entry.get("columns")
        if version >= 2 and (not isinstance(columns, list) or not set(columns) <= set(STRING_COLUMNS)
                             or columns != sorted(set(columns))):
            raise FormatError(f"{where}: segment {i} must list its string columns (of {', '.join(STRING_COLUMNS)})")
        segments.append(SegmentEntry(entry["file"], entry["store_id"], _int(entry.get("count"), f"{where}: segment {i}"),
                                     tuple(columns) if version >= 2 else None))
    if len({s.file for s in segments}) != len(segments):
        raise FormatError(f"{where}: a segment file is listed twice")
    manifest = Manifest(base_id, _int(doc.get("generation"), f"{where}: generation"), segments,
                        next_id=_int(doc.get("next_id"), f"{where}: next_id"), version=version)
    retired = doc.get("retired", [])
    if not isinstance(retired, list) or len(retired) > MAX_RETIRED:
        raise FormatError(f"{where}: 'retired' must be a list of at most {MAX_RETIRED}")
    for entry in retired:
        if (not isinstance(entry, dict) or not isinstance(entry.get("file"), str)
                or not any(p.match(entry["file"]) for p in (SEGMENT_FILE, DELETED_FILE, MANIFEST_FILE))):
            raise FormatError(f"{where}: each retired entry must name a segment, deleted-id or manifest file")
        manifest.retired[entry["file"]] = _int(entry.get("since"), f"{where}: retired since")
    deleted = doc.get("deleted")
    if deleted is not None:
        if (not isinstance(deleted, dict) or not isinstance(deleted.get("file"), str)
                or not DELETED_FILE.match(deleted["file"]) or not isinstance(deleted.get("xxh3_64"), str)):
            raise FormatError(f"{where}: 'deleted' must name a file deleted-<32 hex>.i64 and its xxh3_64")
        manifest.deleted_file = deleted["file"]
        manifest.deleted_count = _int(deleted.get("count"), f"{where}: deleted count")
        manifest.deleted_checksum = deleted["xxh3_64"]
    return manifest


def manifest_files(manifest: Manifest) -> set[str]:
    """The names in ``STORE.segments`` that ``manifest`` needs: itself, its segments, its deleted ids."""
    names = {s.file for s in manifest.segments} | {manifest_name(manifest.base_id)}
    if manifest.deleted_file:
        names.add(manifest.deleted_file)
    return names


def read_manifest(store_path: str, base_id: str) -> Manifest | None:
    """The manifest extending the main file ``base_id``, or None when nothing was appended or deleted."""
    path = manifest_path(store_path, base_id)
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        if os.path.lexists(path):  # a dangling link is not "nothing was appended"
            raise FormatError(f"{path}: a link to a missing file; the segment manifest is damaged") from None
        return None
    except OSError as exc:
        raise FormatError(f"{path}: cannot be read ({exc.strerror})") from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; not a manifest vecstore wrote")
    return _parse(text, path, base_id)


def read_deleted(store_path: str, manifest: Manifest) -> np.ndarray:
    """The sorted, unique deleted ids (int64) that ``manifest`` names, checked against its record."""
    if manifest.deleted_file is None:
        return np.empty(0, dtype=np.int64)
    path = os.path.join(sidecar_dir(store_path), manifest.deleted_file)
    try:
        with open(path, "rb") as fh:
            data = fh.read(8 * manifest.deleted_count + 1)
    except FileNotFoundError:
        raise FormatError(f"{path}: named by the segment manifest but missing; the store is damaged") from None
    except OSError as exc:  # a directory, a link loop, no permission ...
        raise FormatError(f"{path}: named by the segment manifest but cannot be read ({exc.strerror}); "
                          "the store is damaged") from None
    if len(data) != 8 * manifest.deleted_count or xxhash.xxh3_64_hexdigest(data) != manifest.deleted_checksum:
        raise FormatError(f"{path}: does not match its size or checksum in the manifest; the store is damaged")
    ids = np.frombuffer(data, dtype="<i8").astype(np.int64)
    if ids.shape[0] > 1 and not (np.diff(ids) > 0).all():
        raise FormatError(f"{path}: deleted ids are not sorted and unique; the store is damaged")
    return ids


# -- writing ------------------------------------------------------------------------------------


def new_file_name(kind: str) -> str:
    return f"seg-{secrets.token_hex(16)}.vs" if kind == "segment" else f"deleted-{secrets.token_hex(16)}.i64"


def write_deleted(store_path: str, ids: np.ndarray) -> tuple[str, str]:
    """Write sorted unique ids as little-endian int64 into a new file; return (name, xxh3_64)."""
    name = new_file_name("deleted")
    os.makedirs(sidecar_dir(store_path), exist_ok=True)
    data = np.ascontiguousarray(ids, dtype="<i8").tobytes()
    path = os.path.join(sidecar_dir(store_path), name)
    with fmt.atomic_target(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return name, xxhash.xxh3_64_hexdigest(data)


def publish(store_path: str, manifest: Manifest) -> None:
    """Atomically make ``manifest`` the store's state (temporary file, fsync, rename, fsync dir)."""
    os.makedirs(sidecar_dir(store_path), exist_ok=True)
    with fmt.atomic_target(manifest_path(store_path, manifest.base_id)) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(manifest.to_json())


def marker_path(store_path: str) -> str:
    """``.STORE.segmented``: the hidden file beside a store naming the identity of the last main
    file that had appended documents or deletions. It lives outside ``STORE.segments/`` so that a
    removed segment directory is noticed instead of silently serving the bare main file."""
    target = os.path.abspath(store_path)
    return os.path.join(os.path.dirname(target), "." + os.path.basename(target) + ".segmented")


def _marked(store_path: str) -> str | None:
    try:
        with open(marker_path(store_path), "rb") as fh:
            return fh.read(64).decode("ascii", "replace").strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as exc:
        raise FormatError(f"{marker_path(store_path)}: cannot be read ({exc.strerror})") from None


def _mark(store_path: str, base_id: str) -> None:
    """Record (after the manifest is published: a crash before leaves no false alarm) that the main
    file ``base_id`` has appended documents or deletions."""
    if _marked(store_path) == base_id:
        return
    with fmt.atomic_target(marker_path(store_path)) as tmp:
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(base_id + "\n")


def lock_path(store_path: str) -> str:
    """``.STORE.lock``: the hidden file beside a store that its writers lock."""
    target = os.path.abspath(store_path)
    return os.path.join(os.path.dirname(target), "." + os.path.basename(target) + ".lock")


@contextlib.contextmanager
def writer_lock(store_path: str, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise the writers of one store (append, delete, compact, compress, swap) across
    processes with an advisory lock on the hidden file ``.STORE.lock`` beside it. Readers never
    take it. A directory this process cannot write makes the store read-only here."""
    try:
        fd = os.open(lock_path(store_path), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ReadOnlyStoreError(
            f"cannot change {store_path!r}: its directory is not writable here ({exc.strerror}); "
            "check the permissions, or work on a copy"
        ) from None
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    raise StoreWriteError(
                        f"another process has been writing {store_path!r} for over {timeout:.0f} s; "
                        "try again when it finishes"
                    ) from None
                time.sleep(0.05)
        clean_temporaries(store_path)
        yield
    finally:
        os.close(fd)


def _temporaries_of(store_path: str) -> list[tuple[str, str]]:
    """(directory, name prefix) of every temporary a write of the store at ``store_path`` makes:
    its main file's, its marker's (:func:`marker_path`), those in its ``STORE.segments``."""
    target = os.path.abspath(store_path)
    marker = os.path.basename(marker_path(target))
    return [(os.path.dirname(target), "." + os.path.basename(target) + fmt.TMP_MARK),
            (os.path.dirname(target), "." + marker + fmt.TMP_MARK), (sidecar_dir(target), ".")]


def clean_temporaries(store_path: str) -> list[str]:
    """Remove every temporary that killed writes of the store left (beside the main file, in
    ``STORE.segments``), whatever their pid: the caller holds the store's :func:`writer_lock`, which
    every writer of them holds, so none is live. Also those of ``STORE.prev`` (which ``swap`` of
    this store writes), if its writer lock can be taken at once."""
    removed = []
    for directory, prefix in _temporaries_of(store_path):
        removed += fmt.clean_stale_temporaries_in(directory, prefix, any_writer=True)
    previous = os.path.abspath(store_path) + ".prev"
    if not any(e.startswith(p) and fmt.TMP_MARK in e for d, p in _temporaries_of(previous)
               for e in (os.listdir(d) if os.path.isdir(d) else ())):
        return removed
    try:
        fd = os.open(lock_path(previous), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return removed
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # a writer of STORE.prev is at work: its temporaries may be live
        os.close(fd)
        return removed
    try:
        for directory, prefix in _temporaries_of(previous):
            removed += fmt.clean_stale_temporaries_in(directory, prefix, any_writer=True)
    finally:
        os.close(fd)
    return removed


def _entries(directory: str) -> list[str]:
    """The segment, deleted-id and manifest files of a segment directory (no temporaries)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(n for n in names if SEGMENT_FILE.match(n) or DELETED_FILE.match(n) or MANIFEST_FILE.match(n))


def _read_other(directory: str, name: str) -> Manifest | None:
    """The manifest ``name`` of whichever main file it names; None when it cannot be read or parsed."""
    try:
        with open(os.path.join(directory, name), "rb") as fh:
            text = fh.read(MAX_MANIFEST_BYTES + 1)
        if len(text) > MAX_MANIFEST_BYTES:
            return None
        return _parse(text, name, None)
    except (OSError, FormatError):
        return None


def _retire(directory: str, new: Manifest, current: Manifest | None, now: int) -> list[str]:
    """Fill ``new.retired``: every file of ``directory`` that ``new`` does not need, with the time it
    stopped being needed (kept from ``current``'s record, else ``now``). Return those retired for at
    least :data:`RETIRE_GRACE_S`, which may be removed once ``new`` is published.

    Never retired: what another manifest of version 3 names (one that is neither ``current`` nor
    retired by it: a swap or compaction killed before its rename, or damage), and everything while
    such a manifest cannot be read. Manifests of versions 1 and 2 that match neither main file are
    what older vecstore's compactions left; they and their files are retired."""
    keep = manifest_files(new)
    previously = dict(current.retired) if current is not None else {}
    current_name = manifest_name(current.base_id) if current is not None else None
    entries = _entries(directory)
    protected: set[str] = set()
    for name in entries:
        if not MANIFEST_FILE.match(name) or name in keep or name == current_name or name in previously:
            continue
        other = _read_other(directory, name)
        if other is None:
            protected.update(entries)
            break
        if other.version >= 3 and (other.segments or other.deleted_file):
            protected |= manifest_files(other) | {name}
    retired, expired = {}, []
    for name in entries:
        if name in keep or name in protected:
            continue
        since = previously.get(name, now)
        if now - since >= RETIRE_GRACE_S:
            expired.append(name)
        else:
            retired[name] = since
    new.retired = retired
    return expired


def publish_change(store_path: str, manifest: Manifest, current: Manifest | None, now: int | None = None) -> list[str]:
    """Publish ``manifest`` (see :func:`publish`) with its ``retired`` list brought up to date, then
    remove the files retired for longer than :data:`RETIRE_GRACE_S`; return their names.

    ``current``: the manifest of the main file now in place (None: it has none), whose record of
    retired files carries over. ``manifest`` may extend another main file (a writer about to rename a
    new main file into place publishes its manifest first). Call under :func:`writer_lock`."""
    directory = sidecar_dir(store_path)
    os.makedirs(directory, exist_ok=True)
    fmt.clean_stale_temporaries_in(directory)  # left by killed writers
    expired = _retire(directory, manifest, current, int(time.time()) if now is None else now)
    publish(store_path, manifest)
    if manifest.segments or manifest.deleted_count:
        _mark(store_path, manifest.base_id)
    removed = []
    for name in expired:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
            removed.append(name)
    return removed


def ensure_manifest(store_path: str, base_id: str, current: Manifest | None, next_id: int) -> Manifest:
    """``current``, or (when the main file ``base_id`` has no manifest yet) a newly published empty
    one: a writer calls this before it puts a file into the segment directory, so that a directory
    holding segment or deleted-id files always holds a manifest too."""
    if current is not None:
        return current
    manifest = Manifest(base_id, next_id=next_id)
    publish_change(store_path, manifest, None)
    return manifest


def successor_hook(store_path: str, new_id: str, next_id: int):
    """What a writer replacing the main file at ``store_path`` by a file of identity ``new_id`` calls
    just before its rename: when ``STORE.segments`` exists, publish the new file's (empty) manifest,
    retiring the current one and every file it names. A crash before the rename leaves the old main
    file with its manifest (the new manifest names nothing and is retired by the next write)."""
    def before_rename() -> None:
        if not os.path.isdir(sidecar_dir(store_path)):
            return
        current = current_manifest(store_path)
        publish_change(store_path, Manifest(new_id, next_id=next_id), current)
    return before_rename


def current_manifest(store_path: str) -> Manifest | None:
    """The manifest of the main file now at ``store_path`` (None: none, or the file cannot be read)."""
    try:
        header, file_map = fmt.open_store_file(store_path)
        file_map.close()
        return read_manifest(store_path, fmt.store_identity(header))
    except (OSError, VecstoreError):
        return None


def _check_marker(store_path: str, base_id: str) -> None:
    """Refuse a main file that the marker beside it says has appended documents or deletions, when
    no manifest for it is left (the segment directory, or its manifest, was removed)."""
    if _marked(store_path) == base_id:
        directory = sidecar_dir(store_path)
        raise FormatError(f"{store_path!r}: its appended documents or deletions are missing: no manifest for this "
                          f"main file in {directory!r}, but {marker_path(store_path)!r} records that it has them; "
                          f"restore {directory!r} from a copy (to drop them on purpose, delete that file)")


def check_unmatched(store_path: str, base_id: str) -> None:
    """For a main file without a manifest: refuse (FormatError) when ``STORE.segments`` shows that
    appended documents or deletions exist that no manifest links to it, which only damage leaves
    (a writer replacing the main file publishes the new file's manifest before its rename), or when
    the marker beside the store (:func:`marker_path`) says this main file has some (the directory
    or its manifest was removed)."""
    directory = sidecar_dir(store_path)
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        names = []
    except OSError as exc:
        raise FormatError(f"{directory}: cannot be read ({exc.strerror})") from None
    manifests = sorted(n for n in names if n.startswith("manifest-") and n.endswith(".json"))
    data = [n for n in names if SEGMENT_FILE.match(n) or DELETED_FILE.match(n)]
    advice = (f"restore the main file (or the manifest) from a copy; if {store_path!r} was replaced on purpose "
              f"and the appended documents and deletions are to be dropped, move {directory!r} away")
    if not manifests:
        if data:
            raise FormatError(f"{store_path!r}: {directory!r} holds {len(data)} segment or deleted-id file(s) but "
                              f"no manifest, so they cannot be linked to the main file; {advice}")
        _check_marker(store_path, base_id)
        return
    recent = []
    for name in manifests:
        other = _read_other(directory, name)
        if other is None or other.version >= 3:
            recent.append(name)
    if recent:
        raise FormatError(f"{store_path!r}: no segment manifest matches the main file (identity {base_id}), but "
                          f"{directory!r} holds {', '.join(recent[:3])}{' ...' if len(recent) > 3 else ''}: the main "
                          f"file's identity or the manifest's name was damaged or edited; {advice}")
    _check_marker(store_path, base_id)
