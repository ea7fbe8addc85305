"""vecstore.query: query and k validation, padding, merging the top-k of parts, recall."""

from __future__ import annotations

import numpy as np
import pytest

from vecstore.errors import InvalidDtypeError, InvalidInputError
from vecstore.query import (
    MAX_K,
    SearchResult,
    check_k,
    drop_ids,
    empty_result,
    merge_results,
    prepare_queries,
    recall_at_k,
    without,
)

METRICS = ["ip", "cosine", "l2"]


# -- prepare_queries -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16, np.int32, np.uint8])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_queries_become_c_contiguous_float32_with_the_same_values(rng, dtype, metric):
    x = (rng.standard_normal((5, 8)) * 10).astype(dtype)
    out = prepare_queries(np.asfortranarray(x), 8, metric)
    assert out.dtype == np.float32 and out.shape == (5, 8) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, x.astype(np.float32))


def test_one_query_of_shape_dim_becomes_one_row(rng):
    q = rng.standard_normal(6)
    out = prepare_queries(q, 6, "ip")
    assert out.shape == (1, 6)
    np.testing.assert_array_equal(out[0], q.astype(np.float32))
    assert prepare_queries(list(q), 6, "ip").shape == (1, 6)


@pytest.mark.parametrize("shape, match", [((2, 5), "dimension 5, but the store holds dimension 6"),
                                          ((0, 6), "no queries"), ((2, 3, 6), r"shape \(dim,\) or \(nq, dim\)")])
def test_wrong_shapes_are_refused(shape, match):
    with pytest.raises(InvalidInputError, match=match):
        prepare_queries(np.ones(shape), 6, "ip")


def test_cosine_queries_are_unit_normalised_with_a_float64_norm(rng):
    x = rng.standard_normal((4, 8))
    x[1] *= 1e-30
    x[2] = 0.0
    x[2, :2] = [3e20, 4e20]  # squares overflow float32: only a float64 norm gives (0.6, 0.8)
    out = prepare_queries(x, 8, "cosine")
    expected = x / np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(out.astype(np.float64), axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(out[2, :2], [0.6, 0.8], rtol=1e-6)


def test_an_all_zero_cosine_query_is_refused_by_row(rng):
    x = rng.standard_normal((3, 4))
    x[2] = 0
    with pytest.raises(InvalidInputError, match="queries: row 2 is all zeros"):
        prepare_queries(x, 4, "cosine")
    prepare_queries(x, 4, "ip")  # a zero query is fine for ip and l2


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])  # 1e39 is inf in float32
def test_a_nan_or_inf_row_is_named(rng, metric, bad):
    x = rng.standard_normal((4, 3))
    x[3, 1] = bad
    with pytest.raises(InvalidInputError, match="queries: row 3 contains NaN or Inf"):
        prepare_queries(x, 3, metric)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_rows_whose_scores_could_overflow_float32_are_refused(metric):
    x = np.ones((2, 4))
    x[1] = 1e19  # finite in float32, but |x|^2 = 4e38 is not
    with pytest.raises(InvalidInputError, match="row 1 has values so large"):
        prepare_queries(x, 4, metric)
    assert prepare_queries(x, 4, "cosine")[1] == pytest.approx([0.5] * 4)  # normalised first: fine


@pytest.mark.parametrize("text", ["1 2 3", b"\x00\x01\x02", np.array(["1", "2", "3"]), [["a", "b", "c"]]])
def test_text_is_refused(text):
    with pytest.raises(InvalidDtypeError):
        prepare_queries(text, 3, "ip")


def test_objects_and_ragged_lists_are_refused():
    with pytest.raises(InvalidDtypeError):
        prepare_queries(np.array([1, None, 2], dtype=object), 3, "ip")
    with pytest.raises(InvalidInputError):
        prepare_queries([[1.0, 2.0], [3.0]], 2, "ip")


# -- check_k -------------------------------------------------------------------------------------


@pytest.mark.parametrize("k, count, expected", [(1, 5, 1), (5, 5, 5), (9, 5, 5), (np.int64(3), 10, 3),
                                                (np.uint8(7), 4, 4), (MAX_K, 3, 3)])
def test_k_is_capped_at_the_document_count(k, count, expected):
    got = check_k(k, count)
    assert got == expected and type(got) is int


