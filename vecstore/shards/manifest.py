"""The shard manifest: one JSON file naming the shards of a collection and the parameters they share.

A sharded collection is a directory of ordinary vecstore files (each opens alone with
``vecstore.open``) plus ``manifest.json``. The manifest is the collection's only source of truth
about which files belong together, so it is validated completely, as plain JSON, before any shard
is opened; then every shard is checked against it when it is opened (count, id range, dim, metric
and the digest of every tier's codec parameters). docs/shards.md is the normative description.

Writing is atomic (temporary file, fsync, rename, fsync of the directory): a reader sees the old
manifest or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

from .._version import __version__
from ..codecs import Pipeline, codec_string, pipeline_from_config
from ..format import schema as fmt
from ..format.digest import codec_digest, digest_arrays
from ..plan import rescore_refusal
from ..errors import FormatError, StoreNotFoundError, UnsupportedVersionError

MANIFEST_FORMAT = "vecstore-shards"
MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 64 << 20
MAX_SHARDS = 100_000
# A shard is named by a plain file name in the manifest's directory: no separators, no "..", no
# hidden files, so a manifest can never point outside its directory.
SHARD_FILE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=-]{0,254}$")
DIGEST = re.compile(r"^[0-9a-f]{16}$")
MAX_ID = (1 << 63) - 1


@dataclass(frozen=True)
class TierEntry:
    """One tier every shard holds, encoded with the same parameters."""

    name: str
    codec: str              # the codec string, e.g. "pq64"
    config: dict            # the pipeline config (JSON), as stored in each shard
    digest: str             # vecstore.digest.codec_digest of the fitted pipeline
    calibration: dict | None = None

    @property
    def pipeline(self) -> Pipeline:
        """An unfitted pipeline of this config (layout and code size, no learned arrays)."""
        return pipeline_from_config(self.config)

    # what vecstore.plan needs of a tier
    codec_string = property(lambda self: self.codec)
    layout = property(lambda self: self.pipeline.layout)
    code_size = property(lambda self: self.pipeline.code_size)


@dataclass(frozen=True)
class ShardEntry:
    """One shard file and the contiguous id range it holds: ids ``id_start .. id_stop - 1``."""

    file: str
    count: int
    id_start: int

    @property
    def id_stop(self) -> int:
        return self.id_start + self.count


@dataclass
class ShardManifest:
    """A parsed, validated manifest. ``path`` is where it was read from (or will be written)."""

    path: str
    dim: int
    metric: str
    tiers: list[TierEntry]
    shards: list[ShardEntry]
    default_search: dict | None = None
    training: dict = field(default_factory=dict)
    written_by: str = __version__

    @property
    def directory(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    @property
    def count(self) -> int:
        return sum(s.count for s in self.shards)

    @property
    def params_digest(self) -> str:
        return params_digest(self.dim, self.metric, self.tiers)

    def tier(self, name: str) -> TierEntry | None:
        return next((t for t in self.tiers if t.name == name), None)

    def shard_path(self, shard: ShardEntry) -> str:
        return os.path.join(self.directory, shard.file)

    def to_json(self) -> str:
        return json.dumps({
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "written_by": self.written_by,
            "dim": self.dim,
            "metric": self.metric,
            "count": self.count,
            "params_digest": self.params_digest,
            "tiers": [{"name": t.name, "codec": t.codec, "config": t.config, "digest": t.digest,
                       "calibration": t.calibration} for t in self.tiers],
            "default_search": self.default_search,
            "training": self.training,
            "shards": [{"file": s.file, "count": s.count, "id_start": s.id_start, "id_stop": s.id_stop}
                       for s in self.shards],
        }, indent=1, sort_keys=True, allow_nan=False)


def params_digest(dim: int, metric: str, tiers: list[TierEntry]) -> str:
    """The collection's digest of shared parameters: xxh3_64 (hex) of the canonical JSON text
    ``{"dim": D, "metric": M, "tiers": [[name, digest], ...]}`` (tiers sorted by name, keys sorted,
    separators ``,`` and ``:``, no spaces). Two collections with equal digests can be searched and
    merged as one: same width, same metric, every tier encoded with byte-identical parameters."""
    text = json.dumps({"dim": dim, "metric": metric, "tiers": sorted([t.name, t.digest] for t in tiers)},
                      sort_keys=True, separators=(",", ":"))
    return digest_arrays({}, text)


def tier_entry(name: str, pipeline: Pipeline, calibration: dict | None = None) -> TierEntry:
    """The manifest entry of a fitted pipeline."""
    return TierEntry(name, codec_string(pipeline), pipeline.get_config(), codec_digest(pipeline), calibration)


# -- reading --------------------------------------------------------------------------------------


def resolve_manifest_path(path: str | os.PathLike) -> str:
    """A manifest file, or a directory holding ``manifest.json``."""
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        path = os.path.join(path, MANIFEST_NAME)
    return path


def read_manifest(path: str | os.PathLike) -> ShardManifest:
    """Read and validate the manifest at ``path`` (a file, or a directory holding manifest.json).

    Only the JSON is checked here (types, ranges, internal consistency, the parameter digest); the
    shards themselves are checked against it when they are opened (see :func:`check_shard`).
    """
    path = resolve_manifest_path(path)
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise StoreNotFoundError(f"shard manifest {path!r} does not exist: build one with "
                                 "`vecstore shard-build` (or give the directory that holds it)") from None
    except OSError as exc:
        raise FormatError(f"shard manifest {path!r} cannot be read ({exc.strerror})") from None
    if len(text) > MAX_MANIFEST_BYTES:
        raise FormatError(f"{path}: larger than {MAX_MANIFEST_BYTES} bytes; not a manifest vecstore wrote")
    return parse_manifest(text, path)


def _int(value, where: str, low: int = 0, high: int = MAX_ID) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FormatError(f"{where}: expected an integer in [{low}, {high}], found {value!r}; "
                          "the manifest is damaged")
    return value


def _damaged(where: str, what: str) -> FormatError:
    return FormatError(f"{where}: {what}; the manifest is damaged or was edited: rebuild it with "
                       "`vecstore shard-build`")


def _check_calibration(record, where: str) -> dict | None:
    if record is None:
        return None
    if (not isinstance(record, dict) or not isinstance(record.get("rescore"), str)
            or isinstance(record.get("oversample"), bool)
            or not isinstance(record.get("oversample"), (int, float))
            or not 1 <= record["oversample"] <= 1e6):
        raise _damaged(where, "'calibration' must be null or an object with a string 'rescore' and a "
                              "number 'oversample' in [1, 1e6]")
    return record


def parse_manifest(text: bytes | str, path: str) -> ShardManifest:
    """Validate manifest JSON ``text`` (read from ``path``) and return it parsed."""
    where = path
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise FormatError(f"{where}: not valid JSON; the shard manifest is damaged") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise FormatError(f"{where}: not a vecstore shard manifest (no \"format\": \"{MANIFEST_FORMAT}\")")
    version = doc.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > MANIFEST_VERSION:
        raise UnsupportedVersionError(f"{where}: shard manifest version {version}; this vecstore reads up to "
                                      f"{MANIFEST_VERSION}: upgrade vecstore")
    _int(version, f"{where}: version", 1, MANIFEST_VERSION)
    dim = _int(doc.get("dim"), f"{where}: dim", 1, 1 << 24)
    metric = doc.get("metric")
    if metric not in fmt.METRICS:
        raise _damaged(where, f"metric {metric!r} is not one of {', '.join(fmt.METRICS)}")
    written_by = doc.get("written_by")
    if not isinstance(written_by, str):
        raise _damaged(where, "'written_by' must be a string")

    raw_tiers = doc.get("tiers")
    if not isinstance(raw_tiers, list) or not raw_tiers:
        raise _damaged(where, "'tiers' must be a non-empty list")
    tiers: list[TierEntry] = []
    for i, t in enumerate(raw_tiers):
        tw = f"{where}: tier {i}"
        if not isinstance(t, dict) or not isinstance(t.get("name"), str) or not fmt.TIER_NAME.match(t["name"]):
            raise _damaged(tw, "must be an object with a 'name' of letters, digits and _ . , : + - =")
        if not isinstance(t.get("digest"), str) or not DIGEST.match(t["digest"]):
            raise _damaged(tw, "'digest' must be 16 lowercase hex digits")
        try:
            pipeline = pipeline_from_config(t.get("config"))
        except FormatError as exc:
            raise _damaged(tw, f"invalid codec config ({exc})") from None
        except Exception as exc:  # an allow-listed codec rejecting its values raises its own error
            raise _damaged(tw, f"invalid codec config ({exc})") from None
        if pipeline.dim != dim:
            raise _damaged(tw, f"codec input dimension {pipeline.dim} != manifest dim {dim}")
        if t.get("codec") != codec_string(pipeline):
            raise _damaged(tw, f"codec string {t.get('codec')!r} does not match its config "
                               f"({codec_string(pipeline)!r})")
        tiers.append(TierEntry(t["name"], t["codec"], t["config"], t["digest"],
                               _check_calibration(t.get("calibration"), tw)))
    names = [t.name for t in tiers]
    if len(set(names)) != len(names):
        raise _damaged(where, "a tier is listed twice")
    if fmt.RAW_TIER not in names:
        raise _damaged(where, "no 'raw' tier (every shard has one)")
    recorded = doc.get("params_digest")
    if recorded != params_digest(dim, metric, tiers):
        raise _damaged(where, f"params_digest {recorded!r} does not match the tiers it summarises "
                              f"({params_digest(dim, metric, tiers)!r})")

    raw_shards = doc.get("shards")
    if not isinstance(raw_shards, list) or not raw_shards or len(raw_shards) > MAX_SHARDS:
        raise _damaged(where, f"'shards' must be a list of 1 to {MAX_SHARDS} entries")
    shards: list[ShardEntry] = []
    for i, s in enumerate(raw_shards):
        sw = f"{where}: shard {i}"
        if not isinstance(s, dict) or not isinstance(s.get("file"), str) or not SHARD_FILE.match(s["file"]):
            raise _damaged(sw, "must be an object whose 'file' is a plain file name in the manifest's "
                               "directory (no '/', no leading '.')")
        count = _int(s.get("count"), f"{sw}: count", 1)
        start = _int(s.get("id_start"), f"{sw}: id_start")
        stop = _int(s.get("id_stop"), f"{sw}: id_stop")
        if stop - start != count:
            raise _damaged(sw, f"id range [{start}, {stop}) does not hold its count {count}")
        if shards and start != shards[-1].id_stop:
            raise _damaged(sw, f"id range starts at {start}, but the previous shard ends at "
                               f"{shards[-1].id_stop}: ranges must be contiguous and ascending")
        shards.append(ShardEntry(s["file"], count, start))
    if len({s.file for s in shards}) != len(shards):
        raise _damaged(where, "a shard file is listed twice")
    count = _int(doc.get("count"), f"{where}: count", 1)
    if count != sum(s.count for s in shards):
        raise _damaged(where, f"count {count} is not the sum of the shards' counts "
                              f"({sum(s.count for s in shards)})")

    manifest = ShardManifest(path, dim, metric, tiers, shards, None,
                             doc.get("training") if isinstance(doc.get("training"), dict) else {}, written_by)
    manifest.default_search = _check_default_search(doc.get("default_search"), manifest, where)
    return manifest


def _check_default_search(plan, manifest: ShardManifest, where: str) -> dict | None:
    if plan is None:
        return None
    dw = f"{where}: default_search"
    if not isinstance(plan, dict):
        raise _damaged(dw, "must be null or an object")
    coarse = manifest.tier(plan.get("tier")) if isinstance(plan.get("tier"), str) else None
    if coarse is None:
        raise _damaged(dw, f"names no tier of the manifest ({plan.get('tier')!r})")
    rescore, oversample = plan.get("rescore"), plan.get("oversample")
    if rescore is None:
        if oversample is not None:
            raise _damaged(dw, "'oversample' without 'rescore'")
        return {"tier": coarse.name, "rescore": None, "oversample": None}
    fine = manifest.tier(rescore) if isinstance(rescore, str) else None
    if fine is None:
        raise _damaged(dw, f"rescore names no tier of the manifest ({rescore!r})")
    why = rescore_refusal(fine, coarse)
    if why:
        raise _damaged(dw, why)
    if (isinstance(oversample, bool) or not isinstance(oversample, (int, float)) or not math.isfinite(oversample)
            or not 1 <= oversample <= 1e6):
        raise _damaged(dw, f"'oversample' must be a number in [1, 1e6], found {oversample!r}")
    return {"tier": coarse.name, "rescore": fine.name, "oversample": float(oversample)}


# -- checking a shard against its entry -------------------------------------------------------------


@dataclass(frozen=True)
class ShardSpec:
    """Everything needed to open one shard and check it, small enough to send to a Dask worker."""

    path: str                           # absolute path of the shard file
    manifest: str                       # the manifest naming it (for messages)
    index: int
    count: int
    id_start: int
    dim: int
    metric: str
    digests: tuple[tuple[str, str], ...]  # (tier name, codec digest), sorted by name

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    @property
    def where(self) -> str:
        return f"shard {self.index} ({self.name}) of {self.manifest}"


def shard_specs(manifest: ShardManifest) -> list[ShardSpec]:
    digests = tuple(sorted((t.name, t.digest) for t in manifest.tiers))
    return [ShardSpec(manifest.shard_path(s), manifest.path, i, s.count, s.id_start, manifest.dim,
                      manifest.metric, digests) for i, s in enumerate(manifest.shards)]


def check_shard(store, spec: ShardSpec) -> None:
    """Refuse an opened shard whose contents disagree with its manifest entry.

    The ids are checked at their ends only: a vecstore file's ids are unique, so ``count`` unique
    ids from ``id_start`` to ``id_start + count - 1`` are exactly that range. Reading the whole id
    array would cost 8 bytes a document at every open.
    """
    where = spec.where

    def refuse(what: str) -> FormatError:
        return FormatError(f"{where}: {what}; the shard or the manifest was changed after "
                           "`vecstore shard-build`: rebuild the collection")

    if store.dim != spec.dim or store.metric != spec.metric:
        raise refuse(f"the file holds {store.dim}-dim {store.metric} vectors, the manifest says "
                     f"{spec.dim}-dim {spec.metric}")
    if store.count != spec.count:
        raise refuse(f"the file holds {store.count} documents, the manifest says {spec.count}")
    ids = store.ids
    first, last = int(ids[0]), int(ids[-1])
    if first != spec.id_start or last != spec.id_start + spec.count - 1:
        raise refuse(f"the file holds ids {first} .. {last}, the manifest says "
                     f"{spec.id_start} .. {spec.id_start + spec.count - 1}")
    tiers = store.tiers
    expected = dict(spec.digests)
    if set(tiers) != set(expected):
        raise refuse(f"the file has tiers {sorted(tiers)}, the manifest {sorted(expected)}")
    for name, digest in expected.items():
        actual = codec_digest(tiers[name].codec)
        if actual != digest:
            raise refuse(f"tier {name!r} was encoded with other parameters (digest {actual}, the "
                         f"manifest's {digest})")


# -- writing --------------------------------------------------------------------------------------


def write_manifest(manifest: ShardManifest) -> str:
    """Write ``manifest`` to ``manifest.path`` atomically (temporary file, fsync, rename, fsync dir)."""
    text = manifest.to_json()
    parse_manifest(text, manifest.path)  # never publish what a reader would refuse
    with fmt.atomic_target(manifest.path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.write("\n")
    return manifest.path
