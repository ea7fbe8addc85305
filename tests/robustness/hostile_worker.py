"""Fuzz worker: open and search mutated copies of one store, one case after another.

tests/test_hostile.py runs this file in a subprocess, so that a crash of libhdf5 or of a kernel on a
crafted file kills this process instead of pytest; the test then restarts it after the crashing case
and reports every crash with the command that reproduces it. Each case is derived from (seed, case
number) alone, so any case can be rerun by itself:

    python tests/hostile_worker.py BASE.vs WORKDIR --seed 0 --start 123 --count 1 --keep

(BASE.vs is built by make_base() when it does not exist; the cases depend on its exact bytes, so a
change to the writer changes which mutation a case number means.)

Mutations (the ``kind`` of a case):
  flip       1-8 bytes XORed, mostly in the HDF5 structure (object headers, heaps, B-trees), some in data
  truncate   the file cut at a random offset
  overwrite  a range of 1 B - 8 KiB replaced by random bytes, zeros or 0xFF
  splice     a block of structure copied over another place in the file
  attr       an attribute of the root, a tier or a dataset set to a lying value, or deleted (with h5py)
  struct     an object deleted, replaced by a link, by a chunked / compressed / compact / external /
             virtual / late-allocated / retyped / reshaped dataset, or a tier copied or hard-linked

For each case: write ``<i> <kind> <description>`` to the progress file, open the mutated file, and if
it opens, search every tier (1 and 40 queries), search with the default plan and with rescoring, read
keys, metadata, info, and run ``vecstore.verify``. One JSON line per case goes to the outcomes file;
the summary JSON is printed on stdout at the end.

Outcomes: ``refused`` (a VecstoreError at open, by class), ``opened`` (then each operation either
worked, or raised a VecstoreError, or raised something else: ``other``, which is a bug). A file that
opens, whose data all verify and whose header means the same as the base's must answer exactly like
the base (else ``wrong_answers``). Warnings are recorded, not raised.

Containment: a case that runs longer than --case-timeout is ended by faulthandler's watchdog thread
(works even inside a C call holding the GIL: the process prints "Timeout" and a traceback, exits 1);
the address space is capped at MEMORY_LIMIT so that a size field libhdf5 believes fails fast instead
of taking the machine's memory; files that match the known libhdf5 global-heap loop are recognised
without calling libhdf5 and counted as ``skipped_libhdf5_loop``. The environment should pin
NUMBA_NUM_THREADS=1 (the test does): per-case work is tiny, and on a busy machine parallel kernels only
add thread synchronisation (measured here: 50 probes 9.3 s with 2 threads, 0.9 s with 1).
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import json
import os
import resource
import struct
import sys
import time
import traceback
import warnings

import h5py
import numpy as np

import vecstore

KINDS = ("flip", "truncate", "overwrite", "splice", "attr", "struct")
WEIGHTS = (0.28, 0.12, 0.14, 0.06, 0.24, 0.16)
ATTR_NAMES = ("format", "format_version", "vecstore_version", "dim", "count", "metric", "model",
              "codec", "codec_string", "calibration", "xxh3_64")
CASE_TIMEOUT = 3.0  # a case takes ~20-50 ms
MEMORY_LIMIT = 3 << 30  # ~1 GiB is used; a mutated length must not make this process eat the machine


# ---------------------------------------------------------------------------------------------
# The base store and its layout


def make_base(path: str, count: int = 300, dim: int = 16) -> str:
    """The store every case mutates: l2, keys, metadata, tiers raw, int8, pq4, pca8,float16, pq8x4."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((count, dim)).astype(np.float32)
    vecstore.build(path, x, metric="l2", keys=[f"key{i}" for i in range(count)],
                   metadata=[{"i": i} for i in range(count)], overwrite=True, progress=False).close()
    for codec in ("int8", "pq4", "pca8,float16", "pq8x4"):
        vecstore.compress(path, codec, train_size=count, calibrate=codec == "pq8x4", progress=False).close()
    return path