@pytest.mark.parametrize("k, match", [(True, "positive integer"), (False, "positive integer"),
                                      (2.0, "positive integer"), ("3", "positive integer"),
                                      (None, "positive integer"), (0, ">= 1"), (-4, ">= 1"),
                                      (MAX_K + 1, "larger than the limit")])
def test_bad_k_is_refused(k, match):
    with pytest.raises(InvalidInputError, match=match):
        check_k(k, 10)


# -- padding, merging, dropping ------------------------------------------------------------------


@pytest.mark.parametrize("metric, pad", [("ip", -np.inf), ("cosine", -np.inf), ("l2", np.inf)])
def test_empty_result_is_padding_only(metric, pad):
    D, I = empty_result(3, 4, metric)
    assert D.dtype == np.float32 and I.dtype == np.int64 and D.shape == I.shape == (3, 4)
    assert (D == pad).all() and (I == -1).all()


def _part(rng, nq, k, metric, first_id):
    """A (nq, k) best-first result with ids first_id.. and random distances."""
    d = rng.standard_normal((nq, k)).astype(np.float32)
    d = np.sort(d, axis=1) if metric == "l2" else -np.sort(-d, axis=1)
    ids = first_id + np.arange(nq * k).reshape(nq, k)
    return SearchResult(d, ids.astype(np.int64))


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("k", [1, 4, 7])
def test_merge_keeps_the_best_k_of_all_parts(rng, metric, k):
    parts = [_part(rng, 3, w, metric, 1000 * i) for i, w in enumerate([4, 2, 5])]
    D, I = merge_results(parts, k, metric)
    all_d = np.concatenate([p.distances for p in parts], axis=1)
    all_i = np.concatenate([p.ids for p in parts], axis=1)
    order = np.argsort(all_d if metric == "l2" else -all_d, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(D, np.take_along_axis(all_d, order, axis=1))
    np.testing.assert_array_equal(I, np.take_along_axis(all_i, order, axis=1))
    assert D.dtype == np.float32 and I.dtype == np.int64


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_merge_ties_keep_part_order_then_column_order(metric):
    a = SearchResult(np.array([[1.0, 1.0, 1.0]], np.float32), np.array([[30, 10, 20]]))
    b = SearchResult(np.array([[1.0, 1.0]], np.float32), np.array([[5, 1]]))
    assert merge_results([a, b], 4, metric).ids.tolist() == [[30, 10, 20, 5]]
    assert merge_results([b, a], 4, metric).ids.tolist() == [[5, 1, 30, 10]]


def test_merge_orders_l2_ascending_and_similarities_descending():
    a = SearchResult(np.array([[1.0, 3.0]], np.float32), np.array([[1, 3]]))
    b = SearchResult(np.array([[2.0, 4.0]], np.float32), np.array([[2, 4]]))
    assert merge_results([a, b], 3, "l2").ids.tolist() == [[1, 2, 3]]
    a = SearchResult(np.array([[3.0, 1.0]], np.float32), np.array([[3, 1]]))
    b = SearchResult(np.array([[4.0, 2.0]], np.float32), np.array([[4, 2]]))
    assert merge_results([a, b], 3, "ip").ids.tolist() == [[4, 3, 2]]


@pytest.mark.parametrize("metric, pad", [("ip", -np.inf), ("l2", np.inf)])
def test_merge_sorts_padding_last_and_pads_to_k(metric, pad):
    # a hole left by drop_ids between two documents, as _search_part merges it
    a = SearchResult(np.array([[5.0, pad, 6.0]], np.float32), np.array([[7, -1, 9]]))
    b = SearchResult(np.array([[pad]], np.float32), np.array([[-1]]))
    D, I = merge_results([a, b], 5, metric)
    assert I.tolist() == ([[7, 9, -1, -1, -1]] if metric == "l2" else [[9, 7, -1, -1, -1]])
    assert sorted(D[0, :2].tolist()) == [5.0, 6.0] and (D[0, 2:] == pad).all()


def test_merge_ranks_padding_by_its_id_not_its_distance():
    a = SearchResult(np.array([[9.0, 1.0]], np.float32), np.array([[-1, 4]]))
    assert merge_results([a], 2, "ip").ids.tolist() == [[4, -1]]
    assert merge_results([a], 2, "l2").ids.tolist() == [[4, -1]]


def test_merge_needs_a_part():
    with pytest.raises(ValueError):
        merge_results([], 3, "ip")


@pytest.mark.parametrize("metric, pad", [("ip", -np.inf), ("l2", np.inf)])
def test_drop_ids_pads_exactly_the_dropped_ids(metric, pad):
    result = SearchResult(np.arange(8, dtype=np.float32).reshape(2, 4), np.array([[4, 9, 2, -1], [7, 3, 9, 0]]))
    D, I = drop_ids(result, np.array([0, 3, 9]), metric)
    assert I.tolist() == [[4, -1, 2, -1], [7, -1, -1, -1]]
    expected = np.where(I == -1, pad, result.distances)
    expected[0, 3] = result.distances[0, 3]  # existing padding keeps its distance
    np.testing.assert_array_equal(D, expected)
    assert D.dtype == np.float32 and result.ids[0, 1] == 9  # the input is not modified


def test_drop_ids_with_nothing_to_drop_returns_the_result():
    result = SearchResult(np.zeros((1, 2), np.float32), np.array([[1, 2]]))
    assert drop_ids(result, np.empty(0, np.int64), "ip") is result
    assert drop_ids(result, np.array([5, 6]), "ip") is result


# -- recall --------------------------------------------------------------------------------------


def _set_recall(found, truth, k):
    out = []
    for f, t in zip(found.tolist(), truth.tolist()):
        want = {i for i in t[:k] if i >= 0}
        out.append(len(want & {i for i in f if i >= 0}) / len(want) if want else 1.0)
    return np.array(out)


@pytest.mark.parametrize("k", [1, 3, 6])
def test_recall_at_k_equals_a_set_computation(rng, k):
    # rows as a search returns them: no id twice, -1 as padding
    truth = np.array([rng.permutation(13)[:6] for _ in range(40)]) - 1
    found = np.array([rng.permutation(13)[:5] for _ in range(40)]) - 1
    truth[0] = -1  # a query without true ids scores 1
    found[1] = -1  # padding never counts as a hit, even against padded truth
    truth[1, 1:] = -1
    np.testing.assert_allclose(recall_at_k(found, truth, k), _set_recall(found, truth, k))
    assert recall_at_k(found, truth, k)[0] == 1.0 and recall_at_k(found, truth, k)[1] == 0.0


def test_recall_counts_a_true_id_found_anywhere_in_the_row():
    assert recall_at_k(np.array([[9, 8, 1, 2]]), np.array([[1, 2, 3]]), 2).tolist() == [1.0]
    assert recall_at_k(np.array([[9, 8, 1, 2]]), np.array([[1, 2, 3]]), 3).tolist() == pytest.approx([2 / 3])


def test_without_removes_each_query_own_id_and_keeps_the_order(rng):
    ids = rng.integers(-1, 8, size=(30, 5))
    own = rng.integers(0, 8, size=30)
    expected = []
    for row, o in zip(ids.tolist(), own.tolist()):
        kept = [i for i in row if i != o and i >= 0]
        expected.append(kept + [-1] * (len(row) - len(kept)))
    assert without(ids, own).tolist() == expected


def test_without_on_unique_rows_padded_at_the_end(rng):
    """The usual shape (own at most once a row, -1 only at the end) takes a shift, not a sort: the
    same rows as removing own and moving the padding last."""
    ids = np.array([rng.permutation(50)[:12] for _ in range(40)])
    for q in range(0, 40, 3):
        ids[q, rng.integers(0, 13):] = -1
    own = np.where(rng.random(40) < 0.7, ids[np.arange(40), rng.integers(0, 12, 40)], 99)
    expected = []
    for row, o in zip(ids.tolist(), own.tolist()):
        kept = [i for i in row if i != o and i >= 0]
        expected.append(kept + [-1] * (len(row) - len(kept)))
    assert without(ids, own).tolist() == expected


def test_sharded_result_strategies():
    """A filtered sharded search says how each shard searched (None: a missing shard); the joined
    strategy skips shards that admitted nothing and splits a shard's own '+'-joined parts."""
    from vecstore.query import ShardedSearchResult

    d, i = np.zeros((1, 2), np.float32), np.full((1, 2), -1)
    assert ShardedSearchResult(d, i).strategy is None and ShardedSearchResult(d, i).allowed is None
    r = ShardedSearchResult(d, i, ("s1.vs",), ("exact", None, "none", "exact+filtered-two-stage"), 7)
    assert r.strategy == "exact+filtered-two-stage" and r.allowed == 7 and not r.complete
    assert ShardedSearchResult(d, i, (), ("none", "none"), 0).strategy == "none"
