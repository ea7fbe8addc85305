"""4-bit PQ scans with the lookup tables in SIMD registers (FAISS's "fast scan", André et al. 2015).

A 4-bit sub-quantizer's table has 16 entries: quantised to bytes it fits in a register, and one
byte shuffle looks up a register's worth of codes at once. Numba has no such instruction, so
``_block_sums`` emits it through LLVM (an ``@intrinsic``); the rest is ordinary numba. Two variants,
chosen by the CPU numba compiles for (:func:`simd_layout`):

- ``vbmi`` (AVX-512 VBMI: Ice Lake, Sapphire Rapids, Zen 4 ...): ``vpermb`` looks up 64 bytes in a
  64-byte table and ignores the top two bits of each index, so the low nibble needs no masking when
  the 16-entry table is repeated four times. Blocks of 128 rows.
- ``avx2``: ``vpshufb`` on 256-bit registers, each 16-byte lane holding one sub-quantizer's table.
  Blocks of 32 rows.

Layout (built in RAM from the stored codes, :func:`to_blocked`): rows in blocks of BLOCK (the last
padded with zero codes), sub-quantizers padded with zero codes to a multiple of SQ_STEP (``msq``). With
HALF = BLOCK / 2, sub-quantizer j of block b takes HALF bytes at ``(b * msq + j) * HALF``: byte t
holds its code for row ``b * BLOCK + t`` (low nibble) and row ``b * BLOCK + HALF + t`` (high
nibble). A query's table j takes HALF bytes at ``j * HALF``: its 16 quantised entries, repeated
HALF / 16 times (once for avx2, whose lanes are 16 bytes).

Quantisation: table j is shifted by its minimum and all tables are scaled by one factor so that
the widest spans 0..LEVELS (127: two sub-quantizers' bytes are added before they are widened to 16
bits, which saves a third of the additions); a row's integer sum S then satisfies
``|score - (base + S / scale)| <= m / (2 scale)``. The scan keeps exact float scores: a row is scored
exactly (from the stored codes and the float tables) only when that bound says it could beat the
k-th best so far, so results are the float scan's.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

from .prefetch import CACHE_LINE, prefetch_line
from .target import target_features
from .topk import NJIT, SCALAR, TIES_ADMITTED, merge_partial, partial_tops, reservoir_offer, reservoir_push


def simd_layout() -> str:
    """"vbmi", "avx2" or "" (neither: 4-bit codes are then scanned by kernels/pq.py).

    Decided by the CPU numba compiles for, which also keys numba's on-disk cache: the host's features,
    or those NUMBA_CPU_NAME / NUMBA_CPU_FEATURES name (e.g. ``NUMBA_CPU_NAME=haswell
    NUMBA_CPU_FEATURES=+avx2`` for AVX2, ``NUMBA_CPU_NAME=generic`` for none).
    """
    found = target_features()
    if {"avx512bw", "avx512vbmi"} <= found:
        return "vbmi"
    return "avx2" if "avx2" in found else ""


LAYOUT = simd_layout()
BLOCK = 128 if LAYOUT == "vbmi" else 32
HALF = BLOCK // 2
# The mask word of a block's rows when every row is a candidate.
ALL_ROWS = (1 << min(BLOCK, 64)) - 1
# Table levels 0..127: two sub-quantizers' bytes can be added before they are widened.
LEVELS = 127
# Sub-quantizers one step of the block kernel takes (a block's count is padded to a multiple).
SQ_STEP = 2 if LAYOUT == "vbmi" else 4
# Sub-quantizers summed in one pass: a row's sum stays below 2**16 (256 x 127, and each lane's partial
# sums below 2**16 too).
SQ_PER_PASS = 256
# Queries scanned together: their tables (m x HALF bytes) stay in L1 while a slice of blocks stays
# in L2 for all of them.
QUERY_GROUP = 8
SLICE_ROWS = 2048
# Work units (rows x code bytes) a scan must reach per work unit of the float scan's threshold
# (dispatch.SERIAL_WORK) before it takes every thread. A parallel region must wake the other threads,
# which sleep between queries that arrive with gaps (OpenMP's passive wait, or any pause longer than
# its spin): one query of pq96x4 > raw x4 over 100,000 x 384, a FAISS query between each, took
# 117-121 us on one thread against 201-251 us on two (FAISS's fast scan, single-threaded for one
# query: 96-103 us). From about 10 M units (a one-thread scan of ~0.35 ms) two threads win.
SPEEDUP = 5

# A candidate scan (exact=False) first sums the rows of a sample of its blocks, this many rows (or
# 16 per candidate), at most 1 / SAMPLE_SHARE of them, and starts its reservoir at the score the
# sample's k-th best row reaches (:func:`_sample_floor`): the reservoir then admits about half as
# many rows, since most admissions come while an empty reservoir's threshold climbs (384-d pq96x4,
# 100,000 rows, 30 candidates: 365 admissions and 11 compactions a query, 215 and 6 with a sample).
SAMPLE_ROWS = 1024
SAMPLE_SHARE = 8
# The sample's scores are counted in buckets of 2**FLOOR_SHIFT integer units (the floor is the
# lower edge of the k-th best's bucket: a little low, never too high).
FLOOR_SHIFT = 4
FLOOR_BUCKETS = (LEVELS * SQ_PER_PASS >> FLOOR_SHIFT) + 1
# Slots the lowest bucket's rows are counted in, in turn, and never read (a power of two).
SPARE_BUCKETS = 8

_I8, _I16, _I32, _I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)


def _data(context, builder, arrty, arr):
    return cgutils.create_struct_proxy(arrty)(context, builder, value=arr).data


def _vector_consts(vbytes, vwords):
    return (ir.Constant(vbytes, [15] * vbytes.count), ir.Constant(vwords, [4] * vwords.count),
            ir.Constant(vwords, [8] * vwords.count))


def _accumulate(builder, looked, words, odd, vwords, eight):
    """Add a vector of bytes into uint16 sums: ``words`` += each byte pair as one word (low + 256 x
    high), ``odd`` += the high bytes; the low bytes' sums are ``words - (odd << 8)``."""
    w = builder.bitcast(looked, vwords)
    builder.store(builder.add(builder.load(words), w), words)
    builder.store(builder.add(builder.load(odd), builder.lshr(w, eight)), odd)


def _even_odd(builder, words, odd, eight):
    o = builder.load(odd)
    return builder.sub(builder.load(words), builder.shl(o, eight)), o


def _splat16(builder, value, count):
    vec = builder.load(cgutils.alloca_once_value(builder, ir.Constant(ir.VectorType(_I16, count), [0] * count)))
    for lane in range(count):
        vec = builder.insert_element(vec, value, ir.Constant(_I32, lane))
    return vec