class Layout:
    """Byte ranges of the base store: dataset data, and the HDF5 structure between them."""

    def __init__(self, path: str):
        with open(path, "rb") as fh:
            self.data = fh.read()
        self.datasets: dict[str, tuple[int, int]] = {}
        self.groups: list[str] = ["/"]
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                if isinstance(obj, h5py.Dataset):
                    off = obj.id.get_offset()
                    if off is not None:
                        self.datasets["/" + name] = (int(off), int(obj.id.get_storage_size()))
                else:
                    self.groups.append("/" + name)
            f.visititems(visit)
            self.tiers = list(f["tiers"])
        in_data = np.zeros(len(self.data), dtype=bool)
        for off, size in self.datasets.values():
            in_data[off:off + size] = True
        raw = np.frombuffer(self.data, dtype=np.uint8)
        structure = np.zeros(len(self.data), dtype=bool)
        for p in np.flatnonzero((raw != 0) & ~in_data):  # structure bytes and 32 bytes around them
            structure[max(0, p - 32):p + 33] = True
        structure &= ~in_data
        self.structure = np.flatnonzero(structure)
        self.in_data = np.flatnonzero(in_data)


def _position(rng, layout: Layout, structure_share: float = 0.75) -> int:
    pool = layout.structure if rng.random() < structure_share else layout.in_data
    return int(pool[rng.integers(len(pool))])


# ---------------------------------------------------------------------------------------------
# Byte-level mutations: return (bytes, description)


def mutate_flip(rng, layout):
    buf = bytearray(layout.data)
    where = []
    for _ in range(int(rng.integers(1, 9))):
        p = _position(rng, layout)
        mask = int(rng.integers(1, 256)) if rng.random() < 0.5 else 1 << int(rng.integers(8))
        buf[p] ^= mask
        where.append(f"{p}^{mask:#04x}")
    return bytes(buf), "xor " + ",".join(where)


def mutate_truncate(rng, layout):
    n = len(layout.data)
    cut = int(rng.integers(0, 4096)) if rng.random() < 0.2 else int(rng.integers(0, n))
    return layout.data[:cut], f"cut at {cut} of {n}"


def mutate_overwrite(rng, layout):
    buf = bytearray(layout.data)
    in_structure = rng.random() < 0.75
    p = _position(rng, layout, 1.0 if in_structure else 0.0)
    length = int(rng.integers(1, 257)) if in_structure else int(rng.integers(1, 8193))
    length = min(length, len(buf) - p)
    fill = rng.choice(["random", "zeros", "ff"])
    block = (rng.integers(0, 256, length, dtype=np.uint8).tobytes() if fill == "random"
             else (b"\0" if fill == "zeros" else b"\xff") * length)
    buf[p:p + length] = block
    return bytes(buf), f"{length} {fill} bytes at {p}"


def mutate_splice(rng, layout):
    buf = bytearray(layout.data)
    src, dst = _position(rng, layout, 1.0), _position(rng, layout, 1.0)
    length = min(int(rng.integers(8, 129)), len(buf) - src, len(buf) - dst)
    buf[dst:dst + length] = layout.data[src:src + length]
    return bytes(buf), f"{length} bytes from {src} copied to {dst}"


# ---------------------------------------------------------------------------------------------
# h5py-level mutations on a copy of the base: return a description


