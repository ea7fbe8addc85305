"""Asymmetric distance computation over product-quantization codes.

A query's score against a code is the sum of m lookups in its table ``lut[j, c_j]`` (plus the
optional per-row bias). Work is split into (group of queries, slice of rows) tasks. 8-bit codes are
one byte a sub-quantizer; 4-bit codes hold two, the even sub-quantizer in the low nibble (see
codecs/pq.py).

Two ways to scan: one query at a time (``scan_pq8``: m scalar lookups a row), and, for batches,
``scan_pq8_grouped``: the tables of GROUP queries are interleaved as ``T[j, c, g]`` so that one
vector load at ``T[j, c_j]`` fetches sub-quantizer j's entry for all of them; a row then costs m
vector additions for GROUP queries instead of m x GROUP scalar lookups. Both add in four chains over
j mod 4, in order, so their scores are bit-identical.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .topk import NJIT, SCALAR, merge_partial, partial_tops, reservoir_push

# The PQ scans keep their additions in order (topk.SCALAR): with "reassoc" LLVM turns the one-query
# scan's lookups into vector gathers, which were slower here than four scalar chains (one query,
# 100,000 rows, m = 48/64/96: 1.97/2.60/4.47 ms against 1.10/1.38/2.31), and in order the two scans'
# scores are equal bit for bit (numba applies the flags to the grouped scan's intrinsic too).

# Queries scanned together by one thread: their lookup tables (m x 256 floats each) must stay in
# cache while the codes stream past, so a batch is cut into small groups run in parallel.
QUERY_GROUP = 4


@nb.njit(inline="always", **SCALAR)
def _scan_rows(table, codes, m, bias, use_bias, allow, start, stop, bs, bi, sizes, thrs, q):
    """Score rows start..stop (those ``allow`` admits, when it has rows) against one query's table
    and keep the best in reservoir (bs, bi).

    One query at a time over a slice of rows: the table and reservoir views are made once per slice
    (a view costs atomic reference counting), and the slice's codes stay in cache for the next
    query of the group.
    """
    size = sizes[q]
    thr = thrs[q]
    k = bs.shape[0] // 2
    use_mask = allow.shape[0] > 0
    for row in range(start, stop):
        if use_mask and allow[row] == 0:
            continue
        acc = _lookup_sum(table, codes, row, m)
        if use_bias:
            acc += bias[row]
        if size < k or acc > thr:
            size, thr = reservoir_push(bs, bi, size, thr, k, acc, row)
    sizes[q] = size
    thrs[q] = thr


@nb.njit(inline="always", **SCALAR)
def _lookup_sum(table, codes, row, m):
    """sum_j table[j, codes[row, j]] with four independent accumulators.

    One accumulator makes every addition wait for the previous one (a latency-bound chain of m
    adds); four chains run side by side, as FAISS's PQ distance loops do.
    """
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    j = 0
    while j + 4 <= m:
        a0 += table[j, codes[row, j]]
        a1 += table[j + 1, codes[row, j + 1]]
        a2 += table[j + 2, codes[row, j + 2]]
        a3 += table[j + 3, codes[row, j + 3]]
        j += 4
    while j < m:
        a0 += table[j, codes[row, j]]
        j += 1
    return (a0 + a1) + (a2 + a3)


@nb.njit(parallel=True, **SCALAR)
def scan_pq8(lut, codes, bias, allow, k, nparts):
    """lut (nq, w, 256) float32, codes (n, w) uint8 -> best-first (scores, rows), (nq, k).

    Column j of the codes indexes table j: 8-bit PQ directly, 4-bit PQ through fused pair tables.
    ``allow``: a uint8 row mask (n,), nonzero = the row may be returned (a skipped row costs one
    byte read, no lookups; k <= the allowed count), or (0,) for every row.
    """
    nq = lut.shape[0]
    n, width = codes.shape
    use_bias = bias.shape[0] > 0
    part_s, part_i, part_sizes, part_thr = partial_tops(nparts, nq, k)
    step = (n + nparts - 1) // nparts
    ngroups = (nq + QUERY_GROUP - 1) // QUERY_GROUP
    for t in prange(ngroups * nparts):
        p = t % nparts
        q0 = (t // nparts) * QUERY_GROUP
        for q in range(q0, min(q0 + QUERY_GROUP, nq)):
            _scan_rows(lut[q], codes, width, bias, use_bias, allow, p * step, min(p * step + step, n),
                       part_s[p, q], part_i[p, q], part_sizes[p], part_thr[p], q)
    return merge_partial(part_s, part_i, part_sizes, k)



@nb.njit(parallel=True, **SCALAR)
def scan_pq8_lists(lut, codes, bias, allow, ranges, k):
    """:func:`scan_pq8` over only the rows of each query's ``ranges`` (nq, r, 2): [start, stop) pairs,
    in increasing order, of an inverted-file tier's probed lists; a query a task."""
    nq = lut.shape[0]
    width = codes.shape[1]
    use_bias = bias.shape[0] > 0
    part_s, part_i, part_sizes, part_thr = partial_tops(1, nq, k)
    for q in prange(nq):
        for r in range(ranges.shape[1]):
            _scan_rows(lut[q], codes, width, bias, use_bias, allow, ranges[q, r, 0], ranges[q, r, 1],
                       part_s[0, q], part_i[0, q], part_sizes[0], part_thr[0], q)
    return merge_partial(part_s, part_i, part_sizes, k)