def _summed_steps(builder, cp, lp, n, vb, vw, sq_per_load, lookup):
    """The block kernels' loop over ``n`` sub-quantizers: each step loads two registers of codes and
    of tables (``sq_per_load`` sub-quantizers each), looks both up (``lookup(codes, table)`` -> bytes
    of the low-nibble rows, bytes of the high-nibble rows), adds the two loads' bytes (<= 127 each)
    and widens the sums into uint16 accumulators: [words, odd] of the low rows, then of the high."""
    eight = ir.Constant(vw, [8] * vw.count)
    acc = [cgutils.alloca_once_value(builder, ir.Constant(vw, [0] * vw.count)) for _ in range(4)]
    intp = n.type
    with cgutils.for_range(builder, builder.sdiv(n, ir.Constant(intp, 2 * sq_per_load))) as loop:
        low = high = None
        for r in range(2):
            off = builder.mul(builder.add(builder.mul(loop.index, ir.Constant(intp, 2)), ir.Constant(intp, r)),
                              ir.Constant(intp, vb.count))
            c = builder.load(builder.bitcast(builder.gep(cp, [off]), vb.as_pointer()), align=1)
            table = builder.load(builder.bitcast(builder.gep(lp, [off]), vb.as_pointer()), align=1)
            lo, hi = lookup(c, table)
            low = lo if low is None else builder.add(low, lo)
            high = hi if high is None else builder.add(high, hi)
        _accumulate(builder, low, acc[0], acc[1], vw, eight)
        _accumulate(builder, high, acc[2], acc[3], vw, eight)
    return acc


def _row_limits(builder, limit, gp, first, factor):
    """Each row's limit: ``limit`` (a vector of the block's cut) plus the row's gap below the block's
    largest bias in integer units, ``(gap x factor) >> 8`` (gaps: uint8 from ``gp[first:]``, one a
    row), saturating at 65535 (a sum never exceeds that)."""
    lanes = limit.type.count
    vb, vw, vd = ir.VectorType(_I8, lanes), ir.VectorType(_I16, lanes), ir.VectorType(_I32, lanes)
    gaps = builder.load(builder.bitcast(builder.gep(gp, [ir.Constant(_I32, first)]), vb.as_pointer()), align=1)
    # (gap << 8) x factor >> 16, as one unsigned high-half multiply
    high = builder.mul(builder.zext(builder.shl(builder.zext(gaps, vw), ir.Constant(vw, [8] * lanes)), vd),
                       builder.zext(_splat16(builder, factor, lanes), vd))
    raised = builder.trunc(builder.lshr(high, ir.Constant(vd, [16] * lanes)), vw)
    add = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vw, [vw, vw]), f"llvm.uadd.sat.v{lanes}i16")
    return builder.call(add, [limit, raised])


def _codegen_vbmi(builder, cp, lp, n, cut, op, mp, ap, gp, factor):
    """Steps of two sub-quantizers x 128 rows: per sub-quantizer one 64-byte load of codes, ``vpermb``
    of the low nibbles and of the word-shifted high nibbles; the two sub-quantizers' bytes (<= 127
    each) are added before widening."""
    vb, vw = ir.VectorType(_I8, 64), ir.VectorType(_I16, 32)
    perm = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vb, [vb, vb]),
                                          "llvm.x86.avx512.permvar.qi.512")
    _, four, eight = _vector_consts(vb, vw)

    def lookup(c, table):
        return (builder.call(perm, [table, c]),
                builder.call(perm, [table, builder.bitcast(builder.lshr(builder.bitcast(c, vw), four), vb)]))

    acc = _summed_steps(builder, cp, lp, n, vb, vw, 1, lookup)
    interleave = ir.Constant(ir.VectorType(_I32, 64), [x for e in range(32) for x in (e, 32 + e)])
    limit = _splat16(builder, cut, 64)
    zero = ir.Constant(ir.VectorType(_I16, 64), [0] * 64)
    any_mask = ir.Constant(_I64, 0)
    for half, (words, odd) in enumerate((acc[0:2], acc[2:4])):
        even, o = _even_odd(builder, words, odd, eight)
        allowed = builder.load(builder.gep(ap, [ir.Constant(_I32, half)]))
        rows = builder.select(builder.bitcast(allowed, ir.VectorType(ir.IntType(1), 64)),
                              builder.shuffle_vector(even, o, interleave), zero)
        builder.store(rows, builder.bitcast(builder.gep(op, [ir.Constant(_I32, 64 * half)]), rows.type.as_pointer()),
                      align=1)
        above = limit if gp is None else _row_limits(builder, limit, gp, 64 * half, factor)
        mask = builder.and_(builder.bitcast(builder.icmp_unsigned(">", rows, above), _I64), allowed)
        builder.store(mask, builder.gep(mp, [ir.Constant(_I32, half)]))
        any_mask = builder.or_(any_mask, mask)
    return any_mask


def _codegen_avx2(builder, cp, lp, n, cut, op, mp, ap, gp, factor):
    """Steps of four sub-quantizers x 32 rows: two 32-byte loads (lane 0 one sub-quantizer, lane 1
    the next), ``vpshufb`` of the low and of the high nibbles, the two loads' bytes (<= 127 each)
    added before widening; the lanes are added at the end."""
    vb, vw = ir.VectorType(_I8, 32), ir.VectorType(_I16, 16)
    shuffle = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vb, [vb, vb]), "llvm.x86.avx2.pshuf.b")
    nibble, four, eight = _vector_consts(vb, vw)

    def lookup(c, table):
        high = builder.bitcast(builder.lshr(builder.bitcast(c, vw), four), vb)
        return (builder.call(shuffle, [table, builder.and_(c, nibble)]),
                builder.call(shuffle, [table, builder.and_(high, nibble)]))

    acc = _summed_steps(builder, cp, lp, n, vb, vw, 2, lookup)
    v8 = ir.VectorType(_I32, 8)
    lane0, lane1 = ir.Constant(v8, list(range(8))), ir.Constant(v8, list(range(8, 16)))
    interleave = ir.Constant(ir.VectorType(_I32, 16), [x for e in range(8) for x in (e, 8 + e)])
    limit = _splat16(builder, cut, 16)
    zero = ir.Constant(ir.VectorType(_I16, 16), [0] * 16)
    word = builder.load(ap)
    mask = ir.Constant(_I64, 0)
    for half, (words, odd) in enumerate((acc[0:2], acc[2:4])):
        even, o = _even_odd(builder, words, odd, eight)
        even_rows = builder.add(builder.shuffle_vector(even, even, lane0), builder.shuffle_vector(even, even, lane1))
        odd_rows = builder.add(builder.shuffle_vector(o, o, lane0), builder.shuffle_vector(o, o, lane1))
        allowed = builder.trunc(builder.lshr(word, ir.Constant(_I64, 16 * half)), _I16)
        rows = builder.select(builder.bitcast(allowed, ir.VectorType(ir.IntType(1), 16)),
                              builder.shuffle_vector(even_rows, odd_rows, interleave), zero)
        builder.store(rows, builder.bitcast(builder.gep(op, [ir.Constant(_I32, 16 * half)]), rows.type.as_pointer()),
                      align=1)
        row_limit = limit if gp is None else _row_limits(builder, limit, gp, 16 * half, factor)
        above = builder.zext(builder.and_(builder.bitcast(builder.icmp_unsigned(">", rows, row_limit), _I16),
                                          allowed), _I64)
        mask = builder.or_(mask, builder.shl(above, ir.Constant(_I64, 16 * half)))
    builder.store(mask, mp)
    return mask


