"""Hostile input: bad queries and vectors, damaged and crafted files, and a seeded fuzz of stores.

Every failure must be a :class:`vecstore.VecstoreError` subclass with a message, raised before any
kernel runs (queries) or before the file is mapped (structure). Files crafted with h5py are opened
in this process; randomly mutated files are opened in a subprocess (tests/hostile_worker.py), so that
a crash or a hang inside libhdf5 fails one test with a report instead of killing pytest.

Library bugs this module found are kept as ``xfail(strict=True)`` tests whose reason names the
fix; when a fix lands the test passes, strict xfail turns that into a failure, and the mark goes.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest

import hostile_worker
import vecstore
from vecstore.format import schema as fmt
from vecstore.store.tier import Tier

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "hostile_worker.py")

N, DIM = 300, 16
FUZZ_SEED = 0
FUZZ_CASES = 1100  # >= 1,000 are probed: the cases skipped as the known libhdf5 loop are few


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def base_store(tmp_path_factory):
    """An l2 store with keys, metadata and every kind of tier: raw, int8, pq4, pca8,float16, pq8x4."""
    return hostile_worker.make_base(str(tmp_path_factory.mktemp("hostile") / "base.vs"), N, DIM)


@pytest.fixture
def copy_of(base_store, tmp_path):
    def make(name="hostile.vs"):
        path = str(tmp_path / name)
        shutil.copyfile(base_store, path)
        return path
    return make


@pytest.fixture(scope="module")
def small_stores(tmp_path_factory):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    root = tmp_path_factory.mktemp("small")
    paths = {}
    for metric in ("ip", "cosine", "l2"):
        paths[metric] = str(root / f"{metric}.vs")
        vecstore.build(paths[metric], x, metric=metric, progress=False).close()
    return paths


def _read(path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _refused(exc_info, cls=vecstore.VecstoreError):
    """The raised error is a VecstoreError of ``cls`` with a non-empty, one-paragraph message."""
    assert isinstance(exc_info.value, cls), f"{type(exc_info.value).__name__}: {exc_info.value}"
    message = str(exc_info.value)
    assert message.strip(), "a VecstoreError without a message"
    return message


@pytest.fixture
def no_kernels(monkeypatch):
    """Fail if any tier scan or rescoring (and so any numba kernel) runs."""
    calls = []

    def forbidden(name):
        def run(self, *args, **kwargs):
            calls.append(name)
            raise AssertionError(f"Tier.{name} ran before validation refused the input")
        return run

    monkeypatch.setattr(Tier, "scan", forbidden("scan"))
    monkeypatch.setattr(Tier, "rescore", forbidden("rescore"))
    return calls


# ---------------------------------------------------------------------------------------------
# Hostile queries


BAD_QUERIES = [
    ("nan", lambda: np.full((2, 8), np.nan, np.float32), vecstore.InvalidInputError, "NaN or Inf"),
    ("nan in one row", lambda: np.r_[np.ones((3, 8)), [[0, 0, np.nan, 0, 0, 0, 0, 0]]], vecstore.InvalidInputError,
     "row 3 contains NaN or Inf"),
    ("inf", lambda: np.full((1, 8), np.inf), vecstore.InvalidInputError, "NaN or Inf"),
    ("-inf", lambda: np.full(8, -np.inf, np.float16), vecstore.InvalidInputError, "NaN or Inf"),
    ("wrong dim", lambda: np.ones((2, 7), np.float32), vecstore.InvalidInputError, "dimension 7.*dimension 8"),
    ("wrong dim 1-d", lambda: np.ones(9), vecstore.InvalidInputError, "dimension 9"),
    ("3-d", lambda: np.ones((1, 2, 8)), vecstore.InvalidInputError, "shape"),
    ("0-d", lambda: np.float32(1), vecstore.InvalidInputError, "shape"),
    ("empty rows", lambda: np.zeros((0, 8), np.float32), vecstore.InvalidInputError, "no queries"),
    ("empty 1-d", lambda: np.zeros(0, np.float32), vecstore.InvalidInputError, "dimension 0"),
    ("empty list", lambda: [], vecstore.InvalidInputError, ""),
    ("ragged", lambda: [[1.0] * 8, [1.0] * 7], vecstore.InvalidInputError, "cannot be read as an array"),
    ("bool", lambda: np.ones((1, 8), bool), vecstore.InvalidDtypeError, "not numeric"),
    ("complex", lambda: np.ones((1, 8), np.complex64), vecstore.InvalidDtypeError, "not numeric"),
    ("object", lambda: np.array([[1.0] * 8], dtype=object), vecstore.InvalidDtypeError, "not numeric"),
    ("strings", lambda: np.array([["1"] * 8]), vecstore.InvalidDtypeError, "not numeric"),
    ("datetime", lambda: np.zeros((1, 8), "M8[s]"), vecstore.InvalidDtypeError, "not numeric"),
    ("structured", lambda: np.zeros((1, 8), [("a", "<f4")]), vecstore.InvalidDtypeError, "not numeric"),
    ("text", lambda: "1,2,3,4,5,6,7,8", vecstore.InvalidDtypeError, "not text"),
    ("bytes", lambda: b"\x00" * 32, vecstore.InvalidDtypeError, "not text"),
    ("None", lambda: None, vecstore.InvalidDtypeError, "not numeric"),
    ("dict", lambda: {"q": [1.0] * 8}, vecstore.InvalidDtypeError, "not numeric"),
]


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
@pytest.mark.parametrize("name, make, cls, message", BAD_QUERIES, ids=[c[0] for c in BAD_QUERIES])
def test_bad_queries_are_refused_before_any_kernel(small_stores, no_kernels, metric, name, make, cls, message):
    with vecstore.open(small_stores[metric]) as store:
        with pytest.raises(vecstore.VecstoreError, match=message or None) as info:
            store.search(make(), 3)
    _refused(info, cls)
    assert no_kernels == []


@pytest.mark.parametrize("k", [0, -1, -(1 << 62), 2.5, 3.0, True, "3", None, [3], (1 << 20) + 1, 1 << 62])
def test_bad_k_is_refused_before_any_kernel(small_stores, no_kernels, k):
    with vecstore.open(small_stores["ip"]) as store:
        with pytest.raises(vecstore.InvalidInputError, match="k") as info:
            store.search(np.ones(8), k)
    _refused(info)
    assert no_kernels == []


@pytest.mark.parametrize("kwargs, cls", [
    ({"tier": "nope"}, vecstore.UnknownTierError),
    ({"rescore": "nope"}, vecstore.UnknownTierError),
    ({"tier": "raw", "rescore": "raw"}, vecstore.InvalidInputError),
    ({"oversample": 0.5}, vecstore.InvalidInputError),
    ({"oversample": float("nan")}, vecstore.InvalidInputError),
    ({"oversample": float("inf")}, vecstore.InvalidInputError),
    ({"oversample": "2"}, vecstore.InvalidInputError),
    ({"oversample": True}, vecstore.InvalidInputError),
])
def test_bad_search_options_are_refused_before_any_kernel(small_stores, no_kernels, kwargs, cls):
    with vecstore.open(small_stores["l2"]) as store:
        with pytest.raises(vecstore.VecstoreError) as info:
            store.search(np.ones(8), 3, **kwargs)
    _refused(info, cls)
    assert no_kernels == []


def test_huge_k_pads_and_is_capped(small_stores):
    with vecstore.open(small_stores["l2"]) as store:
        D, I = store.search(np.ones(8), 1 << 20)  # the largest k accepted: 200 real columns, then padding
        assert D.shape == I.shape == (1, 1 << 20)
        assert (I[0, :200] >= 0).all() and (I[0, 200:] == -1).all() and np.isinf(D[0, 200:]).all()
        assert len(set(I[0, :200].tolist())) == 200
        with pytest.raises(vecstore.InvalidInputError, match="limit"):
            store.search(np.ones(8), (1 << 20) + 1)


@pytest.mark.parametrize("metric", ["ip", "cosine", "l2"])
def test_any_layout_and_real_dtype_gives_the_same_answer(small_stores, metric):
    rng = np.random.default_rng(5)
    q = rng.standard_normal((6, 8)).astype(np.float32)
    with vecstore.open(small_stores[metric]) as store:
        D, I = store.search(q, 5)
        wide = np.zeros((6, 16), np.float64)
        wide[:, ::2] = q
        variants = {
            "strided": wide[:, ::2],
            "negative strides": np.ascontiguousarray(q[::-1])[::-1],
            "fortran": np.asfortranarray(q),
            "read-only": np.frombuffer(q.tobytes(), np.float32).reshape(6, 8),
            "list": q.tolist(),
            "float64": q.astype(np.float64),
            "longdouble": q.astype(np.longdouble),
            "memoryview": memoryview(q),
        }
        for name, v in variants.items():
            D2, I2 = store.search(v, 5)
            np.testing.assert_array_equal(I2, I, err_msg=name)
            np.testing.assert_allclose(D2, D, rtol=1e-6, err_msg=name)
        # the caller's array is never modified (cosine normalises a copy)
        before = q.copy()
        store.search(q, 5)
        np.testing.assert_array_equal(q, before)


def test_float64_query_beyond_float32_range_is_refused_without_a_warning(small_stores):
    with vecstore.open(small_stores["ip"]) as store:
        with pytest.raises(vecstore.InvalidInputError, match="row 0"):
            store.search(np.full((1, 8), 1e300), 3)


def test_cosine_query_with_huge_finite_values_gives_the_right_answer(small_stores):
    rng = np.random.default_rng(2)
    q = rng.standard_normal((1, 8)).astype(np.float32)
    with vecstore.open(small_stores["cosine"]) as store:
        expected = store.search(q, 5)
        got = store.search(q * np.float32(1e37), 5)
    np.testing.assert_array_equal(got.ids, expected.ids)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_query_that_overflows_float32_scores_is_refused(small_stores, metric):
    with vecstore.open(small_stores[metric]) as store:
        with pytest.raises(vecstore.InvalidInputError):
            store.search(np.full((1, 8), 3e38, np.float32), 3)


# ---------------------------------------------------------------------------------------------
# Hostile vectors (build and compress)


BAD_VECTORS = [
    ("nan", lambda: np.where(np.arange(40)[:, None] == 17, np.nan, np.ones((40, 4))), vecstore.InvalidInputError,
     "row 17 contains NaN or Inf"),
    ("inf", lambda: np.where(np.arange(40)[:, None] == 0, np.inf, np.ones((40, 4))), vecstore.InvalidInputError,
     "row 0 contains NaN or Inf"),
    ("empty", lambda: np.zeros((0, 4), np.float32), vecstore.InvalidInputError, "empty"),
    ("zero width", lambda: np.zeros((5, 0), np.float32), vecstore.InvalidInputError, "empty"),
    ("3-d", lambda: np.zeros((2, 3, 4), np.float32), vecstore.InvalidInputError, "2-D"),
    ("ragged", lambda: [[1.0, 2.0], [3.0]], vecstore.InvalidInputError, "cannot be read"),
    ("bool", lambda: np.ones((3, 4), bool), vecstore.InvalidDtypeError, "not numeric"),
    ("complex", lambda: np.ones((3, 4), complex), vecstore.InvalidDtypeError, "not numeric"),
    ("object", lambda: np.array([[1.0, 2.0]], dtype=object), vecstore.InvalidDtypeError, "not numeric"),
    ("strings", lambda: np.array([["a", "b"]]), vecstore.InvalidDtypeError, "not numeric"),
    ("None", lambda: None, vecstore.InvalidDtypeError, "not numeric"),
    ("missing file", lambda: "/nonexistent/vectors.npy", vecstore.StoreNotFoundError, "does not exist"),
    ("unknown file type", lambda: __file__, vecstore.InvalidInputError, "unknown input type"),
]


@pytest.mark.parametrize("name, make, cls, message", BAD_VECTORS, ids=[c[0] for c in BAD_VECTORS])
def test_bad_vectors_are_refused_and_leave_no_file(tmp_path, name, make, cls, message):
    with pytest.raises(vecstore.VecstoreError, match=message or None) as info:
        vecstore.build(tmp_path / "s.vs", make(), metric="ip", progress=False)
    _refused(info, cls)
    assert os.listdir(tmp_path) == []


def test_bad_vectors_do_not_replace_an_existing_store(tmp_path):
    good = np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32)
    vecstore.build(tmp_path / "s.vs", good, progress=False).close()
    bad = good.copy()
    bad[11, 2] = np.nan
    with pytest.raises(vecstore.InvalidInputError, match="row 11"):
        vecstore.build(tmp_path / "s.vs", bad, overwrite=True, progress=False)
    with vecstore.open(tmp_path / "s.vs") as store:
        np.testing.assert_array_equal(store.tier().codes, good)
    assert sorted(os.listdir(tmp_path)) == [".s.vs.lock", "s.vs"]  # build over a store takes its writer lock


def test_non_contiguous_and_other_dtypes_build_the_same_store(tmp_path):
    x = np.random.default_rng(1).standard_normal((30, 6)).astype(np.float32)
    wide = np.zeros((30, 12), np.float64)
    wide[:, ::2] = x
    for i, v in enumerate([wide[:, ::2], np.asfortranarray(x), x[::-1][::-1], x.tolist(), x.astype(np.float16)]):
        with vecstore.build(tmp_path / f"{i}.vs", v, progress=False) as store:
            expect = x.astype(np.float16).astype(np.float32) if i == 4 else x
            np.testing.assert_array_equal(store.tier().codes, expect)


def test_compress_with_parameters_of_another_dimension_is_refused(copy_of):
    other = np.random.default_rng(3).standard_normal((300, 8)).astype(np.float32)
    codec = vecstore.get_codec("int8", 8).fit(other)
    with pytest.raises(vecstore.InvalidInputError, match="dimension") as info:
        vecstore.compress(copy_of(), codec, progress=False)
    _refused(info)


def test_cosine_row_with_huge_finite_values_is_stored_as_a_unit_vector(tmp_path):
    x = np.ones((4, 8), np.float32)
    x[2] = 3e38
    with vecstore.build(tmp_path / "s.vs", x, metric="cosine", progress=False) as store:
        np.testing.assert_allclose(np.linalg.norm(store.tier().codes, axis=1), 1.0, rtol=1e-5)


def test_l2_row_whose_squared_norm_overflows_is_refused(tmp_path):
    x = np.ones((4, 8), np.float32)
    x[1] = 3e38
    with pytest.raises(vecstore.InvalidInputError, match="row 1"):
        vecstore.build(tmp_path / "s.vs", x, metric="l2", progress=False)


# ---------------------------------------------------------------------------------------------
# Hostile files crafted with h5py (opened in this process: h5py wrote them, so they are well-formed
# HDF5 that lies about the store)


def set_attr(path, name, value):
    return lambda f: f[path].attrs.__setitem__(name, value)


def del_attr(path, name):
    return lambda f: f[path].attrs.__delitem__(name)


def delete(path):
    return lambda f: f.__delitem__(path)


def replace_dataset(path, make):
    """Replace a dataset by ``make(group, name, data)``, keeping its attributes."""
    def edit(f):
        old = f[path]
        data, attrs = old[()], dict(old.attrs)
        parent, name = path.rsplit("/", 1)
        group = f[parent or "/"]
        del group[name]
        new = make(group, name, data)
        if isinstance(new, h5py.Dataset):
            for key, value in attrs.items():
                new.attrs[key] = value
    return edit


def with_data(path, data):
    return replace_dataset(path, lambda g, n, d: g.create_dataset(n, data=data))


def as_dtype(path, dtype):
    return replace_dataset(path, lambda g, n, d: g.create_dataset(n, data=d.astype(dtype)))


def _compact(g, n, d):
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    ds = h5py.Dataset(h5py.h5d.create(g.id, n.encode(), h5py.h5t.py_create(d.dtype), h5py.h5s.create_simple(d.shape),
                                      dcpl=dcpl))
    ds[...] = d
    return ds


def _virtual(g, n, d):
    src = g.file.create_dataset("vds_source", data=d)
    layout = h5py.VirtualLayout(shape=d.shape, dtype=d.dtype)
    layout[...] = h5py.VirtualSource(src)
    return g.create_virtual_dataset(n, layout)


def _virtual_external(g, n, d):
    other = os.path.join(os.path.dirname(g.file.filename), "other.h5")
    with h5py.File(other, "w") as o:
        o["x"] = d
    layout = h5py.VirtualLayout(shape=d.shape, dtype=d.dtype)
    layout[...] = h5py.VirtualSource(other, "x", shape=d.shape)
    return g.create_virtual_dataset(n, layout)


def _external_storage(g, n, d):
    raw = os.path.join(os.path.dirname(g.file.filename), "outside.bin")
    with open(raw, "wb") as fh:
        fh.write(d.tobytes())
    return g.create_dataset(n, shape=d.shape, dtype=d.dtype, external=[(raw, 0, d.nbytes)])


def _external_link(g, n, d):
    other = os.path.join(os.path.dirname(g.file.filename), "other.h5")
    with h5py.File(other, "w") as o:
        o["x"] = d
    g[n] = h5py.ExternalLink(other, "/x")


def _soft_link(g, n, d):
    g.file.create_dataset("elsewhere", data=d)
    g[n] = h5py.SoftLink("/elsewhere")


def _pipeline(*stages, dim=DIM):
    return json.dumps({"dim": dim, "id": "pipeline", "stages": list(stages)})


def _custom_half(f):
    """A 2-byte float that is not IEEE half: h5py maps it to float16, the store must refuse it."""
    old = f["/tiers/pca8,float16/codes"]
    data, attrs = old[()], dict(old.attrs)
    del f["/tiers/pca8,float16/codes"]
    tid = h5py.h5t.IEEE_F16LE.copy()
    tid.set_fields(15, 10, 5, 0, 10)
    tid.set_ebias(16)
    space = h5py.h5s.create_simple(data.shape)
    dcpl = fmt.dataset_creation_plist()
    ds = h5py.Dataset(h5py.h5d.create(f["/tiers/pca8,float16"].id, b"codes", tid, space, dcpl=dcpl))
    ds.id.write(h5py.h5s.ALL, h5py.h5s.ALL, np.ascontiguousarray(data))
    for key, value in attrs.items():
        ds.attrs[key] = value


def _plugin_filter(g, n, d):
    """A dataset whose pipeline names filter 32999, which only a plugin from HDF5_PLUGIN_PATH could provide."""
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_chunk(d.shape)
    dcpl.set_filter(32999, h5py.h5z.FLAG_OPTIONAL, (1, 2))
    return h5py.Dataset(h5py.h5d.create(g.id, n.encode(), h5py.h5t.py_create(d.dtype),
                                        h5py.h5s.create_simple(d.shape), dcpl=dcpl))


F, UV = vecstore.FormatError, vecstore.UnsupportedVersionError
# (id, edit, expected class, message regex, refused before the file is mapped?)
FILE_CASES = [
    # version and root attributes
    ("newer format version", set_attr("/", "format_version", np.int64(3)), UV, "version 3.*upgrade vecstore", True),
    ("much newer version", set_attr("/", "format_version", np.int64(2**62)), UV, "upgrade vecstore", True),
    ("version 0", set_attr("/", "format_version", np.int64(0)), F, "version 0", True),
    ("version as text", set_attr("/", "format_version", "1"), F, "must be an integer", True),
    ("version as float", set_attr("/", "format_version", 1.0), F, "must be an integer", True),
    ("version as bool", set_attr("/", "format_version", True), F, "must be an integer", True),
    ("version missing", del_attr("/", "format_version"), F, "missing", True),
    ("foreign: no format", del_attr("/", "format"), F, "not a vecstore", True),
    ("foreign: other format", set_attr("/", "format", "zarr"), F, "not a vecstore", True),
    ("count + 1", set_attr("/", "count", np.int64(N + 1)), F, "/ids", False),
    ("count - 1", set_attr("/", "count", np.int64(N - 1)), F, "/ids", False),
    ("count 0", set_attr("/", "count", np.int64(0)), F, "/ids", False),
    ("count negative", set_attr("/", "count", np.int64(-1)), F, "count -1", True),
    ("count huge", set_attr("/", "count", np.int64(2**62)), F, "/ids", False),
    ("count as float", set_attr("/", "count", float(N)), F, "must be an integer", True),
    ("count as array", set_attr("/", "count", np.array([N, N])), F, "must be an integer", True),
    ("count as object ref", lambda f: f.attrs.__setitem__("count", f["ids"].ref), F, "must be an integer", True),
    ("dim - 1", set_attr("/", "dim", np.int64(DIM - 1)), F, "dimension", False),
    ("dim 0", set_attr("/", "dim", np.int64(0)), F, "dim 0", True),
    ("dim huge", set_attr("/", "dim", np.int64(2**40)), F, "dimension", False),
    ("metric unknown", set_attr("/", "metric", "hamming"), F, "hamming", True),
    ("metric object ref", lambda f: f.attrs.__setitem__("metric", f["ids"].ref), F, "metric", True),
    ("model not JSON", set_attr("/", "model", "{oops"), F, "not valid JSON", True),
    ("model nested 100k deep", set_attr("/", "model", "[" * 100_000 + "]" * 100_000), F, "", True),
    ("model over 1 MiB", set_attr("/", "model", '"' + "a" * (1 << 20) + '"'), F, "longer than", True),
    ("model array of strings", set_attr("/", "model", np.array(["a", "b"], dtype=h5py.string_dtype())), F,
     "objects", True),
    # tier configs that lie
    ("raw codec float16", set_attr("/tiers/raw", "codec", _pipeline({"id": "float16"})), F, "raw tier", True),
    ("raw codec unknown id", set_attr("/tiers/raw", "codec", _pipeline({"id": "pickle"})), F, "", True),
    ("raw codec wrong dim", set_attr("/tiers/raw", "codec", _pipeline({"id": "float32"}, dim=8)), F, "dimension",
     False),
    ("codec not JSON", set_attr("/tiers/int8", "codec", "{"), F, "not valid JSON", True),
    ("codec JSON list", set_attr("/tiers/int8", "codec", "[1, 2]"), F, "pipeline", False),
    ("codec JSON 50k deep", set_attr("/tiers/int8", "codec", "[" * 50_000 + "]" * 50_000), F, "", True),
    ("codec integer", set_attr("/tiers/int8", "codec", np.int64(3)), F, "JSON text", True),
    ("codec missing", del_attr("/tiers/int8", "codec"), F, "missing", True),
    ("codec unknown id", set_attr("/tiers/int8", "codec", _pipeline({"id": "pickle"})), F, "unknown codec", False),
    ("codec unknown field", set_attr("/tiers/int8", "codec", _pipeline({"id": "int8", "exec": "rm"})), F,
     "bad config", False),
    ("codec dim float", set_attr("/tiers/int8", "codec", json.dumps({"dim": 16.0, "id": "pipeline",
                                                                     "stages": [{"id": "int8"}]})), F, "dim", False),
    ("codec no stages", set_attr("/tiers/int8", "codec", _pipeline()), F, "stages", False),
    ("codec without code stage", set_attr("/tiers/pca8,float16", "codec", _pipeline(
        {"id": "pca", "n_components": 8})), F, "", False),
    ("codec nested pipeline", set_attr("/tiers/int8", "codec", _pipeline(
        {"id": "pipeline", "dim": 16, "stages": [{"id": "int8"}]})), F, "unknown codec", False),
    ("pq m does not divide dim", set_attr("/tiers/pq4", "codec", _pipeline({"id": "pq", "m": 5, "nbits": 8})), F,
     "divide", False),
    ("pq nbits 16", set_attr("/tiers/pq4", "codec", _pipeline({"id": "pq", "m": 4, "nbits": 16})), F, "nbits", False),
    ("pq 8 bit claims 4 bit", set_attr("/tiers/pq4", "codec", _pipeline({"id": "pq", "m": 4, "nbits": 4})), F,
     "shape", False),
    ("pca n > dim", set_attr("/tiers/pca8,float16", "codec", _pipeline(
        {"id": "pca", "n_components": 99}, {"id": "float16"})), F, "n_components", False),
    ("pca n lies", set_attr("/tiers/pca8,float16", "codec", _pipeline(
        {"id": "pca", "n_components": 4}, {"id": "float16"})), F, "shape", False),
    ("int8 clip NaN", set_attr("/tiers/int8", "codec", '{"dim": 16, "id": "pipeline", "stages": '
                                                         '[{"id": "int8", "clip": NaN}]}'), F, "clip", False),
    ("int8 config on pca tier", set_attr("/tiers/pca8,float16", "codec", _pipeline({"id": "int8"})), F, "", False),
    ("calibration oversample 0", set_attr("/tiers/pq8x4", "calibration", '{"rescore": "raw", "oversample": 0}'), F,
     "calibration", False),
    ("calibration not an object", set_attr("/tiers/pq8x4", "calibration", "[]"), F, "calibration", False),
    ("calibration oversample text", set_attr("/tiers/pq8x4", "calibration",
                                             '{"rescore": "raw", "oversample": "4"}'), F, "calibration", False),
    # learned arrays that lie
    ("int8 scale shape", with_data("/tiers/int8/params/0.scale", np.ones(8, "<f4")), F, "shape", False),
    ("int8 scale float64", as_dtype("/tiers/int8/params/0.scale", "<f8"), F, "dtype", True),
    ("int8 scale big-endian", as_dtype("/tiers/int8/params/0.scale", ">f4"), F, "dtype", True),
    ("int8 scale zero", with_data("/tiers/int8/params/0.scale", np.zeros(DIM, "<f4")), F, "positive", False),
    ("int8 scale negative", with_data("/tiers/int8/params/0.scale", np.full(DIM, -1, "<f4")), F, "positive", False),
    ("int8 scale NaN", with_data("/tiers/int8/params/0.scale", np.full(DIM, np.nan, "<f4")), F, "NaN or Inf", False),
    ("pq codebooks inf", with_data("/tiers/pq4/params/0.codebooks", np.full((4, 256, 4), np.inf, "<f4")), F,
     "NaN or Inf", False),
    ("pca components 2-d -> 1-d", with_data("/tiers/pca8,float16/params/0.components", np.ones(128, "<f4")), F,
     "shape", False),
    ("params missing", delete("/tiers/int8/params/0.offset"), F, "missing", False),
    ("params unexpected", lambda f: f["/tiers/int8/params"].create_dataset("0.evil", data=np.ones(2, "<f4")), F,
     "unexpected", False),
    ("params group inside", lambda f: f["/tiers/int8/params"].create_group("0.sub"), F, "expected a dataset", True),
    ("params name 300 chars", lambda f: f["/tiers/int8/params"].create_dataset("p" * 300, data=np.ones(2, "<f4")),
     F, "too long", True),
    # codes, norms, ids
    ("codes narrower", with_data("/tiers/raw/codes", np.ones((N, 8), "<f4")), F, "implies", False),
    ("codes one row short", with_data("/tiers/raw/codes", np.ones((N - 1, DIM), "<f4")), F, "implies", False),
    ("codes flat", with_data("/tiers/raw/codes", np.ones(N * DIM, "<f4")), F, "implies", False),
    ("codes float64", as_dtype("/tiers/raw/codes", "<f8"), F, "dtype", True),
    ("codes int8 on raw", as_dtype("/tiers/raw/codes", "i1"), F, "implies", False),
    ("pq codes int8", as_dtype("/tiers/pq4/codes", "i1"), F, "implies", False),
    ("sqnorms missing (l2)", delete("/tiers/raw/sqnorms"), F, "sqnorms", False),
    ("sqnorms short", with_data("/tiers/raw/sqnorms", np.ones(10, "<f4")), F, "sqnorms", False),
    ("ids int32", as_dtype("/ids", "<i4"), F, "/ids", False),
    ("ids uint64", as_dtype("/ids", "<u8"), F, "dtype", True),
    ("ids scalar", with_data("/ids", np.int64(3)), F, "/ids", False),
    ("ids empty dataspace", replace_dataset("/ids", lambda g, n, d: g.create_dataset(n, data=h5py.Empty("<i8"))), F,
     "", True),
    ("ids not allocated", replace_dataset("/ids", lambda g, n, d: g.create_dataset(n, shape=d.shape, dtype=d.dtype)),
     F, "not allocated", True),
    # layouts and storage that a map cannot use, or that reach outside the file
    ("ids chunked", replace_dataset("/ids", lambda g, n, d: g.create_dataset(n, data=d, chunks=(100,))), F,
     "contiguous", True),
    ("codes gzip", replace_dataset("/tiers/raw/codes", lambda g, n, d: g.create_dataset(n, data=d, compression="gzip")),
     F, "contiguous", True),
    ("codes shuffle+fletcher32", replace_dataset("/tiers/raw/codes", lambda g, n, d: g.create_dataset(
        n, data=d, shuffle=True, fletcher32=True)), F, "contiguous", True),
    ("ids compact", replace_dataset("/ids", _compact), F, "contiguous", True),
    ("ids with a plugin filter", replace_dataset("/ids", _plugin_filter), F, "contiguous", True),
    ("ids virtual", replace_dataset("/ids", _virtual), F, "virtual", True),
    ("codes virtual, other file", replace_dataset("/tiers/raw/codes", _virtual_external), F, "virtual", True),
    ("ids external storage", replace_dataset("/ids", _external_storage), F, "external storage", True),
    ("ids external link", replace_dataset("/ids", _external_link), F, "ExternalLink", True),
    ("codes soft link", replace_dataset("/tiers/raw/codes", _soft_link), F, "SoftLink", True),
    ("dangling soft link", replace_dataset("/tiers/raw/codes", lambda g, n, d: g.__setitem__(n, h5py.SoftLink("/no"))),
     F, "SoftLink", True),
    ("tiers soft link", lambda f: (f.move("tiers", "t2"), f.__setitem__("tiers", h5py.SoftLink("/t2"))), F,
     "SoftLink", True),
    ("tier external link", lambda f: f["tiers"].__setitem__("x", h5py.ExternalLink("/etc/passwd", "/")), F,
     "ExternalLink", True),
    ("keys external link", lambda f: (f.__delitem__("keys"), f.__setitem__("keys", h5py.ExternalLink("o.h5", "/"))), F,
     "ExternalLink", True),
    # object, variable-length and other types
    ("ids vlen strings", replace_dataset("/ids", lambda g, n, d: g.create_dataset(
        n, data=[str(v) for v in d], dtype=h5py.string_dtype())), F, "not allowed", True),
    ("ids vlen ints", replace_dataset("/ids", lambda g, n, d: g.create_dataset(n, shape=d.shape,
                                                                              dtype=h5py.vlen_dtype("<i8"))), F,
     "not allowed", True),
    ("ids object references", replace_dataset("/ids", lambda g, n, d: g.create_dataset(n, shape=d.shape,
                                                                                       dtype=h5py.ref_dtype)), F,
     "not allowed", True),
    ("ids region references", replace_dataset("/ids", lambda g, n, d: g.create_dataset(
        n, shape=d.shape, dtype=h5py.regionref_dtype)), F, "not allowed", True),
    ("ids compound", replace_dataset("/ids", lambda g, n, d: g.create_dataset(n, shape=d.shape, dtype=[("a", "<i8")])),
     F, "not allowed", True),
    ("ids enum", replace_dataset("/ids", lambda g, n, d: g.create_dataset(
        n, data=d, dtype=h5py.enum_dtype({"a": 0}, basetype="<i8"))), F, "dtype", True),
    ("ids array type", replace_dataset("/ids", lambda g, n, d: g.create_dataset(n, shape=d.shape,
                                                                               dtype=np.dtype(("<i8", (1,))))), F,
     "not allowed", True),
    ("ids opaque", replace_dataset("/ids", lambda g, n, d: g.create_dataset(n, shape=d.shape, dtype="V8")), F,
     "not allowed", True),
    ("ids fixed strings", replace_dataset("/ids", lambda g, n, d: g.create_dataset(n, shape=d.shape, dtype="S8")), F,
     "not allowed", True),
    ("ids bool", replace_dataset("/ids", lambda g, n, d: g.create_dataset(n, shape=d.shape, dtype="?")), F, "dtype",
     True),
    ("codes 2-byte float, not IEEE half", _custom_half, F, "dtype", True),
    ("checksum object ref", lambda f: f["ids"].attrs.__setitem__("xxh3_64", f["ids"].ref), F, "must be text", True),
    # structure
    ("raw tier missing", delete("/tiers/raw"), F, "raw tier", True),
    ("tiers missing", delete("/tiers"), F, "/tiers", True),
    ("tiers a dataset", lambda f: (f.__delitem__("tiers"), f.create_dataset("tiers", data=[1])), F, "/tiers", True),
    ("tier a dataset", lambda f: f["tiers"].create_dataset("x", data=[1]), F, "expected a group", True),
    ("tier name with space", lambda f: f["tiers"].move("int8", "in t8"), F, "tier name", True),
    ("tier name 300 chars", lambda f: f["tiers"].move("int8", "t" * 300), F, "tier name", True),
    ("ids missing", delete("/ids"), F, "missing", True),
    ("ids a group", lambda f: (f.__delitem__("ids"), f.create_group("ids")), F, "expected a dataset", True),
    ("keys a dataset", lambda f: (f.__delitem__("keys"), f.create_dataset("keys", data=[1])), F, "expected a group",
     True),
    ("keys without data", delete("/keys/data"), F, "missing", True),
    ("keys data int64", as_dtype("/keys/data", "<i8"), F, "u1", False),
    ("keys offsets int32", as_dtype("/keys/offsets", "<i4"), F, "<i8", False),
    ("keys offsets short", with_data("/keys/offsets", np.arange(10, dtype="<i8")), F, "offsets", False),
    ("one dataset linked twice", lambda f: (f["tiers/pq8x4"].__delitem__("codes"),
                                            f["tiers/pq8x4"].__setitem__("codes", f["tiers/pq4/codes"])), F,
     "overlap", True),
    ("tier linked twice", lambda f: f["tiers"].__setitem__("again", f["tiers/int8"]), F, "overlap", True),
]


@pytest.mark.parametrize("name, edit, cls, message, before_map", FILE_CASES, ids=[c[0] for c in FILE_CASES])
def test_crafted_file_is_refused(copy_of, monkeypatch, no_kernels, name, edit, cls, message, before_map):
    path = copy_of()
    with h5py.File(path, "r+") as f:
        edit(f)
    maps = []
    real_map = fmt.FileMap

    class RecordingMap(real_map):
        def __init__(self, *args, **kwargs):
            maps.append(args)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(fmt, "FileMap", RecordingMap)
    with pytest.raises(vecstore.VecstoreError, match=message or None) as info:
        with vecstore.open(path) as store:  # lazy checks (string columns) run on first use
            store.keys(store.ids[:2])
    _refused(info, cls)
    if before_map:
        assert maps == [], "the file was mapped before its structure was refused"
    assert no_kernels == []


STRING_LIES = [
    ("offsets past the data", lambda o, d: (o * 100, d)),
    ("offsets negative", lambda o, d: (-o, d)),
    ("offsets decreasing", lambda o, d: (np.r_[0, o[1:-1][::-1], o[-1]], d)),
    ("first offset not 0", lambda o, d: (o + 1, d)),
    ("last offset short", lambda o, d: (np.r_[o[:-1], o[-1] - 1], d)),
    ("offsets all at the end", lambda o, d: (np.r_[0, np.full(o.size - 2, d.size + 5), d.size], d)),
    ("invalid UTF-8", lambda o, d: (o, np.full_like(d, 0xFF))),
]


@pytest.mark.parametrize("column", ["keys", "metadata"])
@pytest.mark.parametrize("name, lie", STRING_LIES, ids=[c[0] for c in STRING_LIES])
def test_string_blob_whose_offsets_lie_is_refused(copy_of, column, name, lie):
    path = copy_of()
    with h5py.File(path, "r+") as f:
        offsets, data = lie(f[f"{column}/offsets"][()], f[f"{column}/data"][()])
        with_data(f"/{column}/offsets", offsets.astype("<i8"))(f)
        with_data(f"/{column}/data", data.astype("u1"))(f)
    with vecstore.open(path) as store:
        with pytest.raises(vecstore.FormatError, match=f"/{column}") as info:
            getattr(store, column)(store.ids[:5])
        _refused(info)
        store.search(np.ones(DIM), 3)  # the damaged column does not affect search


@pytest.mark.parametrize("text", [b"x", b"[1]"])
def test_metadata_entry_that_is_not_a_json_object_is_refused(copy_of, text):
    path = copy_of()
    with h5py.File(path, "r+") as f:
        offsets = np.arange(N + 1, dtype="<i8") * len(text)
        with_data("/metadata/offsets", offsets)(f)
        with_data("/metadata/data", np.frombuffer(text * N, "u1"))(f)
        copy = f.attrs["store_xxh3_64"]
        del f.attrs["store_xxh3_64"]  # as written before the checksum, which refuses new shapes at open
    with vecstore.open(path) as store:
        with pytest.raises(vecstore.FormatError, match="/metadata"):
            store.metadata([0])
    with h5py.File(path, "r+") as f:
        f.attrs["store_xxh3_64"] = copy
    with pytest.raises(vecstore.FormatError, match="store_xxh3_64"):
        vecstore.open(path)


def test_params_of_another_numeric_dtype_are_refused(copy_of):
    path = copy_of()
    with h5py.File(path, "r+") as f:
        as_dtype("/tiers/int8/params/0.scale", "<i4")(f)
    with pytest.raises(vecstore.FormatError, match="0.scale"):
        vecstore.open(path)


def _layout_message(data: bytes, offset: int, size: int) -> int:
    """Where the contiguous-layout message holding (address, size) of a dataset sits in the file."""
    pattern = struct.pack("<QQ", offset, size)
    hits = []
    i = data.find(pattern)
    while i >= 0:
        hits.append(i)
        i = data.find(pattern, i + 1)
    hits = [h for h in hits if not offset <= h < offset + size]
    assert len(hits) == 1, hits
    return hits[0]


@pytest.mark.parametrize("dataset", ["ids", "tiers/raw/codes", "tiers/pq4/params/0.codebooks", "keys/offsets"])
@pytest.mark.parametrize("lie, cls, message", [
    ("past the end", vecstore.FormatError, ""),
    ("onto another dataset", vecstore.FormatError, "overlap"),
    ("undefined address", vecstore.FormatError, "not allocated"),
    ("address 0", vecstore.FormatError, ""),
])
def test_dataset_offset_edited_in_the_bytes_is_refused(copy_of, dataset, lie, cls, message):
    path = copy_of()
    with h5py.File(path, "r") as f:
        ds = f[dataset]
        offset, size = ds.id.get_offset(), ds.id.get_storage_size()
        other = f["tiers/int8/codes"].id.get_offset()
    data = bytearray(_read(path))
    at = _layout_message(bytes(data), offset, size)
    new = {"past the end": len(data) + 4096, "onto another dataset": other, "undefined address": (1 << 64) - 1,
           "address 0": 0}[lie]
    data[at:at + 8] = struct.pack("<Q", new)
    with open(path, "wb") as fh:
        fh.write(data)
    with pytest.raises(vecstore.VecstoreError, match=message or None) as info:
        vecstore.open(path)
    _refused(info, cls)


def test_dataset_shape_edited_in_the_bytes_is_refused(copy_of):
    path = copy_of()
    with h5py.File(path, "r") as f:
        offset, size = f["ids"].id.get_offset(), f["ids"].id.get_storage_size()
    data = bytearray(_read(path))
    at = _layout_message(bytes(data), offset, size)
    # the dataspace message of /ids (dims, max dims) precedes its layout message in the object header
    header = data[at - 512:at]
    assert header.count(struct.pack("<Q", N)) == 2
    data[at - 512:at] = header.replace(struct.pack("<Q", N), struct.pack("<Q", N + 1))
    with open(path, "wb") as fh:
        fh.write(data)
    with pytest.raises(vecstore.FormatError) as info:
        vecstore.open(path)
    _refused(info)


def test_unknown_objects_are_ignored_and_never_opened(copy_of, tmp_path):
    """The spec says to ignore what v1 does not define: even objects that point outside the file."""
    path = copy_of()
    with h5py.File(path, "r+") as f:
        f["evil_link"] = h5py.ExternalLink(str(tmp_path / "missing.h5"), "/x")
        f.create_dataset("evil_external", shape=(10,), dtype="<f4", external=[(str(tmp_path / "missing.bin"), 0, 40)])
        f["tiers/raw"]["evil_soft"] = h5py.SoftLink("/nowhere")
        f.attrs["unknown"] = "ignored"
    with vecstore.open(path) as store:
        assert store.search(np.ones(DIM), 3).ids.shape == (1, 3)
    assert not os.path.exists(tmp_path / "missing.bin")


# ---------------------------------------------------------------------------------------------
# Files that are not stores at all


def test_empty_random_and_foreign_files_are_refused(tmp_path):
    rng = np.random.default_rng(99)
    cases = {"empty": b"", "one byte": b"\x89", "signature only": fmt.HDF5_SIGNATURE,
             "text": b"hello world\n" * 100, "npy": b"\x93NUMPY" + bytes(200)}
    for i in range(10):
        blob = rng.integers(0, 256, int(rng.integers(1, 20000)), dtype=np.uint8).tobytes()
        cases[f"random {i}"] = blob
        cases[f"signature + random {i}"] = fmt.HDF5_SIGNATURE + blob
    for name, blob in cases.items():
        path = tmp_path / "x.vs"
        path.write_bytes(blob)
        with pytest.raises(vecstore.FormatError) as info:
            vecstore.open(path)
        _refused(info)
    with h5py.File(tmp_path / "ann.hdf5", "w") as f:
        f["train"] = np.ones((3, 4), np.float32)
        f.attrs["distance"] = "euclidean"
    with h5py.File(tmp_path / "half.h5", "w") as f:
        f.attrs["format"] = "vecstore"
    with h5py.File(tmp_path / "userblock.h5", "w", userblock_size=512) as f:
        f.attrs["format"] = "vecstore"
    for name, pattern in [("ann.hdf5", "not a vecstore"), ("half.h5", "missing"), ("userblock.h5", "signature")]:
        with pytest.raises(vecstore.FormatError, match=pattern) as info:
            vecstore.open(tmp_path / name)
        _refused(info)
    for path, pattern in [(tmp_path, "directory"), (tmp_path / "absent.vs", "does not exist")]:
        with pytest.raises(vecstore.StoreNotFoundError, match=pattern) as info:
            vecstore.open(path)
        _refused(info)
    with pytest.raises(vecstore.FormatError):
        vecstore.open("/dev/null")


def test_truncated_at_random_offsets_is_refused(base_store, tmp_path):
    data = _read(base_store)
    rng = np.random.default_rng(2024)
    cuts = [0, 4, 8, 47, 96, 4095, 4096, len(data) - 1] + rng.integers(1, len(data), 32).tolist()
    for cut in cuts:
        path = tmp_path / "t.vs"
        path.write_bytes(data[:cut])
        with pytest.raises(vecstore.FormatError) as info:
            vecstore.open(path)
        _refused(info)
    assert len(cuts) == 40


def test_bytes_appended_do_not_matter(base_store, tmp_path):
    path = tmp_path / "long.vs"
    path.write_bytes(_read(base_store) + os.urandom(10000))
    with vecstore.open(path) as store, vecstore.open(base_store) as base:
        np.testing.assert_array_equal(store.search(np.ones(DIM), 5).ids, base.search(np.ones(DIM), 5).ids)


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = str(tmp_path / "pipe.vs")
    os.mkfifo(fifo)

    def unblock():  # after 2 s, open the writing end so that a blocked reader returns
        time.sleep(2.0)
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass

    threading.Thread(target=unblock, daemon=True).start()
    t0 = time.perf_counter()
    with pytest.raises(vecstore.VecstoreError):
        vecstore.open(fifo)
    assert time.perf_counter() - t0 < 1.0, "vecstore.open blocked on a FIFO"


# ---------------------------------------------------------------------------------------------
# Two libhdf5 limits on crafted files, shown in a subprocess


OPEN_IN_CHILD = """
import faulthandler, resource, sys, vecstore
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
faulthandler.dump_traceback_later(float(sys.argv[2]), exit=True)
try:
    vecstore.open(sys.argv[1], untrusted=sys.argv[3] == "1").close()
    outcome = "opened"