@nb.njit(parallel=True, **NJIT)
def nearest_codes(x, codebooks):
    """Encode: (n, m * dsub) float32 rows -> (n, m) uint8, each sub-vector's nearest centroid of
    ``codebooks`` (m, ksub, dsub) by squared L2, the lowest index on ties. Rows in parallel; the
    distances summed directly (numpy's |x|^2 - 2 x.c + |c|^2, a product per sub-space with an inner
    dimension of 4-16, spent most of a 4096-dim encode in call overhead)."""
    n = x.shape[0]
    m, ksub, dsub = codebooks.shape
    out = np.empty((n, m), dtype=np.uint8)
    for i in prange(n):
        for j in range(m):
            best = np.float32(np.inf)
            arg = 0
            for c in range(ksub):
                acc = np.float32(0.0)
                for t in range(dsub):
                    diff = x[i, j * dsub + t] - codebooks[j, c, t]
                    acc += diff * diff
                if acc < best:
                    best = acc
                    arg = c
            out[i, j] = arg
    return out

@nb.njit(parallel=True, **NJIT)
def pair_tables(lut, width):
    """(nq, m, 16) tables -> (nq, width, 256): pair[q, i, byte] = lut[q, 2i, low] + lut[q, 2i+1, high].

    4-bit codes where the fast scan is off (kernels/fastscan.py): two neighbouring sub-quantizers
    share a byte, so their tables are fused into one 256-entry table and the codes are scanned as
    8-bit codes, one lookup a byte.
    """
    nq, m, _ = lut.shape
    pair = np.zeros((nq, width, 256), dtype=np.float32)
    for q in prange(nq):
        for i in range(width):
            for b in range(256):
                v = lut[q, 2 * i, b & 15]
                if 2 * i + 1 < m:
                    v += lut[q, 2 * i + 1, b >> 4]
                pair[q, i, b] = v
    return pair


# Queries a grouped scan serves with one vector (16 floats: one AVX-512 register, two AVX2 ones;
# LLVM splits the vector for narrower machines). Their interleaved tables take m x 16 KB.
GROUP = 16

_F32 = ir.FloatType()
_VG = ir.VectorType(_F32, GROUP)


def _data(context, builder, arrty, arr):
    return cgutils.create_struct_proxy(arrty)(context, builder, value=arr).data


@intrinsic
def _group_row(typingctx, tables, codes, row_off, m, bias, thr, out):
    """Scores of one row for GROUP queries: out[g] = sum_j tables[(j * 256 + c_j) * GROUP + g] + bias,
    c_j = codes[row_off + j]; returns the mask (uint32) of g with out[g] >= thr[g].

    Four accumulators take j = 0, 1, 2, 3 mod 4 in turn and are added as (a0 + a1) + (a2 + a3), the
    order of ``_lookup_sum``; a NaN compares false (such tables never reach this kernel).
    """
    sig = types.uint32(tables, codes, row_off, m, bias, thr, out)

    def codegen(context, builder, signature, args):
        tables_a, codes_a, row_off_v, m_v, bias_v, thr_a, out_a = args
        tp = _data(context, builder, signature.args[0], tables_a)
        cp = builder.gep(_data(context, builder, signature.args[1], codes_a), [row_off_v])
        thp = _data(context, builder, signature.args[5], thr_a)
        op = _data(context, builder, signature.args[6], out_a)
        intp = row_off_v.type
        vptr = _VG.as_pointer()
        zero = ir.Constant(_VG, [0.0] * GROUP)
        acc = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]

        def add_entry(j, a):
            c = builder.zext(builder.load(builder.gep(cp, [j])), intp)
            entry = builder.add(builder.mul(j, ir.Constant(intp, 256)), c)
            ptr = builder.gep(tp, [builder.mul(entry, ir.Constant(intp, GROUP))])
            v = builder.load(builder.bitcast(ptr, vptr), align=4)
            builder.store(builder.fadd(builder.load(a), v), a)

        quads = builder.sdiv(m_v, ir.Constant(intp, 4))
        with cgutils.for_range(builder, quads) as loop:
            j0 = builder.mul(loop.index, ir.Constant(intp, 4))
            for r in range(4):
                add_entry(builder.add(j0, ir.Constant(intp, r)), acc[r])
        with cgutils.for_range(builder, builder.sub(m_v, builder.mul(quads, ir.Constant(intp, 4)))) as loop:
            add_entry(builder.add(builder.mul(quads, ir.Constant(intp, 4)), loop.index), acc[0])
        total = builder.fadd(builder.fadd(builder.load(acc[0]), builder.load(acc[1])),
                             builder.fadd(builder.load(acc[2]), builder.load(acc[3])))
        splat = zero
        for g in range(GROUP):
            splat = builder.insert_element(splat, bias_v, ir.Constant(ir.IntType(32), g))
        total = builder.fadd(total, splat)
        builder.store(total, builder.bitcast(op, vptr), align=4)
        limit = builder.load(builder.bitcast(thp, vptr), align=4)
        above = builder.fcmp_ordered(">=", total, limit)
        return builder.zext(builder.bitcast(above, ir.IntType(GROUP)), ir.IntType(32))

    return sig, codegen