def _lying_json(rng, text):
    """A JSON text with one leaf changed, one key added or removed, or one character broken."""
    try:
        doc = json.loads(text)
    except (TypeError, ValueError):
        doc = None
    if doc is None or rng.random() < 0.25:
        s = str(text)
        i = int(rng.integers(0, max(1, len(s))))
        op = rng.choice(["drop", "insert", "swap"])
        if op == "drop":
            return s[:i] + s[i + 1:]
        if op == "insert":
            return s[:i] + str(rng.choice(list('{}[]",:0-9eN'))) + s[i:]
        return s[:i] + "9" + s[i + 1:]
    leaves = []

    def walk(node, path):
        if isinstance(node, dict):
            leaves.append(path)
            for k, v in node.items():
                walk(v, path + [k])
        elif isinstance(node, list):
            leaves.append(path)
            for k, v in enumerate(node):
                walk(v, path + [k])
        else:
            leaves.append(path)

    walk(doc, [])
    path = leaves[int(rng.integers(len(leaves)))]
    value = rng.choice(np.array([0, -1, 1, 2, 3, 4, 5, 7, 8, 16, 17, 255, 256, 1 << 31, 1 << 62, 10 ** 30,
                                 0.5, float("nan"), float("inf"), None, True, "", "pq", "pca", "int8",
                                 "float16", "float32", "pipeline", "raw", "pq4", [], {}, [1, 2]],
                                dtype=object))
    if not path:
        return json.dumps(value)
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    action = rng.random()
    if isinstance(parent, dict) and action < 0.15:
        parent.pop(key, None)
    elif isinstance(parent, dict) and action < 0.3:
        parent["unknown_" + str(int(rng.integers(100)))] = value
    elif isinstance(parent, list) and action < 0.3:
        parent.append(parent[key])
    else:
        parent[key] = value
    return json.dumps(doc)


def _attr_value(rng, f, old):
    choices = ["int", "json", "text", "float", "bytes", "array", "objref", "bool", "huge_text", "uint"]
    pick = rng.choice(choices, p=[0.22, 0.25, 0.12, 0.07, 0.06, 0.07, 0.05, 0.05, 0.03, 0.08])
    if pick == "int":
        base = int(old) if isinstance(old, (int, np.integer)) else 1
        return np.int64(rng.choice([base + 1, base - 1, 0, -1, -base, 2, 1 << 31, (1 << 63) - 1, base * 1000]))
    if pick == "uint":
        return np.uint64(rng.choice([0, 1, 2, 300, (1 << 64) - 1]))
    if pick == "json":
        return _lying_json(rng, old.decode() if isinstance(old, bytes) else old)
    if pick == "text":
        return str(rng.choice(["", "vecstore", "VECSTORE", "ip", "l2", "cosine", "hamming", "1", "raw",
                               "\udcff".encode("utf-8", "surrogatepass").decode("latin-1"), "null", "{}"]))
    if pick == "float":
        return float(rng.choice([1.0, 1.5, -0.0, float("nan"), float("inf"), 1e300]))
    if pick == "bytes":
        return np.bytes_(bytes(rng.integers(0, 256, int(rng.integers(0, 40)), dtype=np.uint8)))
    if pick == "array":
        arrays = [np.arange(3), np.array([300, 300]), np.zeros((2, 2), "f4"),
                  np.array(["a", "b"], dtype=h5py.string_dtype())]
        return arrays[int(rng.integers(len(arrays)))]
    if pick == "objref":
        return f["ids"].ref if "ids" in f else f.ref
    if pick == "bool":
        return np.bool_(rng.random() < 0.5)
    return "x" * ((1 << 20) + int(rng.integers(1, 100)))


def mutate_attr(rng, f, layout):
    targets = layout.groups + list(layout.datasets)
    target = targets[int(rng.integers(len(targets)))]
    obj = f[target]
    existing = list(obj.attrs)
    name = (existing[int(rng.integers(len(existing)))] if existing and rng.random() < 0.8
            else ATTR_NAMES[int(rng.integers(len(ATTR_NAMES)))])
    if name in obj.attrs and rng.random() < 0.15:
        del obj.attrs[name]
        return f"deleted attribute {name!r} of {target}"
    old = obj.attrs.get(name)
    value = _attr_value(rng, f, old)
    obj.attrs[name] = value
    shown = repr(value)
    return f"attribute {name!r} of {target} = {shown[:80]}{'...' if len(shown) > 80 else ''}"


