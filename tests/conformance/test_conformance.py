"""conformance/: regenerate every file and compare with the committed ones; read the committed stores
back; recompute the digests from docs/format.md's definitions alone (xxhash, json, h5py).

A failure here means vecstore's output changed (a format or numeric change) or the spec no longer
describes the code. If the change is intended, run `python conformance/generate.py` and commit the
result with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import os

import h5py
import numpy as np
import pytest
import xxhash

import vecstore
from conftest import ROOT

CONFORMANCE = os.path.join(ROOT, "conformance")
COMMITTED = os.path.join(CONFORMANCE, "v1")
SAME_BUILD_TOL = 1e-6     # vecstore against its own committed output (scores, encoded vectors)


def _generator():
    spec = importlib.util.spec_from_file_location("conformance_generate", os.path.join(CONFORMANCE, "generate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generator():
    return _generator()


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory, generator):
    out = str(tmp_path_factory.mktemp("conformance") / "v1")
    generator.main(out)
    return out


@pytest.fixture(scope="module")
def committed(tmp_path_factory, generator):
    """The committed files with every store decompressed."""
    return generator.unpack(COMMITTED, str(tmp_path_factory.mktemp("committed") / "v1"))


def _load(directory: str) -> dict:
    with open(os.path.join(directory, "expected.json"), encoding="utf-8") as fh:
        return json.load(fh)


def _compare(new, old, where: str, errors: list) -> None:
    """Exact equality, except float lists (scores, vectors) within SAME_BUILD_TOL and the random
    names of segment files."""
    if isinstance(old, dict) and isinstance(new, dict):
        if set(new) != set(old):
            errors.append(f"{where}: keys {sorted(set(new) ^ set(old))} differ")
        for key in set(new) & set(old):
            if key == "file" and str(old[key]).startswith("seg-"):
                continue
            _compare(new[key], old[key], f"{where}.{key}", errors)
    elif isinstance(old, list) and isinstance(new, list):
        if len(new) != len(old):
            errors.append(f"{where}: length {len(new)} != {len(old)}")
        elif old and all(isinstance(v, float) or v is None for v in old) and any(isinstance(v, float) for v in old):
            a = np.array([np.nan if v is None else v for v in new], dtype=np.float64)
            b = np.array([np.nan if v is None else v for v in old], dtype=np.float64)
            if not np.allclose(a, b, rtol=0, atol=SAME_BUILD_TOL, equal_nan=True):
                errors.append(f"{where}: max difference {np.nanmax(np.abs(a - b)):.3g} > {SAME_BUILD_TOL}")
        else:
            for i, (x, y) in enumerate(zip(new, old)):
                _compare(x, y, f"{where}[{i}]", errors)
    elif new != old:
        errors.append(f"{where}: {str(new)[:80]!r} != {str(old)[:80]!r}")


def test_regenerated_expected_results_match_committed(regenerated):
    errors: list[str] = []
    _compare(_load(regenerated), _load(COMMITTED), "expected", errors)
    assert not errors, "vecstore's conformance output changed:\n" + "\n".join(errors[:30])


def test_regenerated_exports_are_byte_identical(regenerated):
    """Parameter and encoder JSON, queries: the same text (parameters are exact, so are their digits)."""
    names = sorted(n for n in os.listdir(COMMITTED) if n.endswith(".json") and n != "expected.json")
    assert names == sorted(n for n in os.listdir(regenerated) if n.endswith(".json") and n != "expected.json")
    for name in names:
        with open(os.path.join(COMMITTED, name), "rb") as a, open(os.path.join(regenerated, name), "rb") as b:
            assert a.read() == b.read(), name


def test_committed_stores_search_as_expected(committed):
    """Opening the committed files (written by an earlier vecstore) gives the committed results."""
    expected = _load(committed)
    for case in expected["searches"]:
        with open(os.path.join(committed, case.get("query_file", "queries.json")), encoding="utf-8") as fh:
            q = np.asarray(json.load(fh)["vectors"][case["query"]], dtype=np.float32)
        with vecstore.open(os.path.join(committed, case["store"])) as store:
            result = store.search(q, case["k"], tier=case["tier"], rescore=case["rescore"],
                                  oversample=case["oversample"], where=case.get("where"), allow=case.get("allow"))
        D, I = result
        assert I[0].tolist() == case["ids"], case
        if "strategy" in case:                    # a filtered search (docs/format.md, Filtered search)
            assert result.strategy == case["strategy"], case
        want = np.array([np.nan if v is None else v for v in case["scores"]], dtype=np.float64)
        got = np.where(np.isfinite(D[0]), D[0], np.nan)
        np.testing.assert_allclose(got, want, rtol=0, atol=SAME_BUILD_TOL, equal_nan=True)
    for case in expected["lookups"]:
        with vecstore.open(os.path.join(committed, case["store"])) as store:
            assert store.keys(case["ids"]) == case["keys"]
            assert store.metadata(case["ids"]) == case["metadata"]


def test_committed_filters_admit_the_recorded_ids(committed):
    """expected.json "filters": the ids each where=/allow= admits, as vecstore evaluates them on the
    committed store (a port checks its own evaluation against these before searching)."""
    expected = _load(committed)
    assert len(expected["filters"]) >= 10
    strategies = set()
    for case in expected["filters"]:
        with vecstore.open(os.path.join(committed, case["store"])) as store:
            result = store.search(np.ones(store.dim, np.float32), store.count, tier="raw", where=case["where"],
                                  allow=case["allow"])
            assert sorted(result.ids[0][result.ids[0] >= 0].tolist()) == case["admitted"], case
            assert result.allowed == len(case["admitted"])
    for case in expected["searches"]:
        strategies.add(case.get("strategy"))
    assert strategies >= {"none", "exact", "filtered-scan", "filtered-two-stage"}


def test_committed_encoders_encode_and_search_as_expected(committed):
    from vecstore.encoders import load_encoder_json, tokenize

    expected = _load(committed)
    for store_name, entry in expected["stores"].items():
        for name, enc_entry in entry.get("encoders", {}).items():
            enc = load_encoder_json(os.path.join(committed, enc_entry["file"]))
            assert enc.config() == enc_entry["config"]
            for case in enc_entry["texts"]:
                assert tokenize(case["text"]) == case["tokens"]
                vec, unknown = enc.encode([case["text"]], on_empty="zero")
                assert unknown[0] == case["unknown"]
                assert vec[0].tobytes() == np.asarray(case["vector"], np.float32).tobytes(), case["text"]
                if "ids" in case:
                    with vecstore.open(os.path.join(committed, store_name)) as store:
                        D, I, _ = store.search_text(case["text"], case["k"], encoder=name)
                    assert I[0].tolist() == case["ids"]
                    np.testing.assert_allclose(D[0], case["scores"], rtol=0, atol=SAME_BUILD_TOL)


def test_committed_checksums_verify(committed):
    for name in ("ip.vs", "cosine.vs", "l2.vs", "segments.vs", "wordvec.vs", "elman.vs", "filters.vs"):
        checks = vecstore.verify(os.path.join(committed, name))     # raises IntegrityError on a mismatch
        assert checks and all(c.ok for c in checks), name


# -- the digests, from docs/format.md's text only --------------------------------------------------

def _identity(path: str) -> str:
    """docs/format.md, Segments: the identity of a file without store_id."""
    items = []
    with h5py.File(path, "r") as f:
        assert "store_id" not in f.attrs
        f.visititems(lambda name, obj: items.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
        text = "".join(f"{name}\0{ds.dtype.str}\0{tuple(ds.shape)}\0{ds.attrs.get('xxh3_64')}\0"
                       for name, ds in sorted(items, key=lambda item: item[0]))
    return xxhash.xxh3_128(text.encode("utf-8")).hexdigest()


def _digest(text: str, arrays: dict) -> str:
    """docs/format.md, Parameter digest."""
    data = text.encode("utf-8")
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name], dtype=arrays[name].dtype.newbyteorder("<"))
        data += f"\0{name}\0{a.dtype.str}\0{list(a.shape)}\0".encode("utf-8") + a.tobytes()
    return xxhash.xxh3_64(data).hexdigest()


def test_derived_identity_names_the_manifest(committed):
    entry = _load(committed)["stores"]["segments.vs"]
    identity = _identity(os.path.join(committed, "segments.vs"))
    assert identity == entry["identity"]
    assert os.path.exists(os.path.join(committed, "segments.vs.segments", f"manifest-{identity}.json"))
    with vecstore.open(os.path.join(committed, "segments.vs")) as store:
        assert store.count == entry["live_count"]        # the manifest was found: segments and deletions


def test_codec_digests_and_fingerprints_follow_the_spec(committed):
    expected = _load(committed)
    for store_name, entry in expected["stores"].items():
        for tier, t in entry["tiers"].items():
            with open(os.path.join(committed, t["params_file"]), encoding="utf-8") as fh:
                doc = json.load(fh)
            arrays = {n: np.asarray(e["data"], np.float64).astype(np.float32) for n, e in doc["arrays"].items()}
            with h5py.File(os.path.join(committed, store_name), "r") as f:
                attr = f["tiers"][tier].attrs["codec"]
            assert attr == json.dumps(doc["codec"], sort_keys=True)          # the hashed JSON form
            assert _digest(attr, arrays) == t["codec_digest"], (store_name, tier)
        for name, enc_entry in entry.get("encoders", {}).items():
            with open(os.path.join(committed, enc_entry["file"]), encoding="utf-8") as fh:
                doc = json.load(fh)
            text = json.dumps(doc["config"], sort_keys=True) + "\0" + "\0".join(doc["vocab"])
            arrays = {n: np.asarray(e["data"], np.float64).astype(np.float32) for n, e in doc["arrays"].items()}
            assert _digest(text, arrays) == enc_entry["fingerprint"]
            if enc_entry["stored"]:
                with vecstore.open(os.path.join(committed, store_name)) as store:
                    assert store.model["fingerprint"] == enc_entry["fingerprint"]
