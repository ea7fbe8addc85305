"""vecstore.ingest: the one row check, chunked readers for arrays and files, keys, ids, metadata."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from vecstore import ingest
from vecstore.errors import FormatError, InvalidDtypeError, InvalidInputError, StoreNotFoundError
from vecstore.ingest import (
    as_ids,
    open_vectors,
    prepare_rows,
    prepared_chunks,
    read_keys,
    read_metadata,
)

N, DIM = 23, 5


@pytest.fixture
def x(rng):
    return rng.standard_normal((N, DIM)).astype(np.float32)


# -- prepare_rows ----------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["ip", "l2", "cosine"])
def test_bad_rows_are_named_counting_from_first_row(x, metric):
    x[4, 2] = np.nan
    with pytest.raises(InvalidInputError, match="^part: row 104 contains NaN or Inf"):
        prepare_rows(x, metric, 100, "part")


def test_zero_and_overflowing_rows_are_named_counting_from_first_row(x):
    x[6] = 0
    with pytest.raises(InvalidInputError, match="^v: row 56 is all zeros"):
        prepare_rows(x, "cosine", 50, "v")
    x[6] = 1e19
    with pytest.raises(InvalidInputError, match=r"^v: row 56 has values so large .*squared norm 5e\+38"):
        prepare_rows(x, "l2", 50, "v")


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_prepare_rows_keeps_ip_and_l2_values(x, metric):
    out = prepare_rows(x.astype(np.float64), metric, 0, "v")
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x)


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_prepare_rows_gives_each_row_the_formula_s_bits_however_many_rows_come(rng, metric, monkeypatch):
    """docs/format.md, "The query": s = sum_j double(q[j])^2, q' = float32(double(q[j]) / sqrt(s)),
    bit for bit and the same for a row alone or in a batch of one row, a few, more than a chunk
    (PREPARE_CHUNK_ROWS: 4 here), narrow and wide; and the first bad row named across chunks: a zero
    row in the second chunk before a NaN in the third."""
    monkeypatch.setattr(ingest, "PREPARE_CHUNK_ROWS", 4)
    for dim in (37, 20000):  # (einsum's cast buffer holds 8,192 values: a wide row spans several)
        x = (rng.standard_normal((11, dim)) * rng.uniform(1e-3, 1e3, (11, 1))).astype(np.float32)
        s = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        want = (x.astype(np.float64) / np.sqrt(s)[:, None]).astype(np.float32) if metric == "cosine" else x
        for part in (slice(0, 1), slice(0, 3), slice(0, 11), slice(7, 8)):
            np.testing.assert_array_equal(prepare_rows(x[part], metric, 0, "v").view(np.uint32),
                                          want[part].view(np.uint32))
    x[5], x[9, 3] = 0, np.nan
    first = "row 105 is all zeros" if metric == "cosine" else "row 109 contains NaN"
    with pytest.raises(InvalidInputError, match=f"^v: {first}"):
        prepare_rows(x, metric, 100, "v")


# -- prepared_chunks -------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["ip", "cosine"])
def test_prepared_chunks_equal_prepare_rows_on_the_whole(x, metric, monkeypatch):
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 4 * DIM * 4)  # 4 rows a chunk
    chunks = list(prepared_chunks(ingest.from_array(x.astype(np.float64)), metric)())
    assert [start for start, _ in chunks] == list(range(0, N, 4))
    assert [rows.shape[0] for _, rows in chunks] == [4] * 5 + [3]
    np.testing.assert_array_equal(np.concatenate([rows for _, rows in chunks]),
                                  prepare_rows(x, metric, 0, "whole"))


def test_prepared_chunks_name_a_bad_row_by_its_place_in_the_source(x, monkeypatch):
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 4 * DIM * 4)
    x[13, 0] = np.inf
    chunks = prepared_chunks(ingest.from_array(x, "my vectors"), "ip")()
    with pytest.raises(InvalidInputError, match="^my vectors: row 13 contains NaN or Inf"):
        list(chunks)


# -- open_vectors ----------------------------------------------------------------------------------


def _write_fvecs(path, x):
    rows = np.empty((x.shape[0], x.shape[1] + 1), dtype="<i4")
    rows[:, 0] = x.shape[1]
    rows[:, 1:] = x.view("<i4")
    rows.tofile(path)


def _chunks_equal(source, x):
    assert source.shape == x.shape
    chunks = list(source.chunks(chunk_rows=4))
    assert [start for start, _ in chunks] == list(range(0, x.shape[0], 4))
    assert all(rows.dtype == np.float32 for _, rows in chunks)
    np.testing.assert_array_equal(np.concatenate([rows for _, rows in chunks]), x)
    np.testing.assert_array_equal(source.read_all(), x)


def test_npy_file(tmp_path, x):
    np.save(tmp_path / "v.npy", x.astype(np.float64))
    source = open_vectors(str(tmp_path / "v.npy"))
    assert source.dtype == np.float64
    _chunks_equal(source, x)


def test_fortran_npy_is_refused(tmp_path, x):
    np.save(tmp_path / "f.npy", np.asfortranarray(x))
    with pytest.raises(InvalidInputError, match="Fortran-ordered"):
        open_vectors(str(tmp_path / "f.npy"))


def test_fvecs_file(tmp_path, x):
    _write_fvecs(tmp_path / "v.fvecs", x)
    _chunks_equal(open_vectors(str(tmp_path / "v.fvecs")), x)


def test_fvecs_with_a_row_of_another_dimension_is_refused(tmp_path, x):
    _write_fvecs(tmp_path / "v.fvecs", x)
    raw = np.fromfile(tmp_path / "v.fvecs", dtype="<i4").reshape(N, DIM + 1)
    raw[9, 0] = DIM + 1
    raw.tofile(tmp_path / "v.fvecs")
    with pytest.raises(FormatError, match="row 9 has dimension 6, not 5"):
        open_vectors(str(tmp_path / "v.fvecs")).read_all()


def test_hdf5_dataset_path(tmp_path, x):
    path = tmp_path / "v.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("group/emb", data=x.astype(np.float16).astype(np.float32))
        f.create_dataset("other", data=x)
    source = open_vectors(f"{path}:/group/emb")
    assert source.description == f"{path}:group/emb" and source.metric_hint is None
    _chunks_equal(source, x.astype(np.float16).astype(np.float32))
    with pytest.raises(InvalidInputError, match="has no dataset 'nope'"):
        open_vectors(f"{path}:/nope")


def test_ann_benchmarks_file_gives_its_metric(tmp_path, x):
    path = tmp_path / "ann.hdf5"
    with h5py.File(path, "w") as f:
        f.attrs["distance"] = "angular"
        f.create_dataset("train", data=x)
        f.create_dataset("test", data=x[:3])
    assert open_vectors(str(path)).metric_hint == "cosine"
    _chunks_equal(open_vectors(str(path), prefer="test"), x[:3])


def test_arrays_and_unknown_inputs(tmp_path, x):
    _chunks_equal(open_vectors(x), x)
    with pytest.raises(InvalidInputError, match="expected a 2-D array"):  # docs: non-2-D input is refused
        open_vectors(x[0])
    with pytest.raises(InvalidDtypeError):
        open_vectors(np.array([["a", "b"]]))
    with pytest.raises(StoreNotFoundError):
        open_vectors(str(tmp_path / "missing.npy"))
    (tmp_path / "v.csv").write_text("1,2\n")
    with pytest.raises(InvalidInputError, match="unknown input type '.csv'"):
        open_vectors(str(tmp_path / "v.csv"))


# -- keys and ids ----------------------------------------------------------------------------------


def test_read_keys_from_a_list_a_text_file_and_an_hdf5_dataset(tmp_path):
    keys = ["a", "b é", "c"]
    assert read_keys(keys, 3) == keys and read_keys(None, 3) == []
    (tmp_path / "k.txt").write_text("\n".join(keys) + "\n", encoding="utf-8")
    assert read_keys(str(tmp_path / "k.txt"), 3) == keys
    with h5py.File(tmp_path / "k.h5", "w") as f:
        f.create_dataset("keys", data=keys, dtype=h5py.string_dtype())
        f.create_dataset("nums", data=np.arange(3))
    assert read_keys(f"{tmp_path / 'k.h5'}:/keys", 3) == keys
    with pytest.raises(InvalidDtypeError, match="not a string dataset"):
        read_keys(f"{tmp_path / 'k.h5'}:/nums", 3)
    with pytest.raises(InvalidInputError, match="name the keys dataset"):
        read_keys(str(tmp_path / "k.h5"), 3)


@pytest.mark.parametrize("keys, match", [(["a", "b"], "2 keys for 3 vectors"), (["a", 2, "c"], "must be strings")])
def test_bad_keys_are_refused(keys, match):
    with pytest.raises(InvalidInputError, match=match):
        read_keys(keys, 3)


def test_as_ids():
    ids = as_ids(None, 4)
    assert ids.dtype == np.dtype("<i8") and ids.tolist() == [0, 1, 2, 3]
    ids = as_ids(np.array([7, 3, 2**40], dtype=np.uint64), 3)
    assert ids.dtype == np.dtype("<i8") and ids.tolist() == [7, 3, 2**40]
    assert as_ids(np.empty(0, np.int32), 0).shape == (0,)


@pytest.mark.parametrize("ids, match", [([1, 2, 1], "id 1 appears more than once"), ([1.0, 2.0, 3.0], "integers"),
                                        ([[1, 2, 3]], "1-D"), ([1, 2], "2 ids for 3 vectors"),
                                        (np.array([1, 2, 2**63], dtype=np.uint64), "fit in int64")])
def test_bad_ids_are_refused(ids, match):
    with pytest.raises(InvalidInputError, match=match):
        as_ids(ids, 3)


# -- metadata --------------------------------------------------------------------------------------


def test_metadata_becomes_canonical_json_texts():
    items = [{"b": 1, "a": "é"}, None, {}]
    assert read_metadata(items, 3) == ['{"a": "é", "b": 1}', "", "{}"]
    assert read_metadata(None, 3) is None


def test_metadata_from_a_json_lines_file_with_blank_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"z": [1, 2], "a": null}\n\n   \n{"t": "x"}\n', encoding="utf-8")
    texts = read_metadata(str(path), 4)
    assert texts == ['{"a": null, "z": [1, 2]}', "", "", '{"t": "x"}']
    assert [json.loads(t) if t else None for t in texts] == [{"a": None, "z": [1, 2]}, None, None, {"t": "x"}]


def test_a_bad_json_line_is_named(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"a": 1}\n\n{"a": 2,}\n', encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"m.jsonl: line 3 is not JSON"):
        read_metadata(str(path), 3)


@pytest.mark.parametrize("items, match", [([{}, {}], "2 metadata entries for 3 vectors"),
                                          ([{}, [1], {}], "entry 1 must be a JSON object"),
                                          ([{}, {}, "x"], "entry 2 must be a JSON object"),
                                          ([{}, {"s": {1, 2}}, {}], "entry 1 is not JSON-serialisable"),
                                          ([{"n": float("nan")}, {}, {}], "entry 0 is not JSON-serialisable")])
def test_bad_metadata_is_refused(items, match):
    with pytest.raises(InvalidInputError, match=match):
        read_metadata(items, 3)


def test_missing_metadata_file(tmp_path):
    with pytest.raises(StoreNotFoundError):
        read_metadata(str(tmp_path / "none.jsonl"), 1)