def _replace_dataset(rng, f, path, workdir):
    old = f[path]
    data = old[()]
    attrs = dict(old.attrs)
    parent, name = path.rsplit("/", 1)
    group = f[parent or "/"]
    del group[name]
    how = rng.choice(["chunked", "gzip", "compact", "external", "virtual", "late", "retype", "reshape",
                      "scalar", "null", "vlen", "bigendian"])
    shape = data.shape
    if how == "chunked":
        new = group.create_dataset(name, data=data, chunks=True)
    elif how == "gzip":
        new = group.create_dataset(name, data=data, compression="gzip")
    elif how == "compact":
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        tid = h5py.h5t.py_create(data.dtype)
        sid = h5py.h5s.create_simple(shape) if shape else h5py.h5s.create(h5py.h5s.SCALAR)
        new = h5py.Dataset(h5py.h5d.create(group.id, name.encode(), tid, sid, dcpl=dcpl))
        if data.size:
            new[...] = data
    elif how == "external":
        raw = os.path.join(workdir, "external.bin")
        with open(raw, "wb") as fh:
            fh.write(np.ascontiguousarray(data).tobytes())
        new = group.create_dataset(name, shape=shape, dtype=data.dtype,
                                   external=[(raw, 0, max(1, data.nbytes))])
    elif how == "virtual":
        src = f.create_dataset("vds_source_" + name.replace(".", "_"), data=data)
        vlayout = h5py.VirtualLayout(shape=shape, dtype=data.dtype)
        vlayout[...] = h5py.VirtualSource(src)
        new = group.create_virtual_dataset(name, vlayout)
    elif how == "late":
        new = group.create_dataset(name, shape=shape, dtype=data.dtype)
    elif how == "retype":
        dtype = rng.choice(["<f8", "<f2", "<i4", "<i8", "u1", "i1", "<f4", "<u8"])
        new = group.create_dataset(name, data=data.astype(dtype))
    elif how == "reshape":
        flat = data.reshape(-1)
        new = group.create_dataset(name, data=flat[: max(0, flat.size - int(rng.integers(0, 3)))])
    elif how == "scalar":
        new = group.create_dataset(name, data=data.reshape(-1)[0] if data.size else 0)
    elif how == "null":
        new = group.create_dataset(name, data=h5py.Empty(data.dtype))
    elif how == "vlen":
        new = group.create_dataset(name, data=[str(v) for v in data.reshape(-1)[:10]],
                                   dtype=h5py.string_dtype())
    else:
        new = group.create_dataset(name, data=data.astype(data.dtype.newbyteorder(">")))
    for key, value in attrs.items():
        new.attrs[key] = value
    return f"{path} replaced by a {how} dataset"


def mutate_struct(rng, f, layout, workdir):
    paths = [p for p in layout.datasets] + [g for g in layout.groups if g != "/"]
    path = paths[int(rng.integers(len(paths)))]
    parent, name = path.rsplit("/", 1)
    group = f[parent or "/"]
    action = rng.choice(["delete", "replace", "replace", "replace", "softlink", "extlink", "hardlink",
                         "copy_tier", "link_tier", "rename"])
    if action == "replace" and path in layout.datasets:
        return _replace_dataset(rng, f, path, workdir)
    if action == "delete" or action == "replace":
        del group[name]
        return f"deleted {path}"
    if action in ("softlink", "extlink", "hardlink"):
        others = [p for p in paths if p != path]
        other = others[int(rng.integers(len(others)))]
        if action == "softlink":
            f.move(path, path + "_moved") if rng.random() < 0.5 else None
            target = path + "_moved" if (path + "_moved") in f else other
            if name in group:
                del group[name]
            group[name] = h5py.SoftLink(target)
            return f"{path} replaced by a soft link to {target}"
        if action == "extlink":
            foreign = os.path.join(workdir, "foreign.h5")
            if not os.path.exists(foreign):
                with h5py.File(foreign, "w") as g:
                    g["ids"] = np.arange(10, dtype="<i8")
            del group[name]
            group[name] = h5py.ExternalLink(foreign, "/ids")
            return f"{path} replaced by an external link"
        del group[name]
        group[name] = f[other]
        return f"{path} replaced by a hard link to {other}"
    tiers = f["tiers"]
    tier = layout.tiers[int(rng.integers(len(layout.tiers)))]
    if action == "copy_tier":
        new = rng.choice(["copy", "raw2", "bad name", "x" * 300])
        f.copy(tiers[tier], tiers, name=str(new))
        return f"tier {tier} copied as {new!r}"
    if action == "link_tier":
        tiers["linked"] = tiers[tier]
        return f"tier {tier} hard-linked again as 'linked'"
    new = rng.choice(["raw", "moved", "in t8", "raw "])
    if new in tiers:
        return f"rename of {tier} to {new!r} skipped (exists)"
    tiers.move(tier, str(new))
    return f"tier {tier} renamed {new!r}"


