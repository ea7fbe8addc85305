"""One compiled call for a whole single-query search over a 4-bit PQ tier (lookup tables, their
quantisation, the fast scan, rescoring from a finer tier in row order, the mapping of rows to ids and
scores to distances), or over a small float32 / int8 tier (its exact scan and the same finish).

A search of one query through the separate kernels crosses from Python to numba six times and starts
three parallel regions (the scan, its merge, the rescoring), each costing microseconds that a scan
of 100,000 4-bit codes (tens of microseconds) cannot hide. Here only the scan runs on several
threads. The results are those of the separate kernels, bit for bit: the same tables (pq.lookup_tables),
the same scan, the same rescoring body (rescore._rescore_query), the same finish (topk.to_results).

Callers (vecstore.store.prepared) pass validated queries already folded into each tier's code space.
Edits to the kernels this module calls are not seen by its on-disk cache: run ``make clean-cache``.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from .fastscan import ALL_ROWS_ALLOWED, prefetch_filter, quantize_tables, scan_parts, scan_pq4_fast, scan_pq4_lists
from .flat import scan_f16_rows, scan_f32, scan_f32_rows, scan_i8, scan_i8_rows
from .pq import lookup_tables
from .rescore import prefetch_rows, rescore_serial
from .threads import get_threads, set_threads
from .topk import NJIT, to_results


@nb.njit(**NJIT)
def search_pq4(coarse_q, codebooks, books_t, blocked, packed, bias, bias_max, bias_gaps, gap_unit, width, threads,
               fine_q, fine_codes, fine_layout, fine_bias, fine_const, kk, k, ids, l2, qnorms,
               allowed=ALL_ROWS_ALLOWED):
    """(distances, ids), each (nq, k), of a 4-bit PQ tier searched alone (``fine_codes`` with no
    rows: the scan's top ``width = kk = min(k, n)``, exact ADC scores) or in two stages (scan for
    ``width`` candidates by their quantised scores, rescore them on ``fine_codes`` with the folded queries ``fine_q`` plus
    ``fine_const``, keep the best ``kk``); padded to ``k`` columns.

    coarse_q (nq, m * dsub) folded queries; codebooks (m, 16, dsub) and books_t, the same
    transposed, as pq.lookup_tables takes them; blocked, bias_max, bias_gaps, gap_unit: the tier's
    dispatch.FastLayout;
    packed the stored codes; bias (n,) or (0,) (l2: minus the norms); qnorms (nq,) |q|^2 for l2.
    allowed: a filter's rows as fastscan.block_allow gives them (then ``width`` and ``kk`` are at
    most the admitted count; only admitted rows are scanned, so every candidate is admitted), or
    ALL_ROWS_ALLOWED (every row: the one kernel serves both). threads:
    1 for a scan too small to wake another thread (dispatch.fast_scan_threads), set for this call
    and restored; 0: the threads in effect.
    """
    previous = _use_threads(threads)
    prefetch_filter(allowed)
    nparts = scan_parts(coarse_q.shape[0], packed.shape[0], get_threads())
    lut = lookup_tables(coarse_q, codebooks, books_t)
    lut8, base, scale, margin = quantize_tables(lut)
    two_stage = fine_codes.shape[0] > 0
    scores, rows = scan_pq4_fast(lut, lut8, base, scale, margin, blocked, packed, bias, bias_max, bias_gaps, gap_unit,
                                 allowed, width, nparts, not two_stage, not two_stage)
    scores, rows = _second_stage(scores, rows, fine_q, fine_codes, fine_layout, fine_bias, fine_const, kk)
    set_threads(previous)
    return to_results(scores, rows, ids, k, l2, qnorms)


@nb.njit(**NJIT)
def search_ivf_pq4(coarse_q, codebooks, books_t, blocked, packed, bias, bias_max, bias_gaps, gap_unit, ranges, order,
                   rows_of, width, serial_work, fine_q, fine_codes, fine_layout, fine_bias, fine_const, kk, k, ids, l2,
                   qnorms):
    """:func:`search_pq4` for an inverted-file 4-bit tier: only each query's probed ``ranges`` (nq,
    nprobe, 2) of the list-ordered codes are scanned (fastscan.scan_pq4_lists, pairs in ``order``
    from fastscan.list_major), and the positions found are mapped to rows by ``rows_of`` before
    rescoring. The separate kernels' results, bit for bit, without the Python between the tables,
    the scan, the mapping, the rescoring and the ids (10M rows, 32 of 4,096 lists probed, > raw x64:
    store.search 511 -> 465 us a query).

    One query, or a scan of fewer than ``serial_work`` code bytes, runs on this thread. (Cutting
    one query's lists into runs on two threads measured faster for the scan alone, 310 -> 274 us,
    and slower in store.search, 465 -> 586 us: the second thread sleeps between queries.)"""
    previous = get_threads()
    rows = 0
    for q in range(ranges.shape[0]):
        for j in range(ranges.shape[1]):
            rows += ranges[q, j, 1] - ranges[q, j, 0]
    if ranges.shape[0] == 1 or rows * packed.shape[1] < serial_work:
        set_threads(1)
    lut = lookup_tables(coarse_q, codebooks, books_t)
    lut8, base, scale, margin = quantize_tables(lut)
    two_stage = fine_codes.shape[0] > 0
    scores, found = scan_pq4_lists(lut, lut8, base, scale, margin, blocked, packed, bias, bias_max, bias_gaps,
                                   gap_unit, ALL_ROWS_ALLOWED, ranges, order, get_threads(), width, not two_stage,
                                   not two_stage)
    for q in range(found.shape[0]):
        for j in range(found.shape[1]):
            if found[q, j] >= 0:
                found[q, j] = rows_of[found[q, j]]
    scores, found = _second_stage(scores, found, fine_q, fine_codes, fine_layout, fine_bias, fine_const, kk)
    set_threads(previous)
    return to_results(scores, found, ids, k, l2, qnorms)


@nb.njit(inline="always", **NJIT)
def _use_threads(threads):
    """Set this call's thread count to ``threads`` (0: leave it); returns the count to restore."""
    previous = get_threads()
    if threads > 0:
        set_threads(threads)
    return previous