@intrinsic
def _block_sums(typingctx, codes, code_off, lut, lut_off, nsq, cut, out, masks, allow, allow_off):
    """Integer scores of one block's BLOCK rows over ``nsq`` (a multiple of SQ_STEP) sub-quantizers: stored to
    out[0:BLOCK] (uint16, row order); bit t of masks[t // 64] (uint64) set where row t scores above
    ``cut`` (uint16). Returns the masks OR-ed together, so a block with no candidate costs one test.

    ``allow[allow_off:]``: the block's filter words (bit t: row t admitted; :func:`_filter_words`):
    a row not admitted is stored as 0 and is never in the masks. A filter then costs a scan two
    loads and two masked moves a block, no branch and no row-by-row test, and a block holds a
    candidate only when an admitted row scores above the cut (AND-ing the filter after the scan
    had walked the blocks where any row did: 384-d pq96x4 > raw x4 over 100,000 rows, the scan of
    one query with a 50% filter 1.045x the unfiltered one's time, 1.004x so)."""
    sig = types.uint64(codes, code_off, lut, lut_off, nsq, cut, out, masks, allow, allow_off)

    def codegen(context, builder, signature, args):
        return _emit_block_sums(context, builder, signature, args)

    return sig, codegen


@intrinsic
def _block_sums_limited(typingctx, codes, code_off, lut, lut_off, nsq, cut, out, masks, allow, allow_off, gaps,
                        gap_off, factor):
    """:func:`_block_sums` with a limit per row: row t is in the masks where its sum exceeds ``cut``
    plus ``(gaps[gap_off + t] x factor) >> 8`` (uint8 gaps, uint16 factor; saturating). A scan with a
    bias (an l2 store) cuts a block with its largest bias; a row whose own bias is lower by g needs a
    sum higher by g x scale (:func:`bias_gaps`). With one cut a block, an l2 store's 4-bit scan of
    384-d unit vectors (bias spanning 0.30) walked 2-2.5x the blocks and 3x the rows a cosine
    store's does."""
    sig = types.uint64(codes, code_off, lut, lut_off, nsq, cut, out, masks, allow, allow_off, gaps, gap_off, factor)

    def codegen(context, builder, signature, args):
        return _emit_block_sums(context, builder, signature, args)

    return sig, codegen


def _emit_block_sums(context, builder, signature, args):
    """The code of :func:`_block_sums` (10 arguments) or :func:`_block_sums_limited` (13)."""
    codes_a, code_off_v, lut_a, lut_off_v, n, cut_v, out_a, masks_a, allow_a, allow_off_v = args[:10]
    cp = builder.gep(_data(context, builder, signature.args[0], codes_a), [code_off_v])
    lp = builder.gep(_data(context, builder, signature.args[2], lut_a), [lut_off_v])
    op = _data(context, builder, signature.args[6], out_a)
    mp = _data(context, builder, signature.args[7], masks_a)
    ap = builder.gep(_data(context, builder, signature.args[8], allow_a), [allow_off_v])
    gp = factor = None
    if len(args) > 10:
        gp = builder.gep(_data(context, builder, signature.args[10], args[10]), [args[11]])
        factor = args[12]
    emit = _codegen_vbmi if LAYOUT == "vbmi" else _codegen_avx2
    return emit(builder, cp, lp, n, cut_v, op, mp, ap, gp, factor)


@nb.njit(inline="always", **NJIT)
def padded_subquantizers(m):
    """Sub-quantizers a block holds: m rounded up to a whole number of steps (zero codes pad)."""
    return (m + SQ_STEP - 1) // SQ_STEP * SQ_STEP


@nb.njit(parallel=True, **NJIT)
def to_blocked(packed, m):
    """Stored 4-bit codes (n, ceil(m / 2)), two a byte (even sub-quantizer low) -> the blocked
    layout (flat uint8, see the module docstring)."""
    n = packed.shape[0]
    msq = padded_subquantizers(m)
    nblocks = (n + BLOCK - 1) // BLOCK
    out = np.zeros(nblocks * msq * HALF, dtype=np.uint8)
    for b in prange(nblocks):
        for t in range(HALF):
            r0 = b * BLOCK + t
            r1 = r0 + HALF
            for j in range(m):
                shift = 4 * (j & 1)
                lo = (packed[r0, j >> 1] >> shift) & 15 if r0 < n else 0
                hi = (packed[r1, j >> 1] >> shift) & 15 if r1 < n else 0
                out[(b * msq + j) * HALF + t] = lo | (hi << 4)
    return out


@nb.njit(parallel=True, **NJIT)
def block_max(bias, n):
    """Largest bias of each block of rows (NaN counts as +inf: such rows are always scored exactly)."""
    nblocks = (n + BLOCK - 1) // BLOCK
    out = np.full(nblocks, -np.inf)
    for b in prange(nblocks):
        for r in range(b * BLOCK, min(b * BLOCK + BLOCK, n)):
            v = np.float64(bias[r])
            if v != v:
                v = np.inf
            out[b] = max(out[b], v)
    return out


def bias_bounds(bias, n):
    """(bias_max, bias_gaps, gap_unit), what the scans take beside a ``bias`` of ``n`` rows
    (:func:`block_max`, :func:`bias_gaps`); empty arrays and 0.0 with no bias."""
    if not bias.shape[0]:
        return np.empty(0), np.empty(0, dtype=np.uint8), 0.0
    bias_max = block_max(bias, n)
    return (bias_max, *bias_gaps(bias, bias_max, n))


GAP_LEVELS = 255
# The gap unit covers all finite gaps but the largest 0.1% (at least one) in GAP_LEVELS steps, found
# in a histogram of log2(gap) in eighths of a power of two (a unit at most 9% coarser than needed);
# larger gaps are kept as GAP_LEVELS (less than theirs: safe). One outlying norm, made the whole
# range, would have left every other row's gap 0.
GAP_BINS_PER_OCTAVE = 8
GAP_MIN_EXPONENT = -160
GAP_BINS = (1100 - GAP_MIN_EXPONENT) * GAP_BINS_PER_OCTAVE