# ---------------------------------------------------------------------------------------------
# A known libhdf5 hang, recognised without calling libhdf5


def global_heap_loops(data: bytes) -> int | None:
    """Offset of a global heap collection ("GCOL") on which libhdf5 loops forever, else None.

    libhdf5 (H5HG cache deserialize, checked with 2.0.0) walks a collection's objects with
    ``p = begin + need`` where ``need`` is the object's size field for the free-space object (index
    0): a size of 0 never advances ``p``. Every variable-length string attribute of a store lives in
    such a collection, so 16 zero bytes there make ``vecstore.open`` spin forever.
    tests/test_hostile.py::test_libhdf5_global_heap_loop shows it; this worker skips such cases.
    """
    start = data.find(b"GCOL")
    while start >= 0:
        if start + 16 <= len(data):
            size = struct.unpack_from("<Q", data, start + 8)[0]
            end = start + size
            if 16 < size and end <= len(data):
                p = start + 16
                while p + 16 <= end:
                    idx, length = struct.unpack_from("<H", data, p)[0], struct.unpack_from("<Q", data, p + 8)[0]
                    need = (16 + ((length + 7) & ~7)) % (1 << 64) if idx else length
                    if need == 0:
                        return start
                    p += need
        start = data.find(b"GCOL", start + 1)
    return None


# ---------------------------------------------------------------------------------------------
# One case


def make_case(seed: int, i: int, layout: Layout, path: str, workdir: str) -> tuple[str, str]:
    rng = np.random.default_rng([seed, i])
    kind = str(rng.choice(KINDS, p=WEIGHTS))
    if kind in ("attr", "struct"):
        with open(path, "wb") as fh:
            fh.write(layout.data)
        try:
            with h5py.File(path, "r+") as f:
                desc = mutate_attr(rng, f, layout) if kind == "attr" else mutate_struct(rng, f, layout, workdir)
        except Exception as exc:  # h5py refused the edit: probe whatever it left
            desc = f"edit failed ({type(exc).__name__}: {str(exc)[:80]})"
        return kind, desc
    buf, desc = {"flip": mutate_flip, "truncate": mutate_truncate, "overwrite": mutate_overwrite,
                 "splice": mutate_splice}[kind](rng, layout)
    with open(path, "wb") as fh:
        fh.write(buf)
    return kind, desc


def _signature(store) -> str:
    """What a store's answers depend on besides its data bytes (which verify covers)."""
    info = store.info()
    return json.dumps({"metric": store.metric, "dim": store.dim, "count": store.count,
                       "keys": info["has_keys"], "metadata": info["has_metadata"],
                       "tiers": {n: [t.codec.get_config(), t.calibration] for n, t in sorted(store.tiers.items())}},
                      sort_keys=True, default=str)