@nb.njit(parallel=True, **SCALAR)
def scan_pq8_grouped(lut, codes, bias, allow, k, nparts):
    """As :func:`scan_pq8` (the same scores and rows), GROUP queries a vector. Tables must be finite."""
    nq = lut.shape[0]
    n, width = codes.shape
    use_bias = bias.shape[0] > 0
    use_mask = allow.shape[0] > 0
    part_s, part_i, part_sizes, part_thr = partial_tops(nparts, nq, k)
    step = (n + nparts - 1) // nparts
    ngroups = (nq + GROUP - 1) // GROUP
    flat_codes = codes.reshape(-1)
    for task in prange(ngroups * nparts):
        p = task % nparts
        q0 = (task // nparts) * GROUP
        q1 = min(q0 + GROUP, nq)
        tables = np.zeros(width * 256 * GROUP, dtype=np.float32)
        for j in range(width):
            for c in range(256):
                for q in range(q0, q1):
                    tables[(j * 256 + c) * GROUP + q - q0] = lut[q, j, c]
        # rows must reach limit[g] to be offered: -inf while a reservoir is short, +inf for no query
        limit = np.full(GROUP, np.inf, dtype=np.float32)
        for q in range(q0, q1):
            limit[q - q0] = part_thr[p, q] if part_sizes[p, q] >= k else -np.inf
        scores = np.empty(GROUP, dtype=np.float32)
        for row in range(p * step, min(p * step + step, n)):
            if use_mask and allow[row] == 0:
                continue
            b = bias[row] if use_bias else np.float32(0.0)
            mask = _group_row(tables, flat_codes, row * width, width, b, limit, scores)
            if mask == 0:
                continue
            for g in range(q1 - q0):
                if (mask >> np.uint32(g)) & np.uint32(1):
                    q = q0 + g
                    size = part_sizes[p, q]
                    thr = part_thr[p, q]
                    acc = scores[g]
                    if size < k or acc > thr:
                        size, thr = reservoir_push(part_s[p, q], part_i[p, q], size, thr, k, acc, row)
                        part_sizes[p, q] = size
                        part_thr[p, q] = thr
                        if size >= k:
                            limit[g] = thr
    return merge_partial(part_s, part_i, part_sizes, k)


# Sub-vectors shorter than this are looked up from the transposed codebooks (see lookup_tables).
TRANSPOSED_BELOW = 8


@nb.njit(**NJIT)
def lookup_tables(xq, codebooks, books_t):
    """(nq, m, ksub) float32 tables ``q_j . codebooks[j, c]`` on the calling thread, for a few
    queries (a BLAS call or a parallel region costs more than the 6K multiply-adds of one query's
    tables at 384 dims; the fused single-query search computes them here too, so both agree to the bit).

    ``books_t``: the same codebooks transposed to (m, dsub, ksub) (codecs.pq.PQ.table_codebooks).
    Short sub-vectors are read from them, so that the innermost loop runs over a table's ksub
    entries in one vector; long ones from ``codebooks``, where the loop over a sub-vector is the
    vector. One query: 96 x 16 tables of 4 dims 2.9 us a call from ``codebooks``, 1.2 us from
    ``books_t``; 128 x 16 tables of 32 dims 4.2 us and 9.0 us."""
    nq = xq.shape[0]
    m, ksub, dsub = codebooks.shape
    out = np.zeros((nq, m, ksub), dtype=np.float32)
    for q in range(nq):
        for j in range(m):
            if dsub < TRANSPOSED_BELOW:
                for t in range(dsub):
                    x = xq[q, j * dsub + t]
                    for c in range(ksub):
                        out[q, j, c] += x * books_t[j, t, c]
            else:
                for c in range(ksub):
                    acc = np.float32(0.0)
                    for t in range(dsub):
                        acc += xq[q, j * dsub + t] * codebooks[j, c, t]
                    out[q, j, c] = acc
    return out