@nb.njit(inline="always", **NJIT)
def _second_stage(scores, rows, fine_q, fine_codes, fine_layout, fine_bias, fine_const, kk):
    """The 4-bit searches' finish before the ids: a two-stage plan's candidates ``rows`` rescored on
    ``fine_codes`` in row order (a one-stage plan, ``fine_codes`` with no rows, keeps its scan's
    scores), then each query's constant added."""
    if fine_codes.shape[0] > 0:
        prefetch_rows(fine_codes, rows)  # a fine tier out of the page cache: its rows read at once
        scores, rows = rescore_serial(fine_q, fine_codes, fine_layout, rows, fine_bias, kk)
    _add_const(scores, fine_const)
    return scores, rows


@nb.njit(inline="always", **NJIT)
def _add_const(scores, const):
    """Each query's constant from its fold (``const[q]``) added to its scores, in place."""
    for q in range(scores.shape[0]):
        if const[q] != 0:
            for j in range(scores.shape[1]):
                scores[q, j] += np.float32(const[q])


def _make_search_dense(scan):
    @nb.njit(**NJIT)
    def search_dense(folded, codes, bias, const, kk, k, ids, l2, qnorms, nparts, threads):
        """(distances, ids), each (nq, k), of an exact scan of a float32 or int8 tier (``scan``:
        flat.scan_f32 or flat.scan_i8, so the results are theirs bit for bit), its constant added and
        its rows mapped in the same call: a 1,000-document store's query, on one thread, paid more
        for the Python between those steps than for the scan. ``folded`` queries in code space;
        ``threads`` as search_pq4 takes it (dispatch.serial_threads)."""
        previous = _use_threads(threads)
        scores, rows = scan(folded, codes, bias, kk, nparts)
        _add_const(scores, const)
        set_threads(previous)
        return to_results(scores, rows, ids, k, l2, qnorms)

    return search_dense


def _make_search_dense_rows(scan_rows):
    @nb.njit(**NJIT)
    def search_dense_rows(folded, codes, bias, rows, const, kk, k, ids, l2, qnorms, nparts, threads):
        """(distances, ids), each (nq, k), of an exact scan of only ``rows`` (sorted, unique) of a
        dense tier (``scan_rows``: flat.scan_*_rows, so the results are theirs bit for bit), as
        :func:`search_dense` does for every row: the exact strategy of a filtered search."""
        previous = _use_threads(threads)
        scores, found = scan_rows(folded, codes, bias, rows, kk, nparts)
        _add_const(scores, const)
        set_threads(previous)
        return to_results(scores, found, ids, k, l2, qnorms)

    return search_dense_rows


# by code layout
SEARCH_DENSE = {"f32": _make_search_dense(scan_f32), "i8": _make_search_dense(scan_i8)}
# by code layout (float16 codes as uint16 bits, as Tier.dense_codes gives them)
SEARCH_DENSE_ROWS = {"f32": _make_search_dense_rows(scan_f32_rows), "f16": _make_search_dense_rows(scan_f16_rows),
                     "i8": _make_search_dense_rows(scan_i8_rows)}