def probe(path: str, queries1: np.ndarray, queries40: np.ndarray, expected: dict | None = None,
          keep_answers: bool = False) -> dict:
    """Open and exercise a file; return its outcome (never raises for a VecstoreError).

    ``expected`` is the base store's outcome: a file whose data bytes all verify and whose header
    means the same as the base's must give exactly the base's answers (else ``wrong_answers``).
    """
    out = {"opened": False, "refused": None, "message": None, "ops": {}, "other": [],
           "nonfinite": 0, "foreign_ids": 0, "verify": None, "answers": {}, "signature": None,
           "wrong_answers": []}
    try:
        store = vecstore.open(path)
    except vecstore.VecstoreError as exc:
        out["refused"], out["message"] = type(exc).__name__, str(exc)
        return out
    except Exception as exc:  # a bug: vecstore.open must only raise VecstoreError
        out["other"].append({"op": "open", "type": type(exc).__name__, "message": str(exc)[:300],
                             "where": traceback.format_exc(limit=-3)[-600:]})
        return out
    out["opened"] = True
    with store:
        known = set(np.asarray(store.ids).tolist())
        try:
            out["signature"] = _signature(store)
        except Exception as exc:
            out["other"].append({"op": "signature", "type": type(exc).__name__, "message": str(exc)[:300],
                                 "where": traceback.format_exc(limit=-3)[-600:]})

        def run(op, fn):
            try:
                result = fn()
            except vecstore.VecstoreError as exc:
                out["ops"][op] = type(exc).__name__ + ("" if str(exc) else " (EMPTY MESSAGE)")
                return
            except Exception as exc:
                out["other"].append({"op": op, "type": type(exc).__name__, "message": str(exc)[:300],
                                     "where": traceback.format_exc(limit=-3)[-600:]})
                return
            out["ops"][op] = "ok"
            out["answers"][op] = (result.ids.tolist() if isinstance(result, vecstore.SearchResult)
                                  else result if op in ("keys", "metadata") else None)
            if isinstance(result, vecstore.SearchResult):
                out["nonfinite"] += int((~np.isfinite(result.distances[result.ids >= 0])).sum())
                out["foreign_ids"] += sum(1 for v in result.ids.ravel().tolist() if v != -1 and v not in known)

        for name in list(store.tiers):
            run(f"search {name}", lambda: store.search(queries1, 5, tier=name))
            run(f"search40 {name}", lambda: store.search(queries40, 7, tier=name))
            if name != "raw":
                run(f"rescore {name}", lambda: store.search(queries1, 5, tier=name, rescore="raw", oversample=3))
        run("search default", lambda: store.search(queries1, 5))
        ids = np.asarray(store.ids[:3])
        run("keys", lambda: store.keys(ids))
        run("metadata", lambda: store.metadata(ids))
        run("info", lambda: json.dumps(store.info()))
    try:
        checks = vecstore.verify(path, raise_on_error=False)
        out["verify"] = "ok" if all(c.ok for c in checks) else "mismatch"
    except vecstore.VecstoreError as exc:
        out["verify"] = type(exc).__name__
    except Exception as exc:
        out["other"].append({"op": "verify", "type": type(exc).__name__, "message": str(exc)[:300],
                             "where": traceback.format_exc(limit=-3)[-600:]})
    out["compared"] = bool(expected and out["verify"] == "ok" and out["signature"] == expected["signature"])
    if out["compared"]:
        out["wrong_answers"] = [op for op, answer in out["answers"].items()
                                if op in expected["answers"] and answer != expected["answers"][op]]
    if not keep_answers:
        del out["answers"]
    return out


