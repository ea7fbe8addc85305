"""Re-deploying a store: swap a newly built store in for the current one, atomically, keeping the
current one as ``CURRENT.prev`` for rollback.

The switch itself is one ``rename`` of the main file. Everything the new store needs beside it (its
segment manifest and files) is linked into ``CURRENT.segments/`` *before* that rename, under the
new file's identity, so a reader opening ``CURRENT`` at any moment finds either the old store whole
or the new one whole. Readers holding the old store keep their mappings until they reload.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil

from ..errors import IntegrityError, InvalidInputError, StoreNotFoundError, VecstoreError
from ..format import schema as fmt
from ..format import segments as seg
from ..format.verify import verify
from .quality import self_check
from .store import Store
from .lifecycle import next_id
from .view import open_view

MIN_RECALL = 0.9


def _link_or_copy(src: str, dst: str) -> None:
    if os.path.exists(dst):
        return
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed: copy, atomically
        with fmt.atomic_target(dst) as tmp:
            shutil.copyfile(src, tmp)


@dataclasses.dataclass
class _State:
    """What a swap needs of a store's current state (its views are closed at once)."""

    base_id: str
    manifest: seg.Manifest | None
    next_id: int


def _state(path: str) -> _State:
    view = open_view(path)
    try:
        return _State(view.base_id, view.manifest, next_id(view))
    finally:
        view.close()


def _carry_manifest(src_store: str, src: _State, dst_store: str, dst: _State | None) -> None:
    """Make the state ``src`` of the main file now at ``src_store`` valid beside ``dst_store`` too:
    its segment and deleted-id files linked into ``dst_store``'s segment directory, then its manifest
    (an empty one when it has none) published there as the successor of ``dst``, the state of the
    main file now at ``dst_store`` (None: there is none), whose files it retires."""
    directory = seg.sidecar_dir(dst_store)
    manifest = src.manifest
    if manifest is None and not os.path.isdir(directory):
        return  # nothing appended to src, nothing beside dst: the main file alone is the state
    os.makedirs(directory, exist_ok=True)
    current = dst.manifest if dst is not None else None
    names = [] if manifest is None else sorted(seg.manifest_files(manifest) - {seg.manifest_name(manifest.base_id)})
    if names and dst is not None:  # files go in only beside a manifest (seg.ensure_manifest)
        current = seg.ensure_manifest(dst_store, dst.base_id, current, dst.next_id)
    for name in names:
        _link_or_copy(os.path.join(seg.sidecar_dir(src_store), name), os.path.join(directory, name))
    carried = (seg.Manifest(src.base_id, next_id=src.next_id) if manifest is None else
               dataclasses.replace(manifest, segments=list(manifest.segments), retired={}, version=seg.MANIFEST_VERSION))
    seg.publish_change(dst_store, carried, current)


def _state_or_none(path: str) -> _State | None:
    """The state of the store at ``path``; None when there is none or it cannot be opened (its
    files are then retired, except what a manifest of this version names: see seg.publish_change)."""
    if not os.path.exists(path):
        return None
    try:
        return _state(path)
    except VecstoreError:
        return None


def _exchange(previous: str, current: str) -> None:
    """Roll back: CURRENT serves what CURRENT.prev holds, and CURRENT.prev what CURRENT served.

    One atomic exchange where the system has one, so both names hold a store at every instant.
    Elsewhere CURRENT.prev's file is first linked to a temporary, CURRENT is linked over
    CURRENT.prev, then the temporary renamed over CURRENT; a crash between the last two renames
    leaves CURRENT serving the old version (equal to CURRENT.prev) and the rolled-back one only as
    the temporary, which the next write removes.
    """
    if fmt.exchange_paths(previous, current):
        return
    with fmt.atomic_target(current) as staged:
        os.link(previous, staged)
        with fmt.atomic_target(previous) as tmp:
            os.link(current, tmp)


def check_new(path: str, *, min_recall: float = MIN_RECALL, sample: int = 200) -> dict:
    """Checksums of the main file and every segment, then a held-out recall self-check of the
    default search; raise if either fails."""
    checks = verify(path)
    with Store(path) as store:
        report = self_check(store, sample=sample)
    if report["recall"] < min_recall:
        raise IntegrityError(
            f"{path!r}: recall@10 self-check {report['recall']:.3f} is below {min_recall} on "
            f"{report['queries']} held-out documents; fix the store (or pass a lower --min-recall)"
        )
    report["datasets_verified"] = len(checks)
    return report


def swap(new: str | os.PathLike, current: str | os.PathLike, *, force: bool = False, check: bool = True,
         min_recall: float = MIN_RECALL, keep_previous: bool = True) -> dict:
    """Replace the store at ``current`` by the one at ``new`` (which moves), atomically.

    Refuses a store of another dimension or metric unless ``force``. With ``check``, the new store
    must pass :func:`check_new` first. The replaced store stays as ``current + ".prev"`` (swap it
    back to roll back). Returns what was checked and done.
    """
    new, current = os.path.abspath(os.fspath(new)), os.path.abspath(os.fspath(current))
    if not os.path.isfile(new):
        raise StoreNotFoundError(f"{new!r} does not exist: build the new store there first")
    if new == current:
        raise InvalidInputError("NEW and CURRENT are the same file: nothing to swap")
    report: dict = {"new": new, "current": current}
    with Store(new) as fresh:
        if os.path.exists(current):
            with Store(current) as old:
                if (fresh.dim, fresh.metric) != (old.dim, old.metric) and not force:
                    raise InvalidInputError(
                        f"{new!r} holds {fresh.dim}-dim {fresh.metric} vectors but {current!r} holds "
                        f"{old.dim}-dim {old.metric}: every client would break; pass force=True (--force) "
                        "if that is intended"
                    )
                report["previous_model"] = old.model
        report["model"] = fresh.model
    if check:
        report["check"] = check_new(new, min_recall=min_recall)
    previous = current + ".prev"
    writes_previous = keep_previous and new != previous and os.path.exists(current)
    with seg.writer_lock(current), seg.writer_lock(new), \
            (seg.writer_lock(previous) if writes_previous else contextlib.nullcontext()):
        incoming = _state(new)
        outgoing = None
        if os.path.exists(current):
            try:
                outgoing = _state(current)
            except VecstoreError:
                if keep_previous:  # it cannot be kept for a rollback
                    raise
        _carry_manifest(new, incoming, current, outgoing)
        if keep_previous and outgoing is not None:
            behind = incoming if new == previous else _state_or_none(previous)
            # CURRENT.prev and its segments are complete before anything CURRENT serves changes
            _carry_manifest(current, outgoing, previous, behind)
            if new == previous:  # a rollback: CURRENT and CURRENT.prev trade places
                _exchange(previous, current)
            else:
                with fmt.atomic_target(previous) as tmp:
                    os.link(current, tmp)
                os.replace(new, current)  # the one step that changes what CURRENT serves
            report["previous"] = previous
        else:
            os.replace(new, current)
        fmt.fsync_directory(os.path.dirname(current))
        if new != previous:
            with contextlib.suppress(FileNotFoundError):
                shutil.rmtree(seg.sidecar_dir(new))
    if new != previous:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(seg.lock_path(new))
    return report
