"""docs/format.md against files that vecstore writes.

Three kinds of checks:

(a) stores built with the public API (``vecstore.build`` / ``vecstore.compress``), one per metric, are
    read back with h5py alone: every attribute and dataset the spec names, with its HDF5 type, dtype,
    shape, storage layout, file offset and xxh3_64 checksum (recomputed from the file's bytes);
(b) a plain-numpy REFERENCE DECODER, written from the formulas in docs/format.md (it imports nothing
    from vecstore and reads the file with h5py), decodes every codec tier and must agree with
    ``store.tier(name).codec.decode``; search scores are checked against the spec's definitions;
(c) the attribute, dataset and codec tables of the spec are parsed and compared with a written file,
    both ways, so the document cannot silently drift from the code.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import xxhash

import vecstore

SPEC = Path(__file__).resolve().parents[2] / "docs" / "format.md"
METRICS = ("ip", "cosine", "l2")
N, DIM = 2000, 64
PAGE = 4096

# The codec strings built into every test store, and what the spec says each becomes:
# (stage configs, code dtype, code width, {param name: shape}).
TIERS = ("float16", "int8", "int8c0.01", "pca32,int8", "pca32", "pq16", "pq16x4")
EXPECTED = {
    "raw": ([{"id": "float32"}], "<f4", DIM, {}),
    "float16": ([{"id": "float16"}], "<f2", DIM, {}),
    "int8": ([{"id": "int8"}], "i1", DIM, {"0.scale": (DIM,), "0.offset": (DIM,)}),
    "int8c0.01": ([{"id": "int8", "clip": 0.01}], "i1", DIM, {"0.scale": (DIM,), "0.offset": (DIM,)}),
    "pca32,int8": ([{"id": "pca", "n_components": 32}, {"id": "int8"}], "i1", 32,
                   {"0.mean": (DIM,), "0.components": (32, DIM), "1.scale": (32,), "1.offset": (32,)}),
    "pca32": ([{"id": "pca", "n_components": 32}, {"id": "float32"}], "<f4", 32,
              {"0.mean": (DIM,), "0.components": (32, DIM)}),
    "pq16": ([{"id": "pq", "m": 16, "nbits": 8}], "u1", 16, {"0.codebooks": (16, 256, 4)}),
    "pq16x4": ([{"id": "pq", "m": 16, "nbits": 4}], "u1", 8, {"0.codebooks": (16, 16, 4)}),
}
# An odd number of 4-bit sub-quantizers (the last byte's high nibble is padding), on dim 30.
ODD_DIM, ODD_TIER = 30, "pq15x4"
ODD_EXPECTED = ([{"id": "pq", "m": 15, "nbits": 4}], "u1", 8, {"0.codebooks": (15, 16, 2)})

MODEL = {"name": "random-gaussian", "dim": DIM, "note": "test store"}
# Calibration (a search hint, see "Calibration and the default search") costs a few hundred searches
# per tier: only this tier is calibrated, the others are written without the attribute.
CALIBRATED = "pq16x4"
_CAN_SKIP_CALIBRATION = "calibrate" in inspect.signature(vecstore.compress).parameters


def _compress(path, codec, **options):
    if _CAN_SKIP_CALIBRATION and codec != CALIBRATED:
        options["calibrate"] = False
    return vecstore.compress(path, codec, progress=False, **options)


# ---------------------------------------------------------------------------------------------
# The reference decoder: numpy, h5py and json only, written from docs/format.md ("Codecs").
# test_reference_decoder_is_independent checks that these functions use nothing else.


def ref_read_tier(path, name):
    """(pipeline config, codes, {"<stage>.<array>": array}) of tier ``name``, read with h5py."""
    with h5py.File(path, "r") as f:
        group = f["tiers"][name]
        config = json.loads(group.attrs["codec"])
        codes = group["codes"][()]
        params = {}
        if "params" in group:
            params = {key: ds[()] for key, ds in group["params"].items()}
    return config, codes, params


def ref_unpack_nibbles(packed, m):
    """4-bit PQ codes: byte i holds sub-quantizer 2i in its low nibble and 2i+1 in its high one."""
    out = np.empty((packed.shape[0], 2 * packed.shape[1]), dtype=np.int64)
    out[:, 0::2] = packed & 0x0F
    out[:, 1::2] = packed >> 4
    return out[:, :m]  # an odd m leaves the last high nibble as padding: ignored


def ref_decode_stage(stage, index, v, params):
    """One stage's decode formula; ``v`` is the stage's codes (or the next stage's output)."""
    kind = stage["id"]
    if kind == "float32":
        return np.asarray(v, dtype=np.float32)
    if kind == "float16":
        return np.asarray(v, dtype="<f2").astype(np.float32)
    if kind == "int8":
        # x[j] = offset[j] + scale[j] * c[j], in float32: product rounded, then the sum.
        scale = params[f"{index}.scale"].astype(np.float32)
        offset = params[f"{index}.offset"].astype(np.float32)
        product = (scale * np.asarray(v, dtype=np.float32)).astype(np.float32)
        return (offset + product).astype(np.float32)
    if kind == "pca":
        # x = mean + y @ components (float64 here; the spec allows summation-order rounding).
        mean = params[f"{index}.mean"].astype(np.float64)
        components = params[f"{index}.components"].astype(np.float64)
        return mean + np.asarray(v, dtype=np.float64) @ components
    if kind == "pq":
        m, nbits = stage["m"], stage["nbits"]
        books = params[f"{index}.codebooks"]
        codes = np.asarray(v, dtype=np.int64) if nbits == 8 else ref_unpack_nibbles(np.asarray(v), m)
        dsub = books.shape[2]
        out = np.empty((codes.shape[0], m * dsub), dtype=np.float32)
        for j in range(m):
            out[:, j * dsub:(j + 1) * dsub] = books[j][codes[:, j]]
        return out
    raise ValueError(f"the spec defines no codec {kind!r}")


def ref_decode(config, codes, params):
    """The pipeline's stages decoded in reverse order, as float64 (count, dim)."""
    if config["id"] != "pipeline":
        raise ValueError("a tier's codec attribute is always a pipeline")
    v = codes
    stages = config["stages"]
    for index in range(len(stages) - 1, -1, -1):
        v = ref_decode_stage(stages[index], index, v, params)
    return np.asarray(v, dtype=np.float64)


REFERENCE_FUNCTIONS = (ref_read_tier, ref_unpack_nibbles, ref_decode_stage, ref_decode)


# ---------------------------------------------------------------------------------------------
# Stores built with the public API


def _dataset(seed: int, n: int, dim: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


KEYS = [f"doc-{i}" if i % 7 else ("" if i % 2 else f"ключ {i} ✓") for i in range(N)]
METADATA = [{"row": i, "tag": "b" if i % 2 else "a"} if i % 3 else None for i in range(N)]
IDS = np.random.default_rng(7).permutation(10 * N)[:N].astype(np.int64) - 3 * N  # some negative


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return _dataset(11, N, DIM)


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> dict[str, str]:
    """One store per metric with every tier of TIERS, plus a dim-30 l2 store with ``pq15x4``.

    Codecs are trained once (on the ip store) and their parameters reused for the other metrics,
    which keeps the module fast; decoding does not care where parameters came from.
    """
    with _one_faiss_thread():
        return _build_stores(tmp_path_factory.mktemp("format-spec"))


@contextlib.contextmanager
def _one_faiss_thread():
    """faiss k-means on a few thousand points: OpenMP threads on a busy 2-core machine make it 10-100x slower."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(threads)


def _build_stores(root) -> dict[str, str]:
    vectors = _dataset(11, N, DIM)
    learned: dict[str, dict[str, np.ndarray]] = {}
    paths = {}
    for metric in METRICS:
        path = str(root / f"{metric}.vs")
        vecstore.build(path, vectors, metric=metric, ids=IDS, keys=KEYS, metadata=METADATA,
                       model=MODEL, progress=False).close()
        for codec in TIERS:
            store = _compress(path, codec, params=learned.get(codec), seed=3)
            with store:
                learned.setdefault(codec, store.tier(codec).codec.params())
        paths[metric] = path
    odd = str(root / "odd.vs")
    vecstore.build(odd, _dataset(12, 500, ODD_DIM), metric="l2", progress=False).close()
    _compress(odd, ODD_TIER, seed=3).close()
    paths["odd"] = odd
    return paths


def _all_datasets(f: h5py.File) -> dict[str, h5py.Dataset]:
    found = {}
    f.visititems(lambda name, obj: found.__setitem__("/" + name, obj) if isinstance(obj, h5py.Dataset) else None)
    return found


def _attr_type(obj, name):
    return obj.attrs.get_id(name).get_type()


def _check_string_attr(obj, name):
    attr = obj.attrs.get_id(name)
    assert attr.shape == (), f"{obj.name}@{name} must be scalar"
    info = h5py.check_string_dtype(attr.dtype)
    assert info is not None and info.encoding == "utf-8" and info.length is None, \
        f"{obj.name}@{name} must be a variable-length UTF-8 string"


def _check_int64_attr(obj, name):
    attr = obj.attrs.get_id(name)
    assert attr.shape == ()
    t = attr.get_type()
    assert isinstance(t, h5py.h5t.TypeIntegerID)
    assert t.get_size() == 8 and t.get_order() == h5py.h5t.ORDER_LE and t.get_sign() == h5py.h5t.SGN_2


def _expected_tiers(metric_or_odd: str) -> dict:
    if metric_or_odd == "odd":
        return {"raw": ([{"id": "float32"}], "<f4", ODD_DIM, {}), ODD_TIER: ODD_EXPECTED}
    return {name: EXPECTED[name] for name in ("raw", *TIERS)}


# ---------------------------------------------------------------------------------------------
# (a) names, types, shapes, storage and checksums, read with h5py alone


def _store_checksum(f) -> str:
    """docs/format.md "Store identity": xxh3_64 of store_id and every dataset's path, dtype, shape."""
    listing = []
    f.visititems(lambda name, obj: listing.append((name, obj.dtype.str, obj.shape))
                 if isinstance(obj, h5py.Dataset) else None)
    text = f.attrs["store_id"] + "\0" + "".join(f"{p}\0{d}\0{s}\0" for p, d, s in sorted(listing))
    return xxhash.xxh3_64_hexdigest(text.encode("utf-8"))


@pytest.mark.parametrize("metric", METRICS)
def test_root_attributes(stores, metric):
    with h5py.File(stores[metric], "r") as f:
        assert set(f.attrs) == {"format", "format_version", "vecstore_version", "dim", "count",
                                "metric", "model", "store_id", "store_xxh3_64"}
        for name in ("format", "vecstore_version", "metric", "model", "store_id", "store_xxh3_64"):
            _check_string_attr(f, name)
        for name in ("format_version", "dim", "count"):
            _check_int64_attr(f, name)
        assert f.attrs["format"] == "vecstore"
        assert f.attrs["format_version"] == 1
        assert f.attrs["vecstore_version"] == vecstore.__version__
        assert (f.attrs["dim"], f.attrs["count"], f.attrs["metric"]) == (DIM, N, metric)
        assert json.loads(f.attrs["model"]) == MODEL
        assert re.fullmatch(r"[0-9a-f]{32}", f.attrs["store_id"])
        assert f.attrs["store_xxh3_64"] == _store_checksum(f)
        assert f.userblock_size == 0
    with open(stores[metric], "rb") as fh:
        assert fh.read(8) == b"\x89HDF\r\n\x1a\n"


@pytest.mark.parametrize("store_name", [*METRICS, "odd"])
def test_every_dataset_named_typed_and_shaped(stores, store_name):
    tiers = _expected_tiers(store_name)
    l2 = store_name in ("l2", "odd")
    with h5py.File(stores[store_name], "r") as f:
        count = int(f.attrs["count"])
        expected = {"/ids": ("<i8", (count,))}
        if store_name != "odd":
            for column in ("keys", "metadata"):
                expected[f"/{column}/offsets"] = ("<i8", (count + 1,))
                expected[f"/{column}/data"] = ("|u1", None)
        for name, (_, dtype, width, params) in tiers.items():
            expected[f"/tiers/{name}/codes"] = (np.dtype(dtype).str, (count, width))
            if l2:
                expected[f"/tiers/{name}/sqnorms"] = ("<f4", (count,))
            for pname, shape in params.items():
                expected[f"/tiers/{name}/params/{pname}"] = ("<f4", shape)
        found = _all_datasets(f)
        assert set(found) == set(expected)
        for path, (dtype, shape) in expected.items():
            ds = found[path]
            assert ds.dtype.str == dtype, path
            if shape is not None:
                assert ds.shape == shape, path
            else:
                assert ds.ndim == 1, path
        assert set(f["tiers"]) == set(tiers)
        for name, (stages, _, _, params) in tiers.items():
            group = f["tiers"][name]
            assert {"codec", "codec_string"} <= set(group.attrs) <= {"codec", "codec_string", "calibration"}
            if "calibration" in group.attrs:
                _check_string_attr(group, "calibration")
                assert name != "raw"
            _check_string_attr(group, "codec")
            _check_string_attr(group, "codec_string")
            assert json.loads(group.attrs["codec"]) == {"id": "pipeline", "dim": int(f.attrs["dim"]),
                                                        "stages": stages}
            assert group.attrs["codec_string"] == ("float32" if name == "raw" else name)
            assert ("params" in group) == bool(params)


@pytest.mark.parametrize("store_name", [*METRICS, "odd"])
def test_storage_offsets_and_checksums(stores, store_name):
    """Contiguous, unfiltered, early-allocated, page-aligned, non-overlapping; xxh3_64 of the file bytes."""
    path = stores[store_name]
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        raw = fh.read()
    spans = []
    with h5py.File(path, "r") as f:
        for name, ds in _all_datasets(f).items():
            plist = ds.id.get_create_plist()
            assert plist.get_layout() == h5py.h5d.CONTIGUOUS, name
            assert plist.get_nfilters() == 0, name
            assert plist.get_external_count() == 0, name
            assert plist.get_alloc_time() == h5py.h5d.ALLOC_TIME_EARLY, name
            assert plist.get_fill_time() == h5py.h5d.FILL_TIME_NEVER, name
            assert not ds.is_virtual, name
            assert ds.id.get_type().get_order() == h5py.h5t.ORDER_LE, name  # also for 1-byte types
            assert set(ds.attrs) == {"xxh3_64"}, name
            _check_string_attr(ds, "xxh3_64")
            recorded = ds.attrs["xxh3_64"]
            assert re.fullmatch(r"[0-9a-f]{16}", recorded), name
            offset = ds.id.get_offset()
            if ds.nbytes == 0:
                assert recorded == xxhash.xxh3_64(b"").hexdigest() == "2d06800538d394c2"
                continue
            assert offset is not None and offset % PAGE == 0, name
            assert offset + ds.nbytes <= size, name
            stored = raw[offset:offset + ds.nbytes]
            assert stored == np.ascontiguousarray(ds[()]).astype(ds.dtype.newbyteorder("<")).tobytes(), name
            assert recorded == xxhash.xxh3_64(stored).hexdigest(), name
            # mapping the bytes at the offset gives the dataset (the spec's recipe)
            mapped = np.frombuffer(raw, dtype=ds.dtype, count=ds.size, offset=offset).reshape(ds.shape)
            np.testing.assert_array_equal(mapped, ds[()])
            spans.append((offset, offset + ds.nbytes, name))
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        assert end <= start, f"{a} overlaps {b}"


@pytest.mark.parametrize("metric", METRICS)
def test_ids_strings_and_raw_tier(stores, metric, vectors):
    with h5py.File(stores[metric], "r") as f:
        np.testing.assert_array_equal(f["ids"][()], IDS)
        columns = {}
        for column in ("keys", "metadata"):
            offsets, data = f[column]["offsets"][()], f[column]["data"][()].tobytes()
            assert offsets[0] == 0 and offsets[-1] == len(data) and (np.diff(offsets) >= 0).all()
            columns[column] = [data[offsets[i]:offsets[i + 1]].decode("utf-8") for i in range(N)]
        assert columns["keys"] == KEYS
        for text, item in zip(columns["metadata"], METADATA):
            if item is None:
                assert text == ""
            else:
                assert json.loads(text) == item
                assert text == json.dumps(item, sort_keys=True, ensure_ascii=False)
        raw = f["tiers/raw/codes"][()]
    if metric == "cosine":
        expected = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        np.testing.assert_allclose(raw, expected, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.linalg.norm(raw, axis=1), 1.0, rtol=1e-5)
    else:
        np.testing.assert_array_equal(raw, vectors)


@pytest.mark.parametrize("store_name", ["l2", "odd"])
def test_sqnorms_are_norms_of_decoded_vectors(stores, store_name):
    path = stores[store_name]
    for name in _expected_tiers(store_name):
        decoded = ref_decode(*ref_read_tier(path, name))
        with h5py.File(path, "r") as f:
            sqnorms = f["tiers"][name]["sqnorms"][()]
        np.testing.assert_allclose(sqnorms, (decoded ** 2).sum(axis=1), rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("metric", METRICS)
def test_calibration_attribute(stores, metric):
    """Optional; when present a JSON object with the fields the spec lists, naming an existing tier."""
    ivf_only = {"nprobe", "nprobe_sweep", "flat_recall_at_10", "flat_oversample", "flat_recall_by_oversample"}  # "inverted-file tiers only"
    fields = set(_table_names("Calibration and the default search")) - ivf_only
    assert ivf_only <= set(_table_names("Calibration and the default search"))
    with h5py.File(stores[metric], "r") as f:
        records = {name: json.loads(g.attrs["calibration"]) for name, g in f["tiers"].items()
                   if "calibration" in g.attrs}
        tiers = set(f["tiers"])
    if not _CAN_SKIP_CALIBRATION:
        pytest.skip("this vecstore does not calibrate tiers")
    assert set(records) == {CALIBRATED}
    for record in records.values():
        assert set(record) == fields
        assert record["rescore"] in tiers
        assert isinstance(record["oversample"], (int, float)) and 1 <= record["oversample"] <= 1e6
        assert isinstance(record["meets_target"], bool)
        assert str(record["oversample"]) in record["recall_by_oversample"]


def test_no_sqnorms_outside_l2(stores):
    for metric in ("ip", "cosine"):
        with h5py.File(stores[metric], "r") as f:
            assert not any("sqnorms" in f["tiers"][t] for t in f["tiers"])


# ---------------------------------------------------------------------------------------------
# (b) the reference decoder against the library


def test_reference_decoder_is_independent():
    """The reference uses numpy, h5py and json only: no vecstore module, no codec class."""
    allowed = {"np", "h5py", "json", *(fn.__name__ for fn in REFERENCE_FUNCTIONS)}
    for fn in REFERENCE_FUNCTIONS:
        names = set(inspect.getclosurevars(fn).globals)
        assert names <= allowed, f"{fn.__name__} uses {names - allowed}"
        assert "vecstore" not in inspect.getsource(fn)


DECODE_CASES = [(metric, tier) for metric in METRICS for tier in ("raw", *TIERS)] + [("odd", ODD_TIER)]


@pytest.mark.parametrize("store_name,tier", DECODE_CASES, ids=[f"{m}-{t}" for m, t in DECODE_CASES])
def test_reference_decoder_matches_codec(stores, store_name, tier):
    path = stores[store_name]
    config, codes, params = ref_read_tier(path, tier)
    expected = ref_decode(config, codes, params)
    with vecstore.open(path) as store:
        t = store.tier(tier)
        decoded = t.codec.decode(np.asarray(t.codes))
    assert decoded.dtype == np.float32 and decoded.shape == expected.shape
    np.testing.assert_allclose(decoded, expected, rtol=1e-6, atol=1e-6)
    if config["stages"][-1]["id"] in ("float32", "float16", "pq") and len(config["stages"]) == 1:
        np.testing.assert_array_equal(decoded, expected.astype(np.float32))  # exact table lookups / casts


def test_int8_decode_is_exact_in_float32(stores):
    config, codes, params = ref_read_tier(stores["ip"], "int8")
    with vecstore.open(stores["ip"]) as store:
        decoded = store.tier("int8").codec.decode(np.asarray(store.tier("int8").codes))
    np.testing.assert_array_equal(decoded, ref_decode(config, codes, params).astype(np.float32))


def test_nibble_order_of_the_spec_example():
    """docs/format.md: m = 3, codes (5, 9, 2) are stored as bytes 0x95 0x02."""
    packed = np.array([[0x95, 0x02]], dtype=np.uint8)
    np.testing.assert_array_equal(ref_unpack_nibbles(packed, 3), [[5, 9, 2]])


def test_odd_m_padding_nibble_is_zero_and_ignored(stores):
    path = stores["odd"]
    config, codes, params = ref_read_tier(path, ODD_TIER)
    assert codes.shape[1] == 8 and ((codes[:, -1] >> 4) == 0).all()
    with vecstore.open(path) as store:
        codec = store.tier(ODD_TIER).codec
        dirty = codes.copy()
        dirty[:, -1] |= 0xF0
        np.testing.assert_array_equal(codec.decode(dirty), codec.decode(codes))
        # hand-made codes in the spec's layout decode to the codebook rows they name
        crafted = np.zeros((1, 8), dtype=np.uint8)
        crafted[0, :2] = (0x95, 0x02)
        books = params["0.codebooks"]
        x = codec.decode(crafted)[0]
        np.testing.assert_array_equal(x[0:2], books[0, 5])
        np.testing.assert_array_equal(x[2:4], books[1, 9])
        np.testing.assert_array_equal(x[4:6], books[2, 2])
        np.testing.assert_array_equal(x[6:8], books[3, 0])


def _reference_search(decoded, sqnorms, q, k, metric):
    """Scores and best-first rows as docs/format.md ("Search") defines them, in float64."""
    q = np.asarray(q, dtype=np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    ip = q @ decoded.T
    if metric == "l2":
        dist = np.maximum(0.0, (q * q).sum(axis=1)[:, None] - 2 * ip + sqnorms[None, :])
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(dist, order, axis=1), order
    order = np.argsort(-ip, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ip, order, axis=1), order


def _assert_same_results(D, I, D_ref, I_ref, tol):
    """Distances agree to ``tol``; ids agree except between results whose distances tie within it."""
    np.testing.assert_allclose(D, D_ref, rtol=tol, atol=tol)
    for row in range(I.shape[0]):
        for col in np.nonzero(I[row] != I_ref[row])[0]:
            ties = np.abs(D_ref[row] - D_ref[row, col]) <= 2 * tol * max(1.0, abs(D_ref[row, col]))
            assert ties.sum() > 1 or col == I.shape[1] - 1, f"row {row}, rank {col}: {I[row]} vs {I_ref[row]}"


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("tier", ["raw", "float16", "pca32,int8", "pq16x4"])
def test_search_scores_follow_the_spec(stores, metric, tier):
    path = stores[metric]
    config, codes, params = ref_read_tier(path, tier)
    decoded = ref_decode(config, codes, params)
    with h5py.File(path, "r") as f:
        ids = f["ids"][()]
        sqnorms = f["tiers"][tier]["sqnorms"][()].astype(np.float64) if metric == "l2" else None
    q = _dataset(99, 3, DIM)
    D_ref, rows = _reference_search(decoded, sqnorms, q, 10, metric)
    with vecstore.open(path) as store:
        D, I = store.search(q, 10, tier=tier)
    assert D.dtype == np.float32 and I.dtype == np.int64
    _assert_same_results(D, I, D_ref, ids[rows], tol=1e-4)


@pytest.mark.parametrize("metric", METRICS)
def test_k_above_count_pads_with_minus_one(stores, metric):
    with vecstore.open(stores[metric]) as store:
        D, I = store.search(_dataset(5, 1, DIM), N + 3, tier="pq16")
    assert I.shape == (1, N + 3)
    assert (I[0, N:] == -1).all() and (I[0, :N] >= IDS.min()).all()
    assert sorted(I[0, :N].tolist()) == sorted(IDS.tolist())
    fill = np.inf if metric == "l2" else -np.inf
    assert (D[0, N:] == fill).all() and np.isfinite(D[0, :N]).all()


# ---------------------------------------------------------------------------------------------
# "What readers must refuse", and what they must ignore: small stores edited with h5py


@pytest.fixture(scope="module")
def small_store(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("refuse") / "small.vs")
    vecstore.build(path, _dataset(4, 300, 8), metric="ip", keys=[f"k{i}" for i in range(300)],
                   progress=False).close()
    with _one_faiss_thread():
        for codec in ("int8", "pq4x4"):
            _compress(path, codec, seed=1).close()
    return path


def _replace(group, name, **kwargs):
    data = group[name][()]
    del group[name]
    return group.create_dataset(name, data=kwargs.pop("data", data), **kwargs)


def _set_json(attrs, name, edit):
    value = json.loads(attrs[name])
    edit(value)
    attrs[name] = json.dumps(value)


def _edit_param(f, tier, name, value):
    arr = f["tiers"][tier]["params"][name][()]
    arr.flat[0] = value
    f["tiers"][tier]["params"][name][...] = arr


def _virtual_ids(f):
    src = _replace(f, "ids").name
    f.move(src, "/ids_source")
    layout = h5py.VirtualLayout(shape=f["ids_source"].shape, dtype="<i8")
    layout[:] = h5py.VirtualSource(f["ids_source"])
    f.create_virtual_dataset("ids", layout)


def _twice_linked(f):
    group = f["tiers"].create_group("copy")
    for key in ("codec", "codec_string"):
        group.attrs[key] = f["tiers/raw"].attrs[key]
    group["codes"] = f["tiers/raw/codes"]  # a second hard link: two datasets claim the same bytes


REFUSED = {
    "newer format_version": lambda f, d: f.attrs.__setitem__("format_version", np.int64(3)),
    "format_version 0": lambda f, d: f.attrs.__setitem__("format_version", np.int64(0)),
    "format_version text": lambda f, d: f.attrs.__setitem__("format_version", "1"),
    "no format attribute": lambda f, d: f.attrs.__delitem__("format"),
    "unknown metric": lambda f, d: f.attrs.__setitem__("metric", "euclidean"),
    "dim 0": lambda f, d: f.attrs.__setitem__("dim", np.int64(0)),
    "missing vecstore_version": lambda f, d: f.attrs.__delitem__("vecstore_version"),
    "model not JSON": lambda f, d: f.attrs.__setitem__("model", "{not json"),
    "huge string attribute": lambda f, d: f.attrs.__setitem__("metric", "x" * ((1 << 20) + 1)),
    "soft link": lambda f, d: (f.__delitem__("ids"), f.__setitem__("ids", h5py.SoftLink("/tiers/raw/codes"))),
    "external link": lambda f, d: (f.__delitem__("ids"), f.__setitem__("ids", h5py.ExternalLink(str(d / "o.h5"), "/x"))),
    "chunked": lambda f, d: _replace(f, "ids", chunks=(100,)),
    "compressed": lambda f, d: _replace(f, "ids", compression="gzip"),
    "fletcher32": lambda f, d: _replace(f, "ids", fletcher32=True),
    "external storage": lambda f, d: _replace(f, "ids", external=[(str(d / "ids.bin"), 0, h5py.h5f.UNLIMITED)]),
    "virtual": lambda f, d: _virtual_ids(f),
    "big-endian": lambda f, d: _replace(f, "ids", data=f["ids"][()].astype(">i8")),
    "float64 codes": lambda f, d: _replace(f["tiers/raw"], "codes", data=f["tiers/raw/codes"][()].astype("<f8")),
    "int32 ids": lambda f, d: _replace(f, "ids", data=f["ids"][()].astype("<i4")),
    "string dataset": lambda f, d: _replace(f["keys"], "data", data=["a", "b"], dtype=h5py.string_dtype()),
    "wrong codes shape": lambda f, d: _replace(f["tiers/int8"], "codes", data=f["tiers/int8/codes"][:, :4]),
    "two datasets, same bytes": lambda f, d: _twice_linked(f),
    "no raw tier": lambda f, d: f["tiers"].__delitem__("raw"),
    "bad tier name": lambda f, d: f["tiers"].move("int8", "int 8"),
    "unknown codec id": lambda f, d: _set_json(f["tiers/int8"].attrs, "codec",
                                                lambda c: c["stages"][0].__setitem__("id", "int4")),
    "unknown stage field": lambda f, d: _set_json(f["tiers/int8"].attrs, "codec",
                                                   lambda c: c["stages"][0].__setitem__("bits", 8)),
    "codec not JSON": lambda f, d: f["tiers/int8"].attrs.__setitem__("codec", "int8"),
    "missing param": lambda f, d: f["tiers/int8/params"].__delitem__("0.scale"),
    "unexpected param": lambda f, d: f["tiers/int8/params"].create_dataset("0.extra", data=np.zeros(8, "<f4")),
    "param shape": lambda f, d: _replace(f["tiers/int8/params"], "0.scale", data=np.ones(7, "<f4")),
    "param not finite": lambda f, d: _edit_param(f, "int8", "0.offset", np.nan),
    "int8 scale not positive": lambda f, d: _edit_param(f, "int8", "0.scale", 0.0),
    "pq m does not divide": lambda f, d: _set_json(f["tiers/pq4x4"].attrs, "codec",
                                                    lambda c: c["stages"][0].__setitem__("m", 3)),
    "pq nbits 2": lambda f, d: _set_json(f["tiers/pq4x4"].attrs, "codec",
                                          lambda c: c["stages"][0].__setitem__("nbits", 2)),
    "calibration without oversample": lambda f, d: f["tiers/pq4x4"].attrs.__setitem__(
        "calibration", json.dumps({"rescore": "raw"})),
    "calibration oversample 0": lambda f, d: f["tiers/pq4x4"].attrs.__setitem__(
        "calibration", json.dumps({"rescore": "raw", "oversample": 0})),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_readers_refuse(small_store, tmp_path, case):
    if case.startswith("calibration") and not _CAN_SKIP_CALIBRATION:
        pytest.skip("this vecstore does not read calibration")
    path = tmp_path / "edited.vs"
    shutil.copy(small_store, path)
    with h5py.File(path, "r+") as f:
        REFUSED[case](f, tmp_path)
    expected = vecstore.UnsupportedVersionError if case == "newer format_version" else vecstore.FormatError
    with pytest.raises(expected):
        vecstore.open(path).close()


def test_readers_ignore_what_v1_does_not_define(small_store, tmp_path):
    """Unknown root attributes and objects, unknown tier/dataset attributes, extra pipeline fields."""
    path = tmp_path / "extended.vs"
    shutil.copy(small_store, path)
    with h5py.File(path, "r+") as f:
        f.attrs["future"] = "x"
        f.create_group("future_group").create_dataset("w", data=np.zeros((3, 3), "<f4"), chunks=(1, 3))
        f["elsewhere"] = h5py.SoftLink("/tiers/raw/codes")
        f["tiers/int8"].attrs["future"] = 1
        f["tiers/int8"].create_dataset("future", data=np.zeros(3, ">f8"))
        f["tiers/int8/codes"].attrs["future"] = "y"
        _set_json(f["tiers/int8"].attrs, "codec", lambda c: c.__setitem__("future", {"a": 1}))
    with vecstore.open(path) as store, vecstore.open(small_store) as original:
        assert set(store.tiers) == set(original.tiers)
        t, o = store.tier("int8"), original.tier("int8")
        np.testing.assert_array_equal(t.codec.decode(np.asarray(t.codes)), o.codec.decode(np.asarray(o.codes)))


# ---------------------------------------------------------------------------------------------
# Parameter export JSON ("Parameter export JSON")


@pytest.mark.parametrize("tier", ["int8", "pca32,int8", "pca32", "pq16x4"])
def test_params_export_format(stores, tier, tmp_path):
    from vecstore.codecs.params_json import dump_params, load_params

    path = stores["ip"]
    out = tmp_path / "params.json"
    with vecstore.open(path) as store:
        dump_params(store.tier(tier).codec, str(out))
    doc = json.loads(out.read_text(encoding="utf-8"))
    _, codes, params = ref_read_tier(path, tier)
    with h5py.File(path, "r") as f:
        group = f["tiers"][tier]
        assert doc["codec"] == json.loads(group.attrs["codec"])
        assert doc["codec_string"] == group.attrs["codec_string"]
    assert doc["format"] == "vecstore-params" and doc["format_version"] == 1
    assert set(doc["arrays"]) == set(params)
    for name, entry in doc["arrays"].items():
        assert entry["dtype"] == "float32"
        assert entry["shape"] == list(params[name].shape)
        restored = np.asarray(entry["data"], dtype=np.float64).astype(np.float32)
        assert restored.tobytes() == params[name].astype("<f4").tobytes(), name  # exact bits
    # compress --params on a copy: identical codes, no training
    copy = tmp_path / "copy.vs"
    shutil.copy(path, copy)
    exported = load_params(str(out))
    _compress(copy, exported, name="again", params=exported.params()).close()
    with h5py.File(copy, "r") as f:
        np.testing.assert_array_equal(f["tiers"]["again"]["codes"][()], codes)


# ---------------------------------------------------------------------------------------------
# (c) the spec's tables against a written file


def _section(heading: str) -> str:
    text = SPEC.read_text(encoding="utf-8")
    match = re.search(rf"^#+ {re.escape(heading)}\n(.*?)(?=^#|\Z)", text, re.M | re.S)
    assert match, f"docs/format.md has no section {heading!r}"
    return match.group(1)


def _table_names(heading: str) -> list[str]:
    """The backquoted names in the first column of the tables in a section."""
    names = []
    for line in _section(heading).splitlines():
        if line.startswith("| `"):
            names.extend(re.findall(r"`([^`]+)`", line.split("|")[1]))
    assert names, f"no table rows under {heading!r}"
    return names


def test_spec_root_attributes_exist(stores):
    names = _table_names("Root attributes")
    with h5py.File(stores["l2"], "r") as f:
        assert set(names) == set(f.attrs)


def test_spec_tier_and_dataset_attributes_exist(stores):
    tier_attrs = set(_table_names("Tier group attributes"))
    dataset_attrs = set(_table_names("Dataset attributes"))
    seen = set()
    for name in (*METRICS, "odd"):
        with h5py.File(stores[name], "r") as f:
            for tier in f["tiers"].values():
                assert set(tier.attrs) <= tier_attrs
                seen.update(tier.attrs)
            for ds in _all_datasets(f).values():
                assert set(ds.attrs) == dataset_attrs
    optional = set() if _CAN_SKIP_CALIBRATION else {"calibration"}
    assert seen | optional == tier_attrs


def test_spec_dataset_table_matches_files(stores):
    templates = _table_names("Datasets")
    patterns = {t: re.compile("^" + re.escape(t).replace(re.escape("<name>"), r"[^/]+")
                              .replace(re.escape("<stage>.<array>"), r"[0-9]+\.[a-z_]+") + "$")
                for t in templates}
    matched = set()
    for name in (*METRICS, "odd"):
        with h5py.File(stores[name], "r") as f:
            for path in _all_datasets(f):
                hits = [t for t, p in patterns.items() if p.match(path)]
                assert len(hits) == 1, f"{path} matches {hits} in the spec's dataset table"
                matched.update(hits)
    assert matched == set(templates), f"never written: {set(templates) - matched}"


def test_spec_codec_table_lists_every_registered_codec():
    from vecstore.codecs import CODECS

    assert set(_table_names("Codecs")) == set(CODECS)
    for codec_id in CODECS:
        assert re.search(rf"^### {codec_id}\b", SPEC.read_text(encoding="utf-8"), re.M), codec_id