@nb.njit(inline="always", **NJIT)
def _row_gap(bias, bias_max, r):
    """Row r's bias below its block's largest, or -1.0 when not finite (a NaN bias, a block whose
    largest is +inf, a row of -inf). (np.isfinite, under the kernels' fastmath flags, passed +inf.)"""
    gap = bias_max[r // BLOCK] - np.float64(bias[r])
    return gap if abs(gap) < np.inf else -1.0


@nb.njit(inline="always", **NJIT)
def _gap_bin(gap):
    """The log2 histogram bin of a gap > 0 (gaps below 2**GAP_MIN_EXPONENT share the first)."""
    return min(GAP_BINS - 1, max(0, np.int64(np.floor((np.log2(gap) - GAP_MIN_EXPONENT) * GAP_BINS_PER_OCTAVE))))


@nb.njit(**NJIT)
def bias_gaps(bias, bias_max, n):
    """Each row's bias below its block's largest (``bias_max`` from :func:`block_max`) as a uint8
    count of ``unit``s, rounded down and at most GAP_LEVELS: (gaps (nblocks x BLOCK,), unit); unit
    0.0 when no row has a gap. Rows whose gap is not finite and the padding rows get 0. What
    :func:`_block_sums_limited` raises each row's cut by, at most the row's true gap: a row is
    never dropped that its own bias would keep."""
    nblocks = (n + BLOCK - 1) // BLOCK
    gaps = np.zeros(nblocks * BLOCK, dtype=np.uint8)
    counts = np.zeros(GAP_BINS, dtype=np.int64)
    widest = 0.0
    total = 0
    zero = 0
    for r in range(n):
        gap = _row_gap(bias, bias_max, r)
        if gap < 0.0:  # (not finite)
            continue
        total += 1
        if gap > 0.0:
            counts[_gap_bin(gap)] += 1
            widest = max(widest, gap)
        else:
            zero += 1
    if widest <= 0.0:
        return gaps, 0.0
    keep = total - max(1, total // 1000)
    covered = zero
    top = GAP_BINS - 1
    for i in range(GAP_BINS):
        if covered >= keep:
            break
        covered += counts[i]
        top = i
    edge = 2.0 ** ((top + 1) / GAP_BINS_PER_OCTAVE + GAP_MIN_EXPONENT)
    unit = min(edge, widest) / GAP_LEVELS
    for r in range(n):
        gap = _row_gap(bias, bias_max, r)
        if gap > 0.0:
            steps = gap / unit
            g = GAP_LEVELS if steps >= GAP_LEVELS else np.int64(steps)  # (a huge float -> int64 overflows)
            while g > 0 and g * unit > gap:
                g -= 1
            gaps[r] = g
    return gaps, unit


@nb.njit(inline="always", **NJIT)
def _usable_gap_unit(bias_gaps, gap_unit, n):
    """``gap_unit``, or 0.0 (no gaps read) when ``bias_gaps`` is shorter than the blocks of ``n``
    rows: :func:`_block_sums_limited` reads BLOCK gaps a block unchecked."""
    return gap_unit if bias_gaps.shape[0] >= (n + BLOCK - 1) // BLOCK * BLOCK else 0.0


@nb.njit(inline="always", **NJIT)
def _gap_factor(unit, scale):
    """The uint16 factor :func:`_block_sums_limited` turns a row's gap into integer units with
    (``(gap x factor) >> 8``): at most unit x scale x 256, so a raised cut never exceeds the row's
    own; 0 without gaps."""
    f = np.floor(unit * scale * 256.0 * (1.0 - 1e-12))
    return np.uint16(min(65535.0, max(0.0, f)))


@nb.njit(inline="always", **NJIT)
def _quantize_one(lut, q, lut8, base, scale, margin):
    """Query q's tables quantised (docs/format.md, "Candidates of a 4-bit PQ tier"). Each table's
    minimum is kept from the first pass and its 16 levels are made before they are repeated: one
    query's 96 tables took 4.3 us a call, 3.6 us so (the same bytes)."""
    m = lut.shape[1]
    lows = np.empty(m)
    levels = np.empty(16, dtype=np.uint8)
    widest = 0.0
    mass = 0.0
    for j in range(m):
        lo = np.float64(lut[q, j, 0])
        hi = lo
        big = 0.0
        for c in range(16):
            v = np.float64(lut[q, j, c])
            lo = min(lo, v)
            hi = max(hi, v)
            big = max(big, abs(v))
        lows[j] = lo
        base[q] += lo
        mass += big
        widest = max(widest, hi - lo)
    sc = LEVELS / widest if widest > 0 else 1.0
    scale[q] = sc
    margin[q] = 1e-6 * m * mass
    for j in range(m):
        lo = lows[j]
        for c in range(16):
            levels[c] = np.uint8(min(LEVELS, np.floor((np.float64(lut[q, j, c]) - lo) * sc + 0.5)))
        for r in range(0, HALF, 16):
            for c in range(16):
                lut8[q, j * HALF + r + c] = levels[c]


@nb.njit(inline="always", **NJIT)
def _empty_tables(nq, m):
    return (np.zeros((nq, padded_subquantizers(m) * HALF), dtype=np.uint8), np.zeros(nq), np.ones(nq),
            np.zeros(nq))


@nb.njit(**NJIT)
def quantize_tables(lut):
    """Float tables (nq, m, 16) -> (byte tables (nq, msq * HALF), base (nq,), scale (nq,), margin (nq,)).

    margin bounds, in score units, the float32 rounding of an exact score (m additions) so the
    filter never drops a row the exact scan would keep. Tables must be finite.
    """
    lut8, base, scale, margin = _empty_tables(lut.shape[0], lut.shape[1])
    for q in range(lut.shape[0]):
        _quantize_one(lut, q, lut8, base, scale, margin)
    return lut8, base, scale, margin


@nb.njit(parallel=True, **NJIT)
def quantize_tables_parallel(lut):
    """:func:`quantize_tables` on every thread, for batches (a parallel region costs tens of
    microseconds to start, more than one query's tables take)."""
    lut8, base, scale, margin = _empty_tables(lut.shape[0], lut.shape[1])
    for q in prange(lut.shape[0]):
        _quantize_one(lut, q, lut8, base, scale, margin)
    return lut8, base, scale, margin


@nb.njit(**SCALAR)
def _exact(table, packed, row, width, m):
    """Float score of one row from its stored bytes: sum_j table[j, c_j], four accumulators, added
    in this order whatever the scan around it is compiled with (topk.SCALAR; not inlined, which
    would give it the scan's flags): a process that compiled the scan and one that loaded it from
    numba's cache reported distances differing in their last bit."""
    a0 = np.float32(0.0)
    a1 = np.float32(0.0)
    a2 = np.float32(0.0)
    a3 = np.float32(0.0)
    i = 0
    while i + 2 <= width:
        b0 = packed[row, i]
        b1 = packed[row, i + 1]
        a0 += table[2 * i, b0 & 15]
        a1 += table[2 * i + 2, b1 & 15]
        a2 += table[2 * i + 1, b0 >> 4]
        if 2 * i + 3 < m:
            a3 += table[2 * i + 3, b1 >> 4]
        i += 2
    if i < width:
        b0 = packed[row, i]
        a0 += table[2 * i, b0 & 15]
        if 2 * i + 1 < m:
            a1 += table[2 * i + 1, b0 >> 4]
    return (a0 + a1) + (a2 + a3)


@nb.njit(inline="always", **NJIT)
def _candidates(blocked, b, msq, lut8, lut_off, cut, sums, chunk, masks, allow, allow_off, gaps, factor):
    """Integer scores of block b and the masks of rows scoring above ``cut`` (a float: below 0 every
    row is a candidate, admitted by ``allow`` or not), raised row by row by ``gaps`` x ``factor``
    when factor > 0 (:func:`_block_sums_limited`); returns whether any row is one. The scores
    (0 for rows ``allow`` does not admit) are left in chunk[0:BLOCK] when one pass sums every
    sub-quantizer (msq <= SQ_PER_PASS: read them with :func:`_sum_of`), else in
    sums[0:BLOCK], summed pass by pass."""
    words = masks.shape[0]
    if msq <= SQ_PER_PASS:
        if cut >= 65535.0:
            return False  # no row can score above: the block is skipped unread
        limit = np.uint16(max(cut, 0.0))
        if factor > 0:
            found = _block_sums_limited(blocked, b * msq * HALF, lut8, lut_off, msq, limit, chunk, masks, allow,
                                        allow_off, gaps, b * BLOCK, factor)
        else:
            found = _block_sums(blocked, b * msq * HALF, lut8, lut_off, msq, limit, chunk, masks, allow, allow_off)
        if found == 0 and cut >= 0:
            return False
        if cut < 0:
            for w in range(words):
                masks[w] = np.uint64(ALL_ROWS)
        return True
    for t in range(BLOCK):
        sums[t] = 0
    for j0 in range(0, msq, SQ_PER_PASS):
        _block_sums(blocked, (b * msq + j0) * HALF, lut8, lut_off + j0 * HALF, min(SQ_PER_PASS, msq - j0),
                    np.uint16(65535), chunk, masks, allow, allow_off)
        for t in range(BLOCK):
            sums[t] += chunk[t]
    found = False
    for w in range(words):
        masks[w] = 0
    for t in range(BLOCK):
        if sums[t] > cut:
            masks[t >> 6] |= np.uint64(1) << np.uint64(t & 63)
            found = True
    return found


@nb.njit(inline="always", **NJIT)
def _sum_of(sums, chunk, msq, t):
    """Row t's integer score, where :func:`_candidates` left it. (Copying a block's 128 scores to
    ``sums`` cost a 384-d pq96x4 query's scan 4 us: half of its blocks hold a candidate.)"""
    if msq <= SQ_PER_PASS:
        return np.int64(chunk[t])
    return sums[t]


@nb.njit(inline="always", **NJIT)
def _cut(thr, base, margin, scale, slack, bias_max, b, use_bias):
    """Integer score a row must exceed to possibly beat ``thr`` (float: compare sums > cut)."""
    top = thr - base - margin
    if use_bias:
        top -= bias_max[b]
    return top * scale - slack


@nb.njit(inline="always", **NJIT)
def _reservoir_cut(size, thr, k, base, margin, scale, slack, bias_max, floor):
    """The cut a scan holds for a reservoir of ``size`` rows and threshold ``thr``: ``floor``
    (:func:`_sample_floor`, or -1.0: every row) until it holds k rows, then :func:`_cut` of its
    threshold, never below ``floor``. What a scan resumes a reservoir with and what it updates after
    each admission. (A scan with a bias reads none of it: each block's cut comes from the threshold
    and the score floor with the block's largest bias, :func:`_scan_block`.)"""
    if size < k:
        return floor
    return max(_cut(thr, base, margin, scale, slack, bias_max, 0, False), floor)


@nb.njit(inline="always", **NJIT)
def _scan_block(b, lo, hi, table, packed, width, m, blocked, msq, flat8, lut_off, base, scale, margin, slack,
                bias_info, use_bias, allow, use_mask, sums, chunk, masks, bs, bi, state, k, exact, floor):
    """One query over block b's rows in lo..hi: the candidates its quantised sums admit are scored
    (exactly, or by those sums) into the reservoir (bs, bi) (topk.reservoir_offer: blocks may come
    in any order). ``state``: the reservoir's (size, threshold, threshold row, cut), returned
    updated (one tuple: a call of more than 30 arguments compiles to a *args call numba cannot inline).
    ``floor``: without a bias, the cut never goes below it (:func:`_sample_floor`; -1.0: none);
    with one, a score no row below which can be among the k best (:func:`_sample_score_floor`;
    -inf: none), turned into each block's cut with the block's largest bias. ``bias_info``: (bias,
    bias_max, gaps, factor): the rows' biases, each block's largest (:func:`block_max`), each row's
    gap below it and the query's :func:`_gap_factor` (0: one cut a block)."""
    size, thr, thr_row, cut = state
    bias, bias_max, gaps, factor = bias_info
    words = masks.shape[0]
    allow_off = b * words if use_mask else 0
    if use_mask:
        any_allowed = np.uint64(0)
        for w in range(words):
            any_allowed |= allow[allow_off + w]
        if any_allowed == 0:
            return size, thr, thr_row, cut
    block_cut = cut
    if use_bias:
        block_cut = _cut(max(thr, floor) if size >= k else floor, base, margin, scale, slack, bias_max, b, True)
    if not _candidates(blocked, b, msq, flat8, lut_off, block_cut, sums, chunk, masks, allow, allow_off, gaps, factor):
        return size, thr, thr_row, cut
    for w in range(words):
        bits = masks[w] & allow[allow_off + w]
        while bits != 0:
            t = w * 64 + trailing_zeros(bits)
            bits &= bits - np.uint64(1)
            row = b * BLOCK + t
            if row >= hi:
                break
            if row < lo:
                continue
            # the threshold may have risen since the block's masks were taken
            total = _sum_of(sums, chunk, msq, t)
            if size >= k and total <= _cut(thr, base, margin, scale, slack, bias_max, b, use_bias):
                continue
            if exact:
                acc = _exact(table, packed, row, width, m)
            else:
                acc = np.float32(base + total / scale)
            if use_bias:
                acc += bias[row]
            if size < k or acc > thr or (acc == thr and row < thr_row):
                size, thr, thr_row = reservoir_offer(bs, bi, size, thr, thr_row, k, acc, row)
                cut = _reservoir_cut(size, thr, k, base, margin, scale, slack, bias_max, floor)
    return size, thr, thr_row, cut


@nb.njit(inline="always", **NJIT)
def _filter_words(allowed, use_mask):
    """The filter words the block kernels read, flat: block b's at ``b * words`` (``allowed``
    from :func:`block_allow`); with no filter, one block's worth of ones, read at 0 for every block."""
    if use_mask:
        return allowed.reshape(-1)
    return np.full(max(1, BLOCK // 64), np.uint64(ALL_ROWS))


@nb.njit(inline="always", **NJIT)
def prefetch_filter(allowed):
    """Request every cache line of a filter's words (:func:`block_allow`; none for
    ALL_ROWS_ALLOWED), so that they arrive while the query's tables are made: an unfiltered scan
    between two filtered ones evicts them (12.5 KB for 100,000 rows), and the scan then waited for
    them. One query of 384-d pq96x4 > raw x4 over 100,000 rows, alternating with unfiltered ones:
    the fused call with a 50% filter took 0.6-0.8 us longer than without, 0.1-0.3 us so."""
    per_line = max(1, CACHE_LINE // (8 * allowed.shape[1]))
    for b in range(0, allowed.shape[0], per_line):
        prefetch_line(allowed, b, 0)


@nb.njit(inline="always", **NJIT)
def _sample_blocks(b_lo, b_hi, n, k):
    """(how many, stride) of the blocks of b_lo..b_hi a floor is sampled from (whole blocks only: a
    partial block's padding rows are not rows): SAMPLE_ROWS or 16 per candidate, at most
    1 / SAMPLE_SHARE of them; (0, 0) when that is too few to say anything of the k best."""
    span = min(b_hi, n // BLOCK) - b_lo
    nsample = min(max(SAMPLE_ROWS, 16 * k) // BLOCK, span // SAMPLE_SHARE)
    if nsample <= 0 or nsample * BLOCK < 4 * k:
        return 0, 0
    return nsample, span // nsample


@nb.njit(inline="always", **NJIT)
def _no_floor(use_bias):
    """The floor a scan starts from without a sample (:func:`_scan_block`): -1.0, every row, as a
    cut; -inf as a score, with a bias."""
    return -np.inf if use_bias else -1.0


@nb.njit(inline="always", **NJIT)
def _sample_floor(blocked, b_lo, b_hi, n, msq, flat8, lut_off, allow, use_mask, k, chunk, masks, counts, base,
                  scale):
    """A cut (rows with integer sums above it) that every one of the k best rows of blocks
    b_lo..b_hi passes, from a sample of those blocks; -1.0 (every row) when the sample is too
    small to say. For a candidate scan with no bias: its scores ``float32(base + S / scale)``
    grow with the sum S.

    At least k sampled rows (padding excluded) sum to the floor's bucket or above, so the k-th
    best row of the blocks does too. A lower sum whose score rounds to the same float32 as the
    floor's would tie with it, and the lower row wins a tie: the floor is moved down past such
    sums. So the scan's answer is the same, row for row, as with no floor.

    The lowest bucket would give a floor of -1.0 (every row) anyway, so its rows are not counted:
    they go to one of SPARE_BUCKETS slots after the buckets, in turn. Every row a filter does not
    admit sums to 0 (:func:`_block_sums`): counted in one slot, each addition waited for the one
    before (a 10% filter's scan of one 384-d query took 1.4 us longer than an unfiltered one; the
    same time so).
    ``counts``: FLOOR_BUCKETS + SPARE_BUCKETS zeros, left zero."""
    nsample, stride = _sample_blocks(b_lo, b_hi, n, k)
    if nsample == 0:
        return _no_floor(False)
    top = 0
    for i in range(nsample):
        b = b_lo + i * stride
        _block_sums(blocked, b * msq * HALF, flat8, lut_off, msq, np.uint16(65535), chunk, masks, allow,
                    b * masks.shape[0] if use_mask else 0)
        for t in range(BLOCK):
            bucket = np.int64(chunk[t]) >> FLOOR_SHIFT
            counts[bucket if bucket > 0 else FLOOR_BUCKETS + (t & (SPARE_BUCKETS - 1))] += 1
            top = max(top, bucket)
    bucket = top
    above = counts[top]
    while above < k and bucket > 1:
        bucket -= 1
        above += counts[bucket]
    counts[:top + 1] = 0
    counts[FLOOR_BUCKETS:] = 0
    if above < k:
        return _no_floor(False)
    floor = bucket << FLOOR_SHIFT
    score = np.float32(base + floor / scale)
    while floor > 0 and np.float32(base + (floor - 1) / scale) == score:
        floor -= 1
    return floor - 1.0


@nb.njit(inline="always", **NJIT)
def _sample_score_floor(blocked, b_lo, b_hi, n, msq, flat8, lut_off, allow, use_mask, k, chunk, masks, counts, base,
                        scale, bias, scores):
    """:func:`_sample_floor` for a candidate scan with a bias (an l2 store: score
    ``float32(base + S / scale) + bias[row]``): a score that at least k sampled rows (admitted,
    padding excluded) reach, so no row scoring below it is among the k best of blocks b_lo..b_hi;
    -inf when the sample is too small to say. The sampled rows' scores (computed as the scan
    computes them, into ``scores``) are counted in FLOOR_BUCKETS equal buckets below the best, and
    the floor is the lower edge of the bucket holding the k-th best, moved down by far more than
    float64 rounds the bucket arithmetic. ``counts``: zeros, left zero."""
    nsample, stride = _sample_blocks(b_lo, b_hi, n, k)
    if nsample == 0:
        return _no_floor(True)
    count = 0
    hi = -np.inf
    lo = np.inf
    for i in range(nsample):
        b = b_lo + i * stride
        off = b * masks.shape[0] if use_mask else 0
        _block_sums(blocked, b * msq * HALF, flat8, lut_off, msq, np.uint16(65535), chunk, masks, allow, off)
        for t in range(BLOCK):
            if use_mask and (allow[off + (t >> 6)] >> np.uint64(t & 63)) & np.uint64(1) == 0:
                continue
            acc = np.float32(base + np.int64(chunk[t]) / scale)
            acc += bias[b * BLOCK + t]
            if acc != acc:  # (a NaN bias: such a row never counts towards k)
                continue
            scores[count] = acc
            count += 1
            hi = max(hi, np.float64(acc))
            lo = min(lo, np.float64(acc))
    if count < k:
        return _no_floor(True)
    nb = FLOOR_BUCKETS
    per = nb / (hi - lo) if hi > lo else 0.0
    for j in range(count):
        counts[min(nb - 1, np.int64((hi - np.float64(scores[j])) * per))] += 1
    bucket = 0
    above = counts[0]
    while above < k:
        bucket += 1
        above += counts[bucket]
    counts[:nb] = 0
    if per == 0.0:
        return hi - 1e-9 * (1.0 + abs(hi))
    return hi - (bucket + 1) / per - 1e-9 * (1.0 + abs(hi) + (hi - lo))


@nb.njit(**NJIT)
def scan_parts(nq, n, threads):
    """Row slices of a fast scan of ``nq`` queries over ``n`` rows on ``threads`` threads: at most one
    slice per thread (more were slower), enough (query group, slice) tasks to keep every thread busy."""
    groups = -(-nq // QUERY_GROUP)
    return max(1, min(threads, -(-4 * threads // groups), -(-n // BLOCK)))


@nb.njit(parallel=True, **NJIT)
def scan_pq4_fast(lut, lut8, base, scale, margin, blocked, packed, bias, bias_max, bias_gaps, gap_unit, allowed, k,
                  nparts, exact, best_first=True):
    """Best-first (scores, rows), (nq, k), scanned through quantised tables.

    lut (nq, m, 16) float32 and its quantisation from :func:`quantize_tables`; blocked from
    :func:`to_blocked`; packed the stored (n, ceil(m / 2)) codes for exact scores; bias (n,) or (0,),
    bias_max from :func:`block_max` and (bias_gaps, gap_unit) from :func:`bias_gaps` (or (0,), (0,)
    and 0.0); allowed from :func:`block_allow` (k <= the
    allowed count), or (0, 1) for every row.

    ``exact``: the float ADC scores (and so the float scan's top k): a row the quantisation bound
    says could beat the k-th best is scored from the stored codes. Otherwise the quantised scores
    ``base + S / scale (+ bias)`` rank the rows, as FAISS's fast scan does: enough for the candidates
    of a two-stage search, which rescoring re-ranks, and much cheaper when k is large (k x
    oversample), since every row above the threshold would otherwise be scored twice.

    ``best_first=False``: each query's k in any order (padding last), for rescoring, which orders
    its candidates by row (sorting 30 candidates cost a one-query scan a microsecond).
    """
    nq, m, _ = lut.shape
    n, width = packed.shape
    msq = padded_subquantizers(m)
    nblocks = (n + BLOCK - 1) // BLOCK
    use_bias = bias.shape[0] > 0
    use_mask = allowed.shape[0] > 0
    slack = 0.5 * m + 1.0 if exact else 1.0  # the quantisation error bound, when rows are then scored exactly
    flat8 = lut8.reshape(-1)
    part_s, part_i, part_sizes, part_thr = partial_tops(nparts, nq, k)
    part_rows = np.full((nparts, nq), TIES_ADMITTED, dtype=np.int64)
    step = (nblocks + nparts - 1) // nparts
    slice_blocks = max(1, SLICE_ROWS // BLOCK)
    ngroups = (nq + QUERY_GROUP - 1) // QUERY_GROUP
    sample = not exact and msq <= SQ_PER_PASS
    allow = _filter_words(allowed, use_mask)
    gap_unit = _usable_gap_unit(bias_gaps, gap_unit, n)
    for task in prange(ngroups * nparts):
        p = task % nparts
        q0 = (task // nparts) * QUERY_GROUP
        q1 = min(q0 + QUERY_GROUP, nq)
        sums = np.empty(BLOCK, dtype=np.int64)
        chunk = np.empty(BLOCK, dtype=np.uint16)
        masks = np.zeros(max(1, BLOCK // 64), dtype=np.uint64)
        stop = min(p * step + step, nblocks)
        floors = np.full(q1 - q0, _no_floor(use_bias))
        if sample:
            counts = np.zeros(FLOOR_BUCKETS + SPARE_BUCKETS, dtype=np.int32)
            scores = np.empty(max(SAMPLE_ROWS, 16 * k) + BLOCK, dtype=np.float32) if use_bias else np.empty(0, np.float32)
            for q in range(q0, q1):
                if use_bias:
                    floors[q - q0] = _sample_score_floor(blocked, p * step, stop, n, msq, flat8, q * msq * HALF,
                                                         allow, use_mask, k, chunk, masks, counts, base[q], scale[q],
                                                         bias, scores)
                else:
                    floors[q - q0] = _sample_floor(blocked, p * step, stop, n, msq, flat8, q * msq * HALF, allow,
                                                   use_mask, k, chunk, masks, counts, base[q], scale[q])
        for s0 in range(p * step, stop, slice_blocks):
            s1 = min(s0 + slice_blocks, stop)
            for q in range(q0, q1):
                table = lut[q]
                bs = part_s[p, q]
                bi = part_i[p, q]
                size = part_sizes[p, q]
                thr = part_thr[p, q]
                lut_off = q * msq * HALF
                thr_row = part_rows[p, q]
                floor = floors[q - q0]
                cut = _reservoir_cut(size, thr, k, base[q], margin[q], scale[q], slack, bias_max, floor)
                bias_info = (bias, bias_max, bias_gaps, _gap_factor(gap_unit, scale[q]))
                for b in range(s0, s1):
                    size, thr, thr_row, cut = _scan_block(b, 0, n, table, packed, width, m, blocked, msq, flat8,
                                                          lut_off, base[q], scale[q], margin[q], slack, bias_info,
                                                          use_bias, allow, use_mask, sums, chunk, masks,
                                                          bs, bi, (size, thr, thr_row, cut), k, exact, floor)
                part_sizes[p, q] = size
                part_thr[p, q] = thr
                part_rows[p, q] = thr_row
    return merge_partial(part_s, part_i, part_sizes, k, best_first)



@nb.njit(parallel=True, **NJIT)
def scan_pq4_lists(lut, lut8, base, scale, margin, blocked, packed, bias, bias_max, bias_gaps, gap_unit, allowed,
                   ranges, order, nparts, k, exact, best_first):
    """:func:`scan_pq4_fast` over only the rows of each query's ``ranges`` (nq, r, 2): [start, stop)
    pairs, in increasing order, of an inverted-file tier's probed lists (vecstore.codecs.ivf). A
    block two lists share is read for each. Rows are positions in the list-ordered codes;
    ``allowed`` in the same order.

    The queries are cut into ``nparts`` groups (one per thread), and each group's (query, list)
    pairs are scanned list by list: ``order`` holds all pairs as flat indices ``q * r + j`` sorted by
    their start, stable (:func:`list_major`), so the queries of a group that probe one list read its
    codes one after another while they are in cache, instead of every query fetching its lists
    from memory (10M documents, 1,000 queries x 32 of 4,096 lists: each list is probed by about 8
    queries; the scan for 10 candidates a query took 92 ms query by query, 43 ms list by list).
    ``order`` may be any order of the pairs: the fused path gives one query's best-scoring list
    first (Tier.probe_in_order), so its threshold rises early. Rows then reach the query's one
    reservoir out of position order, and it admits a row tying its threshold by the lower row
    (topk.reservoir_offer): the answer is the same for any order.

    ``best_first=False``: each query's k best (the same rows) in no particular order, for a caller
    that only needs the set (rescoring ranks the candidates itself). Sorting k x oversample
    candidates cost as much as scanning them: 1,000 queries, k = 640 from 8 of 4,096 lists of 1M
    rows (about 4,000 rows a query), 108 ms with the sort, 57 ms without.
    """
    nq, m, _ = lut.shape
    r = ranges.shape[1]
    width = packed.shape[1]
    msq = padded_subquantizers(m)
    use_bias = bias.shape[0] > 0
    use_mask = allowed.shape[0] > 0
    slack = 0.5 * m + 1.0 if exact else 1.0  # the quantisation error bound, when rows are then scored exactly
    flat8 = lut8.reshape(-1)
    nparts = max(1, min(nparts, nq))
    per = (nq + nparts - 1) // nparts
    allow = _filter_words(allowed, use_mask)
    no_floor = _no_floor(use_bias)
    gap_unit = _usable_gap_unit(bias_gaps, gap_unit, packed.shape[0])
    part_s, part_i, sizes, thresholds = partial_tops(1, nq, k)
    threshold_rows = np.full(nq, TIES_ADMITTED, dtype=np.int64)
    for p in prange(nparts):
        q0 = p * per
        q1 = min(q0 + per, nq)
        sums = np.empty(BLOCK, dtype=np.int64)
        chunk = np.empty(BLOCK, dtype=np.uint16)
        masks = np.zeros(max(1, BLOCK // 64), dtype=np.uint64)
        for i in range(order.shape[0]):
            q = order[i] // r
            if q < q0 or q >= q1:
                continue
            j = order[i] % r
            lo = ranges[q, j, 0]
            stop = ranges[q, j, 1]
            if stop <= lo:
                continue
            size = sizes[0, q]
            thr = thresholds[0, q]
            thr_row = threshold_rows[q]
            cut = _reservoir_cut(size, thr, k, base[q], margin[q], scale[q], slack, bias_max, no_floor)
            bs = part_s[0, q]
            bi = part_i[0, q]
            table = lut[q]
            bias_info = (bias, bias_max, bias_gaps, _gap_factor(gap_unit, scale[q]))
            for b in range(lo // BLOCK, (stop + BLOCK - 1) // BLOCK):
                size, thr, thr_row, cut = _scan_block(b, lo, stop, table, packed, width, m, blocked, msq, flat8,
                                                      q * msq * HALF, base[q], scale[q], margin[q], slack, bias_info,
                                                      use_bias, allow, use_mask, sums, chunk, masks, bs,
                                                      bi, (size, thr, thr_row, cut), k, exact, no_floor)
            sizes[0, q] = size
            thresholds[0, q] = thr
            threshold_rows[q] = thr_row
    return merge_partial(part_s, part_i, sizes, k, best_first)  # (one part: each reservoir sorted in place)


def list_major(ranges: np.ndarray) -> np.ndarray:
    """The ``order`` :func:`scan_pq4_lists` takes: the pairs of ``ranges`` (nq, r, 2) as flat
    indices sorted by start, stable (one query's ranges are already in that order)."""
    if ranges.shape[0] == 1:
        return np.arange(ranges.shape[1], dtype=np.int64)
    return np.argsort(ranges[:, :, 0], axis=None, kind="stable").astype(np.int64, copy=False)


# -- filters: rows outside a mask are skipped ---------------------------------------------------------
#
# The row mask arrives as one bit per row in block order (:func:`block_allow`): a block no allowed
# row falls in is skipped unread; in the others, rows not admitted are summed as 0 and never
# become candidates (:func:`_block_sums`).


def block_allow(allow, n):
    """uint8 row mask (n,) -> (nblocks, BLOCK // 64 or 1) uint64: bit t of word t // 64 of block b is
    row b * BLOCK + t (padding rows of the last block are never allowed). numpy's packbits: 100,000
    rows in about 20 us, where a numba loop over the rows took 150 us on two threads."""
    nblocks = (n + BLOCK - 1) // BLOCK
    padded = np.zeros(nblocks * BLOCK, dtype=np.uint8)
    padded[:n] = allow[:n] != 0
    packed = np.packbits(padded, bitorder="little")  # bit i of byte j: row 8 j + i
    if BLOCK >= 64:
        return packed.view("<u8").reshape(nblocks, BLOCK // 64).astype(np.uint64)
    return packed.view("<u4").astype(np.uint64).reshape(nblocks, 1)


@nb.njit(parallel=True, **NJIT)
def scan_pq4_quantised(lut8, base, scale, packed, m, bias, k, nparts):
    """Best-first (scores, rows), (nq, k), by the quantised scores of :func:`scan_pq4_fast` with
    ``exact=False``, row by row and without SIMD: a two-stage search's candidates on a CPU that has
    no fast scan are the same rows (docs/format.md, "Candidates of a 4-bit PQ tier").

    lut8, base, scale from :func:`quantize_tables` (table j's level c at ``lut8[q, j * HALF + c]``);
    packed the stored (n, ceil(m / 2)) codes; bias (n,) or (0,).
    """
    nq = lut8.shape[0]
    n, width = packed.shape
    use_bias = bias.shape[0] > 0
    part_s, part_i, part_sizes, part_thr = partial_tops(nparts, nq, k)
    step = (n + nparts - 1) // nparts
    for task in prange(nq * nparts):
        p = task % nparts
        q = task // nparts
        bs = part_s[p, q]
        bi = part_i[p, q]
        size = part_sizes[p, q]
        thr = part_thr[p, q]
        for row in range(p * step, min(n, p * step + step)):
            total = 0
            for i in range(width):
                b = packed[row, i]
                total += np.int64(lut8[q, 2 * i * HALF + (b & 15)])
                if 2 * i + 1 < m:
                    total += np.int64(lut8[q, (2 * i + 1) * HALF + (b >> 4)])
            acc = np.float32(base[q] + total / scale[q])
            if use_bias:
                acc += bias[row]
            if size < k or acc > thr:
                size, thr = reservoir_push(bs, bi, size, thr, k, acc, row)
        part_sizes[p, q] = size
        part_thr[p, q] = thr
    return merge_partial(part_s, part_i, part_sizes, k)


# every row: the mask :func:`scan_pq4_fast` takes when there is no filter
ALL_ROWS_ALLOWED = np.zeros((0, 1), dtype=np.uint64)