except vecstore.VecstoreError as exc:
    outcome = type(exc).__name__
faulthandler.cancel_dump_traceback_later()
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024
print(outcome, grown)
"""


def _open_in_child(path: str, timeout: float, untrusted: bool = False) -> tuple[int, str, str]:
    run = subprocess.run([sys.executable, "-c", OPEN_IN_CHILD, path, str(timeout), "1" if untrusted else "0"],
                         capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, NUMBA_NUM_THREADS="1"))
    return run.returncode, run.stdout.strip(), run.stderr


def _heap_loop_file(copy_of) -> str:
    path = copy_of()
    data = bytearray(_read(path))
    heap = data.find(b"GCOL")
    assert heap > 0 and hostile_worker.global_heap_loops(bytes(data)) is None
    data[heap + 16:heap + 32] = bytes(16)  # first object: index 0 (free space), size 0
    assert hostile_worker.global_heap_loops(bytes(data)) == heap
    with open(path, "wb") as fh:
        fh.write(data)
    return path


def _gigabyte_string_file(copy_of) -> str:
    path = copy_of()
    data = bytearray(_read(path))
    heap = data.find(b"GCOL")
    pattern = struct.pack("<IQ", len("float32"), heap)  # /tiers/raw codec_string: length, collection
    at = data.find(pattern)
    assert at > 0
    data[at:at + 4] = struct.pack("<I", 1 << 30)
    with open(path, "wb") as fh:
        fh.write(data)
    return path


@pytest.mark.xfail(strict=True, reason=(
    "libhdf5 (2.0.0) H5HG cache deserialize: a global heap object with index 0 and size 0 never advances "
    "its parser, so reading any variable-length string attribute loops forever; 16 zero bytes make "
    "vecstore.open hang (found by the fuzz test, cases like seed 0 #87). A file from outside must be opened with "
    "untrusted=True (tested below: the header is read in a child with a timeout); format v2 could use "
    "fixed-length strings."))
def test_libhdf5_global_heap_loop(copy_of):
    code, out, err = _open_in_child(_heap_loop_file(copy_of), timeout=5.0)
    assert code == 0 and out.startswith("FormatError"), f"vecstore.open did not return: {err[-400:]}"


def test_untrusted_open_refuses_the_global_heap_loop_within_its_timeout(copy_of, monkeypatch):
    from vecstore.format import untrusted as _untrusted

    path = _heap_loop_file(copy_of)
    monkeypatch.setattr(_untrusted, "HEADER_TIMEOUT_S", 5.0)
    t0 = time.perf_counter()
    with pytest.raises(vecstore.FormatError, match="did not finish within 5 s"):
        _untrusted.check_header_in_child(path, timeout=5.0)
    assert time.perf_counter() - t0 < 30
    with pytest.raises(vecstore.FormatError, match="did not finish"):
        vecstore.verify(path, untrusted=True)


@pytest.mark.xfail(strict=False, reason=(
    "(not strict: whether the allocation shows in the child's peak RSS depends on whether libhdf5 touches the "
    "buffer's pages, which varied between runs of the whole suite) "
    "libhdf5 allocates the length that a variable-length string claims (a 4-byte field, up to 4 GiB) before "
    "it finds the heap object does not match; one 4-byte edit makes vecstore.open allocate that much "
    "(fuzz case seed 0 #606 peaked at 4.3 GB RSS). vecstore reads attributes before checking MAX_ATTR_BYTES. "
    "A file from outside must be opened with untrusted=True (tested below: a child with RLIMIT_AS); format v2 "
    "could use fixed-length string attributes (their size is in the datatype)."))
def test_string_attribute_claiming_a_gigabyte_is_not_allocated(copy_of):
    code, out, err = _open_in_child(_gigabyte_string_file(copy_of), timeout=60.0)
    assert code == 0, err[-400:]
    outcome, grown_mb = out.split()
    assert outcome == "FormatError"
    assert int(grown_mb) < 256, f"opening grew the peak RSS by {grown_mb} MB"


def test_untrusted_open_refuses_a_gigabyte_string_without_allocating_it(copy_of):
    code, out, err = _open_in_child(_gigabyte_string_file(copy_of), timeout=60.0, untrusted=True)
    assert code == 0, err[-400:]
    outcome, grown_mb = out.split()
    assert outcome == "FormatError"
    assert int(grown_mb) < 256, f"opening grew the peak RSS by {grown_mb} MB"


def test_untrusted_open_of_a_good_store_works_and_reports_errors_by_class(copy_of, tmp_path):
    with vecstore.open(copy_of(), untrusted=True) as store:
        assert store.count > 0 and store.untrusted
    (tmp_path / "foreign.h5").write_bytes(b"")
    with pytest.raises(vecstore.FormatError, match="not an HDF5 file"):
        vecstore.open(str(tmp_path / "foreign.h5"), untrusted=True)
    with pytest.raises(vecstore.StoreNotFoundError):
        vecstore.open(str(tmp_path / "missing.vs"), untrusted=True)


# ---------------------------------------------------------------------------------------------
# Damage inside vector data: not detected at open (by design), found by verify, never a crash


def _damage(copy_of, dataset, rows, value, name):
    path = copy_of(name)
    with h5py.File(path, "r") as f:
        offset, dtype, shape = f[dataset].id.get_offset(), f[dataset].dtype, f[dataset].shape
    mm = np.memmap(path, dtype=dtype, mode="r+", offset=offset, shape=shape)
    mm[rows] = value
    mm.flush()
    del mm
    return path


DAMAGED_ROWS = [5, 17, 100]


@pytest.mark.parametrize("dataset", ["tiers/raw/codes", "tiers/raw/sqnorms", "tiers/pca8,float16/codes"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_nan_and_inf_written_into_vector_data(copy_of, dataset, value):
    """Bit rot in data is found by `vecstore verify`, not at open; searches still return valid ids."""
    damaged = _damage(copy_of, dataset, DAMAGED_ROWS, value, "damaged.vs")
    with pytest.raises(vecstore.IntegrityError, match=dataset):
        vecstore.verify(damaged)
    with vecstore.open(damaged) as store, np.errstate(all="ignore"):
        for tier in store.tiers:
            for nq in (1, 40):  # the direct kernel and the BLAS path
                D, I = store.search(np.ones((nq, DIM)), N, tier=tier)
                assert ((I >= 0) & (I < N)).all()
                assert all(len(set(row)) == N for row in I.tolist())
                assert (~np.isfinite(D)).sum(axis=1).max() <= len(DAMAGED_ROWS)
                assert np.isin(I[~np.isfinite(D)], DAMAGED_ROWS).all()
        D, I = store.search(np.ones(DIM), 5, tier="pq4", rescore="raw", oversample=20)
        assert (I >= 0).all()


@pytest.mark.parametrize("nq", [1, 40])
@pytest.mark.parametrize("k", [10, 50])
def test_damaged_rows_do_not_change_the_answer_for_the_other_rows(copy_of, base_store, nq, k):
    damaged = _damage(copy_of, "tiers/raw/codes", DAMAGED_ROWS, np.nan, "nan.vs")
    with h5py.File(base_store, "r") as f:
        x = f["tiers/raw/codes"][()]
    good = np.setdiff1d(np.arange(N), DAMAGED_ROWS)
    q = np.random.default_rng(4).standard_normal((nq, DIM)).astype(np.float32)
    exact = ((q[:, None, :].astype(np.float64) - x[None, good, :]) ** 2).sum(axis=2)
    with vecstore.open(damaged) as store, np.errstate(all="ignore"):
        D, I = store.search(q, k, tier="raw")
    for j in range(nq):
        got = [i for i in I[j].tolist() if i not in DAMAGED_ROWS]
        assert set(got) == set(good[np.argsort(exact[j], kind="stable")[:len(got)]].tolist())


# ---------------------------------------------------------------------------------------------
# The seeded fuzz test, in subprocesses


def _in_libhdf5(event: dict) -> bool:
    """Whether a crash or hang happened inside h5py/libhdf5 (its innermost Python frame is h5py's)."""
    return bool(event["innermost"]) and "h5py" in event["innermost"]


def _fuzz_case_file(base: str, tmp_path, case: int) -> str:
    """The mutated file of fuzz case ``case``, made again (a case depends on (seed, case) alone)."""
    workdir = tmp_path / f"case-{case}"
    workdir.mkdir()
    path = str(workdir / "case.vs")
    hostile_worker.make_case(FUZZ_SEED, case, hostile_worker.Layout(base), path, str(workdir))
    return path


def _run_fuzz_range(base, workdir, start, stop, outcomes, events):
    """Run the worker over [start, stop); restart it after each case that crashed or hung."""
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1", PYTHONFAULTHANDLER="1")
    progress = os.path.join(workdir, "progress.json")
    while start < stop:
        cmd = [sys.executable, FUZZ, base, workdir, "--seed", str(FUZZ_SEED), "--start", str(start),
               "--count", str(stop - start), "--progress", progress, "--outcomes", outcomes]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        if run.returncode == 0:
            return
        with open(progress) as fh:
            case = json.load(fh)
        hung = "Timeout (" in run.stderr
        frames = [line.strip() for line in run.stderr.splitlines() if line.strip().startswith("File ")]
        events.append({**case, "returncode": run.returncode, "signal": -run.returncode if run.returncode < 0 else None,
                       "hang": hung, "innermost": frames[0] if frames else None, "stderr": run.stderr[-1500:],
                       "reproduce": f"{sys.executable} {FUZZ} BASE.vs WORKDIR --seed {FUZZ_SEED} "
                                    f"--start {case['case']} --count 1 --keep"})
        start = case["case"] + 1


def test_fuzz_mutated_stores(base_store, tmp_path):
    """>= 1,000 mutated stores opened and searched: no crash, every failure a VecstoreError with a message."""
    halves = [(0, FUZZ_CASES // 2), (FUZZ_CASES // 2, FUZZ_CASES)]
    events: list[dict] = []
    threads = []
    for i, (start, stop) in enumerate(halves):  # two workers: the machine has two cores
        workdir = tmp_path / f"w{i}"
        workdir.mkdir()
        threads.append(threading.Thread(target=_run_fuzz_range, args=(
            base_store, str(workdir), start, stop, str(workdir / "outcomes.jsonl"), events)))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = []
    for i in range(len(halves)):
        with open(tmp_path / f"w{i}" / "outcomes.jsonl") as fh:
            lines += [json.loads(line) for line in fh]
    summary = hostile_worker.summarise(lines)
    crashes = [e for e in events if not e["hang"] and not _in_libhdf5(e)]
    libhdf5_crashes = [e for e in events if not e["hang"] and _in_libhdf5(e)]
    hangs = [e for e in events if e["hang"]]
    libhdf5_hangs = [e for e in hangs if _in_libhdf5(e)]
    summary.update(seconds=round(time.perf_counter() - t0, 1), crashes=crashes, hangs=hangs,
                   libhdf5_crashes=libhdf5_crashes)
    report = json.dumps({k: v for k, v in summary.items() if k not in ("crashes", "hangs")}, indent=1)
    print(f"\nfuzz summary (seed {FUZZ_SEED}, {FUZZ_CASES} cases):\n{report}")
    for e in events:
        print(f"{'HANG' if e['hang'] else 'CRASH'} case {e['case']} ({e['kind']}: {e['desc']}) rc={e['returncode']} "
              f"in {e['innermost']}\n  reproduce: {e['reproduce']}")
    (tmp_path / "fuzz-summary.json").write_text(json.dumps(summary, indent=1))

    assert not crashes, f"{len(crashes)} crash(es): " + json.dumps(crashes, indent=1)[:4000]
    # libhdf5 itself may crash on a crafted header in the default open (docs/errors.md, "Not
    # guaranteed"); what is guaranteed is that untrusted=True contains it: the same file is refused
    # with a FormatError and this process survives.
    assert len(libhdf5_crashes) <= 3, "libhdf5 crashes multiplied: " + json.dumps(libhdf5_crashes, indent=1)[:4000]
    for event in libhdf5_crashes:
        path = _fuzz_case_file(base_store, tmp_path, event["case"])
        with pytest.raises(vecstore.FormatError, match="the process reading its header failed"):
            vecstore.open(path, untrusted=True)
    assert len(hangs) == len(libhdf5_hangs), "a case hung outside libhdf5: " + json.dumps(hangs, indent=1)[:4000]
    assert summary["other_count"] == 0, "exceptions other than VecstoreError: " + json.dumps(summary["other"], indent=1)
    assert summary["empty_messages"] == [], f"VecstoreErrors without a message in cases {summary['empty_messages']}"
    assert summary["probed"] + len(events) >= 1000
    assert sum(summary["refused"].values()) >= 500 and summary["opened"] >= 100  # both paths exercised
    assert summary["foreign_ids"] == 0
    assert summary["wrong_answers"] == [], "files whose data verify and whose header is unchanged answered differently"
    assert summary["compared_with_base"] >= 100


# ---------------------------------------------------------------------------------------------
# The command line: a VecstoreError is one line on stderr and exit 1; a usage error exits 2


CLI_CASES = [
    (["info", "{damaged}"], 1, "could not be read as HDF5"),
    (["info", "{missing}"], 1, "does not exist"),
    (["info", "{foreign}"], 1, "not a vecstore"),
    (["search", "{store}", "--vector", "1,2,x"], 1, "--vector must be numbers"),
    (["search", "{store}", "--vector", "1,2,3"], 1, "dimension 3"),
    (["search", "{store}", "--vector", ",".join(["nan"] * DIM)], 1, "NaN or Inf"),
    (["search", "{store}", "--vector", ",".join(["1"] * DIM), "-k", "0"], 1, "k must be >= 1"),
    (["search", "{store}", "--vector", ",".join(["1"] * DIM), "--tier", "nope"], 1, "no tier 'nope'"),
    (["search", "{store}", "{bad_queries}"], 1, "NaN or Inf"),
    (["search", "{store}"], 2, "QUERIES file"),
    (["build", "{bad_queries}", "{new}", "--quiet"], 1, "NaN or Inf"),
    (["build", "{vectors}", "{store}", "--quiet"], 1, "already exists"),
    (["compress", "{store}", "--codec", "pq7", "--quiet"], 1, "does not divide"),
    (["compress", "{store}", "--codec", "zstd", "--quiet"], 1, "unknown codec"),
    (["compress", "{store}"], 2, "--codec"),
    (["verify", "{damaged}"], 1, "could not be read as HDF5"),
    (["verify", "{rotten}"], 1, "do not match their checksum"),
]


@pytest.mark.parametrize("args, code, message", CLI_CASES, ids=[" ".join(c[0][:3]) + f" -> {c[1]}" for c in CLI_CASES])
def test_cli_turns_hostile_input_into_one_line_and_an_exit_code(copy_of, tmp_path, args, code, message):
    from click.testing import CliRunner

    from vecstore.cli import cli

    store = copy_of("cli.vs")
    damaged = tmp_path / "damaged.vs"
    damaged.write_bytes(_read(store)[:5000])
    rotten = _damage(copy_of, "tiers/raw/codes", [3], 1.5, "rotten.vs")
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = np.zeros(3)
    bad = np.ones((4, DIM), np.float32)
    bad[2, 1] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    np.save(tmp_path / "vectors.npy", np.ones((4, DIM), np.float32))
    names = {"store": store, "damaged": str(damaged), "rotten": rotten, "missing": str(tmp_path / "none.vs"),
             "foreign": str(tmp_path / "foreign.h5"), "bad_queries": str(tmp_path / "bad.npy"),
             "vectors": str(tmp_path / "vectors.npy"), "new": str(tmp_path / "new.vs")}
    result = CliRunner().invoke(cli, [a.format(**names) for a in args])
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), "a traceback, not one line"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and message in last, result.stderr
    if code == 1:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_duplicate_ids_and_a_lying_codec_string_are_refused(tmp_path):
    path = str(tmp_path / "s.vs")
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    vecstore.build(path, x, progress=False).close()
    vecstore.compress(path, "int8", calibrate=False, progress=False).close()
    with h5py.File(path, "r+") as f:
        f["ids"][7] = 3
    with vecstore.open(path) as store:  # found when the id index is first needed, not at open
        with pytest.raises(vecstore.FormatError, match="id 3 appears more than once"):
            store.keys([5])
    with h5py.File(path, "r+") as f:
        f["ids"][7] = 7
        f["tiers/int8"].attrs["codec_string"] = "float16"
    with pytest.raises(vecstore.FormatError, match="'float16' does not describe its codec config"):
        vecstore.open(path)