def summarise(lines: list[dict]) -> dict:
    """Aggregate per-case outcome lines (also used by the test across restarts)."""
    s = {"tried": len(lines), "probed": 0, "skipped_libhdf5_loop": [], "opened": 0,
         "refused": collections.Counter(), "ops_refused": collections.Counter(),
         "other_count": 0, "other": [], "other_types": collections.Counter(), "empty_messages": [],
         "by_kind": {}, "nonfinite_distances": 0, "foreign_ids": 0, "wrong_answers": [],
         "compared_with_base": 0, "verify": collections.Counter(),
         "warnings": collections.Counter()}
    for line in lines:
        kind = s["by_kind"].setdefault(line["kind"], {"tried": 0, "opened": 0, "refused": 0, "skipped": 0})
        kind["tried"] += 1
        if "skipped" in line:
            kind["skipped"] += 1
            s["skipped_libhdf5_loop"].append(line["case"])
            continue
        s["probed"] += 1
        if line["opened"]:
            s["opened"] += 1
            kind["opened"] += 1
            s["verify"][line["verify"]] += 1
        elif line["refused"]:
            kind["refused"] += 1
            s["refused"][line["refused"]] += 1
            if not line["message"]:
                s["empty_messages"].append(line["case"])
        for op, result in line["ops"].items():
            if result != "ok":
                s["ops_refused"][f"{op.split(' ')[0]}: {result}"] += 1
                if "EMPTY MESSAGE" in result:
                    s["empty_messages"].append(line["case"])
        for other in line["other"]:
            s["other_count"] += 1
            s["other_types"][f"{other['type']} in {other['op'].split(' ')[0]}"] += 1
            if len(s["other"]) < 20:
                s["other"].append({"case": line["case"], "kind": line["kind"], "desc": line["desc"], **other})
        s["nonfinite_distances"] += line["nonfinite"]
        if line.get("compared"):
            s["compared_with_base"] += 1
        if line.get("wrong_answers"):
            s["wrong_answers"].append({"case": line["case"], "desc": line["desc"], "ops": line["wrong_answers"]})
        s["foreign_ids"] += line["foreign_ids"]
        for w, n in line.get("warnings", {}).items():
            s["warnings"][w] += n
    return {k: (dict(v) if isinstance(v, collections.Counter) else v) for k, v in s.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("base", help="the store to mutate; created with make_base() if it does not exist")
    parser.add_argument("workdir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--progress", default=None, help="file that holds the case being probed")
    parser.add_argument("--outcomes", default=None, help="file that gets one JSON line per case")
    parser.add_argument("--keep", action="store_true", help="keep each mutated file as case-<i>.vs")
    parser.add_argument("--case-timeout", type=float, default=CASE_TIMEOUT,
                        help="seconds before a case counts as a hang: the process then exits with a traceback")
    args = parser.parse_args(argv)
    if not os.path.exists(args.base):
        make_base(args.base)
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    layout = Layout(args.base)
    qrng = np.random.default_rng(12345)
    with h5py.File(args.base, "r") as f:
        dim = int(f.attrs["dim"])
    queries1 = qrng.standard_normal((1, dim)).astype(np.float32)
    queries40 = qrng.standard_normal((40, dim)).astype(np.float32)
    # warm-up (numba's cache loads here, outside the watchdog), and the answers every file whose data
    # verifies and whose header is unchanged must give
    expected = probe(args.base, queries1, queries40, keep_answers=True)
    assert expected["opened"] and not expected["other"] and expected["verify"] == "ok", expected
    progress = open(args.progress, "w") if args.progress else None  # noqa: SIM115
    outcomes = open(args.outcomes, "a") if args.outcomes else None  # noqa: SIM115
    lines = []
    t0 = time.perf_counter()
    try:
        for i in range(args.start, args.start + args.count):
            path = os.path.join(args.workdir, f"case-{i}.vs" if args.keep else "case.vs")
            kind, desc = make_case(args.seed, i, layout, path, args.workdir)
            if progress:
                progress.seek(0)
                progress.truncate()
                progress.write(json.dumps({"case": i, "kind": kind, "desc": desc}))
                progress.flush()
            with open(path, "rb") as fh:
                loop_at = global_heap_loops(fh.read())
            if loop_at is not None:
                line = {"case": i, "kind": kind, "desc": desc, "skipped": f"libhdf5 global heap loop at {loop_at}"}
            else:
                # libhdf5 can loop forever inside one C call on a crafted file: only a watchdog
                # thread that needs no GIL (faulthandler's) ends that; it prints "Timeout", exits 1
                faulthandler.dump_traceback_later(args.case_timeout, exit=True)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    result = probe(path, queries1, queries40, expected)
                faulthandler.cancel_dump_traceback_later()
                counted = collections.Counter(f"{w.category.__name__}: {w.message}" for w in caught)
                line = {"case": i, "kind": kind, "desc": desc, **result, "warnings": dict(counted)}
            lines.append(line)
            if outcomes:
                outcomes.write(json.dumps(line) + "\n")
                outcomes.flush()
    finally:
        if progress:
            progress.close()
        if outcomes:
            outcomes.close()
    summary = summarise(lines)
    summary.update(seed=args.seed, start=args.start, seconds=round(time.perf_counter() - t0, 2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
