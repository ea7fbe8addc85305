"""4-bit PQ scans with the lookup tables in SIMD registers (FAISS's "fast scan", André et al. 2015).

A 4-bit sub-quantizer's table has 16 entries: quantised to uint8 it fills half a 256-bit register,
and one ``vpshufb`` looks up 32 codes at once. Numba has no such instruction, so ``_block_sums`` emits
it through LLVM (an ``@intrinsic``); the rest is ordinary numba.

Layout (built in RAM from the stored codes, see :func:`to_blocked`): rows go in blocks of 32 (the
last padded with zero codes); for block b and sub-quantizer pair i (2i, 2i+1) 32 bytes sit at
``(b * width + i) * 32``: byte t < 16 holds sub-quantizer 2i of rows t (low nibble) and t + 16 (high
nibble), byte 16 + t the same for sub-quantizer 2i + 1. A query's quantised tables sit the same way:
``lut8[i * 32 + c]`` = table 2i at code c, ``lut8[i * 32 + 16 + c]`` = table 2i + 1 at code c.

Quantisation: table j is shifted by its minimum and all tables are scaled by one factor so that
the widest spans 0..255; a row's integer sum S then satisfies
``|score - (base + S / scale)| <= m / (2 scale)``. The scan keeps exact float scores: a row is scored
exactly (from the stored codes and the float tables) only when that bound says it could beat the
k-th best so far, so results equal the plain float scan's.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from .topk import NJIT, merge_partial, partial_tops, reservoir_push

BLOCK = 32
# Pairs summed in one pass: two lanes of at most 128 uint8 entries each stay below 2**16.
PAIRS_PER_PASS = 128
# Queries scanned together: their tables (2 KB each at m = 128) stay in L1 while a slice of
# blocks (SLICE_BLOCKS x 32 rows) stays in L2 for all of them.
QUERY_GROUP = 8
SLICE_BLOCKS = 64
# Rows this scan covers in the time the float scan (kernels/pq.py) covers one; used to decide
# whether a scan is worth the threads (measured: 100,000 rows x 64 bytes, 0.41 ms against 3.5).
SPEEDUP = 8

_I8, _I16, _I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)


def simd_bits() -> int:
    """Register width the fast scan uses: 512 (AVX-512BW), 256 (AVX2) or 0 (neither: 4-bit codes are
    then scanned by kernels/pq.py).

    Decided by the CPU numba compiles for, which also keys numba's on-disk cache: the host's features,
    or those NUMBA_CPU_NAME / NUMBA_CPU_FEATURES name (e.g. ``NUMBA_CPU_NAME=haswell
    NUMBA_CPU_FEATURES=+avx2`` for AVX2, ``NUMBA_CPU_NAME=generic`` for none).
    """
    import llvmlite.binding as llvm
    from numba.core import config

    if config.CPU_NAME in (None, "host") and not config.CPU_FEATURES:
        found = {name for name, on in llvm.get_host_cpu_features().items() if on}
    else:
        found = {f[1:] for f in (config.CPU_FEATURES or "").split(",") if f.startswith("+")}
    if "avx512bw" in found:
        return 512
    return 256 if "avx2" in found else 0


SIMD_BITS = simd_bits()


def _data(context, builder, arrty, arr):
    return cgutils.create_struct_proxy(arrty)(context, builder, value=arr).data


def _make_block_sums(bits: int):
    """The block kernel for registers of ``bits`` (256: one pair a step, 512: two pairs a step)."""
    lanes = bits // 128                    # 16-byte lanes, one sub-quantizer's table each
    vbytes = ir.VectorType(_I8, bits // 8)
    vwords = ir.VectorType(_I16, bits // 16)
    shuffle_name = "llvm.x86.avx2.pshuf.b" if bits == 256 else "llvm.x86.avx512.pshuf.b.512"

    @intrinsic
    def block_sums(typingctx, codes, code_off, lut, lut_off, npairs, cut, out):
        """Integer scores of one block's 32 rows over ``npairs`` pairs (a multiple of 2): stored to
        out[0:32] (uint16); returns the bit mask (uint32, bit t = row t) of rows scoring above ``cut``.

        Each step: low nibbles -> rows 0..15, high nibbles -> rows 16..31, one ``vpshufb`` each;
        lane l gathers the sub-quantizer at position l of the step. Byte results are summed as
        uint16 words (byte 2e + 256 * byte 2e + 1) plus, separately, their high bytes, from which the
        even bytes' sums follow; the lanes are added at the end and compared on the vectors, so a
        block with no candidate costs one test.
        """
        sig = types.uint32(codes, code_off, lut, lut_off, npairs, cut, out)

        def codegen(context, builder, signature, args):
            codes_a, code_off_v, lut_a, lut_off_v, n, cut_v, out_a = args
            cp = builder.gep(_data(context, builder, signature.args[0], codes_a), [code_off_v])
            lp = builder.gep(_data(context, builder, signature.args[2], lut_a), [lut_off_v])
            op = _data(context, builder, signature.args[6], out_a)
            shuffle = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vbytes, [vbytes, vbytes]),
                                                     shuffle_name)
            zero = ir.Constant(vwords, [0] * (bits // 16))
            acc = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]
            nibble = ir.Constant(vbytes, [15] * (bits // 8))
            four = ir.Constant(vwords, [4] * (bits // 16))
            eight = ir.Constant(vwords, [8] * (bits // 16))
            steps = builder.sdiv(n, ir.Constant(n.type, lanes // 2))
            with cgutils.for_range(builder, steps) as loop:
                off = builder.mul(loop.index, ir.Constant(loop.index.type, bits // 8))
                c = builder.load(builder.bitcast(builder.gep(cp, [off]), vbytes.as_pointer()), align=1)
                table = builder.load(builder.bitcast(builder.gep(lp, [off]), vbytes.as_pointer()), align=1)
                low = builder.and_(c, nibble)
                high = builder.and_(builder.bitcast(builder.lshr(builder.bitcast(c, vwords), four), vbytes), nibble)
                for looked, (words, odd) in ((builder.call(shuffle, [table, low]), acc[0:2]),
                                             (builder.call(shuffle, [table, high]), acc[2:4])):
                    w = builder.bitcast(looked, vwords)
                    builder.store(builder.add(builder.load(words), w), words)
                    builder.store(builder.add(builder.load(odd), builder.lshr(w, eight)), odd)
            v8 = ir.VectorType(_I32, 8)
            interleave = ir.Constant(ir.VectorType(_I32, 16), [x for e in range(8) for x in (e, 8 + e)])
            splat = builder.load(cgutils.alloca_once_value(builder, ir.Constant(ir.VectorType(_I16, 16), [0] * 16)))
            for lane in range(16):
                splat = builder.insert_element(splat, cut_v, ir.Constant(_I32, lane))

            def lane_sum(v):
                total = builder.shuffle_vector(v, v, ir.Constant(v8, list(range(8))))
                for lane in range(1, lanes):
                    part = builder.shuffle_vector(v, v, ir.Constant(v8, list(range(8 * lane, 8 * lane + 8))))
                    total = builder.add(total, part)
                return total

            mask = ir.Constant(_I32, 0)
            for half, (words, odd) in enumerate((acc[0:2], acc[2:4])):
                o = builder.load(odd)
                even = builder.sub(builder.load(words), builder.shl(o, eight))
                rows = builder.shuffle_vector(lane_sum(even), lane_sum(o), interleave)
                dest = builder.gep(op, [ir.Constant(_I32, 16 * half)])
                builder.store(rows, builder.bitcast(dest, rows.type.as_pointer()), align=1)
                above = builder.zext(builder.bitcast(builder.icmp_unsigned(">", rows, splat), _I16), _I32)
                mask = builder.or_(mask, builder.shl(above, ir.Constant(_I32, 16 * half)))
            return mask

        return sig, codegen

    return block_sums


_block_sums = _make_block_sums(SIMD_BITS or 256)


@nb.njit(inline="always", **NJIT)
def padded_pairs(width):
    """Pairs a block holds: the stored width rounded up to even (a 512-bit step takes two; the zero
    pad adds nothing)."""
    return width + (width & 1)


@nb.njit(parallel=True, **NJIT)
def to_blocked(packed):
    """Stored 4-bit codes (n, width), two a byte (even sub-quantizer low) -> the blocked layout (flat uint8)."""
    n, width = packed.shape
    pw = padded_pairs(width)
    nblocks = (n + BLOCK - 1) // BLOCK
    out = np.zeros(nblocks * pw * BLOCK, dtype=np.uint8)
    for b in prange(nblocks):
        for t in range(16):
            r0 = b * BLOCK + t
            r1 = r0 + 16
            for i in range(width):
                v0 = packed[r0, i] if r0 < n else np.uint8(0)
                v1 = packed[r1, i] if r1 < n else np.uint8(0)
                base = (b * pw + i) * BLOCK
                out[base + t] = (v0 & 15) | ((v1 & 15) << 4)
                out[base + 16 + t] = (v0 >> 4) | (v1 & 240)
    return out


@nb.njit(parallel=True, **NJIT)
def block_max(bias, n):
    """Largest bias of each block of 32 rows (NaN counts as +inf: such rows are always scored exactly)."""
    nblocks = (n + BLOCK - 1) // BLOCK
    out = np.full(nblocks, -np.inf)
    for b in prange(nblocks):
        for r in range(b * BLOCK, min(b * BLOCK + BLOCK, n)):
            v = np.float64(bias[r])
            if v != v:
                v = np.inf
            out[b] = max(out[b], v)
    return out


@nb.njit(**NJIT)
def quantize_tables(lut, width):
    """Float tables (nq, m, 16) -> (uint8 tables (nq, pairs * 32), base (nq,), scale (nq,), margin (nq,)).

    margin bounds, in score units, the float32 rounding of an exact score (m additions) so the
    filter never drops a row the exact scan would keep. Tables must be finite.
    """
    nq, m, _ = lut.shape
    lut8 = np.zeros((nq, padded_pairs(width) * BLOCK), dtype=np.uint8)
    base = np.zeros(nq)
    scale = np.ones(nq)
    margin = np.zeros(nq)
    for q in range(nq):
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
            base[q] += lo
            mass += big
            widest = max(widest, hi - lo)
        sc = 255.0 / widest if widest > 0 else 1.0
        scale[q] = sc
        margin[q] = 1e-6 * m * mass
        for j in range(m):
            lo = np.float64(lut[q, j, 0])
            for c in range(16):
                lo = min(lo, np.float64(lut[q, j, c]))
            for c in range(16):
                level = min(255.0, np.floor((np.float64(lut[q, j, c]) - lo) * sc + 0.5))
                lut8[q, (j // 2) * BLOCK + (j % 2) * 16 + c] = np.uint8(level)
    return lut8, base, scale, margin


@nb.njit(inline="always", **NJIT)
def _exact(table, packed, row, width, m):
    """Float score of one row from its stored bytes: sum_j table[j, c_j], four accumulators."""
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
        if 2 * i + 3 < m:
            a2 += table[2 * i + 1, b0 >> 4]
            a3 += table[2 * i + 3, b1 >> 4]
        else:
            a2 += table[2 * i + 1, b0 >> 4]
        i += 2
    if i < width:
        b0 = packed[row, i]
        a0 += table[2 * i, b0 & 15]
        if 2 * i + 1 < m:
            a1 += table[2 * i + 1, b0 >> 4]
    return (a0 + a1) + (a2 + a3)


@nb.njit(inline="always", **NJIT)
def _candidates(blocked, b, pw, lut8, lut_off, cut, sums, chunk):
    """Integer scores of block b (pw pairs) into sums[0:32] and the mask of rows scoring above
    ``cut`` (a float: below 0 every row is a candidate). Many pairs are summed pass by pass."""
    if pw <= PAIRS_PER_PASS:
        if cut >= 65535.0:
            return np.uint32(0)  # no row can score above: the block is skipped unread
        mask = _block_sums(blocked, b * pw * BLOCK, lut8, lut_off, pw, np.uint16(max(cut, 0.0)), chunk)
        if mask != 0 or cut < 0:
            for t in range(BLOCK):
                sums[t] = chunk[t]
        return np.uint32(0xFFFFFFFF) if cut < 0 else mask
    for t in range(BLOCK):
        sums[t] = 0
    for i0 in range(0, pw, PAIRS_PER_PASS):
        _block_sums(blocked, (b * pw + i0) * BLOCK, lut8, lut_off + i0 * BLOCK, min(PAIRS_PER_PASS, pw - i0),
                    np.uint16(65535), chunk)
        for t in range(BLOCK):
            sums[t] += chunk[t]
    mask = np.uint32(0)
    for t in range(BLOCK):
        if sums[t] > cut:
            mask |= np.uint32(1) << np.uint32(t)
    return mask


@nb.njit(inline="always", **NJIT)
def _cut(thr, base, margin, scale, slack, bias_max, b, use_bias):
    """Integer score a row must exceed to possibly beat ``thr`` (float: compare sums > cut)."""
    top = thr - base - margin
    if use_bias:
        top -= bias_max[b]
    return top * scale - slack


@nb.njit(parallel=True, **NJIT)
def scan_pq4_fast(lut, lut8, base, scale, margin, blocked, packed, bias, bias_max, k, nparts):
    """Best-first (scores, rows), (nq, k), of the float ADC scores, scanned through quantised tables.

    lut (nq, m, 16) float32 and its quantisation from :func:`quantize_tables`; blocked from
    :func:`to_blocked`; packed the stored (n, width) codes for exact scores; bias (n,) or (0,) and
    bias_max from :func:`block_max` (or (0,)).
    """
    nq, m, _ = lut.shape
    n, width = packed.shape
    pw = padded_pairs(width)
    nblocks = (n + BLOCK - 1) // BLOCK
    use_bias = bias.shape[0] > 0
    slack = 0.5 * m + 1.0
    flat8 = lut8.reshape(-1)
    part_s, part_i, part_sizes, part_thr = partial_tops(nparts, nq, k)
    step = (nblocks + nparts - 1) // nparts
    ngroups = (nq + QUERY_GROUP - 1) // QUERY_GROUP
    for task in prange(ngroups * nparts):
        p = task % nparts
        q0 = (task // nparts) * QUERY_GROUP
        q1 = min(q0 + QUERY_GROUP, nq)
        sums = np.empty(BLOCK, dtype=np.int64)
        chunk = np.empty(BLOCK, dtype=np.uint16)
        stop = min(p * step + step, nblocks)
        for s0 in range(p * step, stop, SLICE_BLOCKS):
            s1 = min(s0 + SLICE_BLOCKS, stop)
            for q in range(q0, q1):
                table = lut[q]
                bs = part_s[p, q]
                bi = part_i[p, q]
                size = part_sizes[p, q]
                thr = part_thr[p, q]
                lut_off = q * pw * BLOCK
                cut = -1.0
                if size >= k:
                    cut = _cut(thr, base[q], margin[q], scale[q], slack, bias_max, 0, False)
                for b in range(s0, s1):
                    block_cut = cut
                    if use_bias and size >= k:
                        block_cut = _cut(thr, base[q], margin[q], scale[q], slack, bias_max, b, True)
                    mask = _candidates(blocked, b, pw, flat8, lut_off, block_cut, sums, chunk)
                    if mask == 0:
                        continue
                    for t in range(BLOCK):
                        row = b * BLOCK + t
                        if row >= n:
                            break
                        if not (mask >> np.uint32(t)) & np.uint32(1):
                            continue
                        # the threshold may have risen since the block's mask was taken
                        if size >= k and sums[t] <= _cut(thr, base[q], margin[q], scale[q], slack, bias_max, b,
                                                         use_bias):
                            continue
                        acc = _exact(table, packed, row, width, m)
                        if use_bias:
                            acc += bias[row]
                        if size < k or acc > thr:
                            size, thr = reservoir_push(bs, bi, size, thr, k, acc, row)
                            if size >= k:
                                cut = _cut(thr, base[q], margin[q], scale[q], slack, bias_max, 0, False)
                part_sizes[p, q] = size
                part_thr[p, q] = thr
    return merge_partial(part_s, part_i, part_sizes, k)
