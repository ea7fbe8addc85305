"""float16 codes widened to float32 in compiled code, by the CPU's conversion instruction.

numba has no float16 type, so float16 codes reach the kernels as their uint16 bit patterns, and
:func:`widen` turns one into the float32 it stands for (exactly: every half is a float32). With F16C
it is LLVM's ``fpext half to float``, which a loop over a row vectorises into ``vcvtph2ps``, 16
halves an instruction with AVX-512. The integer decode it replaces (magnitude bits shifted into a
float32's place, times 2**112) cost more than the float32 product it fed: rescoring 4096-d rows
from float16 was no faster than from float32 (docs/kernels.md).

Without F16C, LLVM lowers the same ``fpext`` to a call of compiler-rt's ``__extendhfsf2``, which
numba's JIT does not link (the process crashes), so the conversion is then spelled out in integer
operations. Which one is compiled follows the CPU numba compiles for (kernels/target.py), which
also keys numba's cache.

numba's on-disk cache only watches the file a kernel is defined in: after an edit here the kernels
that inline :func:`widen` must be recompiled (``make clean-cache``).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .target import target_features

F16C = "f16c" in target_features()

_I32 = ir.IntType(32)


def _widen_integer(builder, h):
    """IEEE 754 half -> single from the bits alone (no F16C): a finite half's magnitude bits shifted
    left by 13, with its sign at bit 31, are a float32 equal to the half times 2**-112 (subnormals
    included), so one exact multiplication by 2**112 finishes it; infinities and NaNs (exponent 31)
    get the float32 exponent 255 and keep their sign and mantissa bits."""
    h32 = builder.zext(h, _I32)
    mag = builder.and_(h32, ir.Constant(_I32, 0x7FFF))
    sign = builder.shl(builder.and_(h32, ir.Constant(_I32, 0x8000)), ir.Constant(_I32, 16))
    shifted = builder.or_(builder.shl(mag, ir.Constant(_I32, 13)), sign)
    finite = builder.fmul(builder.bitcast(shifted, ir.FloatType()), ir.Constant(ir.FloatType(), 2.0 ** 112))
    nonfinite = builder.bitcast(builder.or_(shifted, ir.Constant(_I32, 0x70000000)), ir.FloatType())
    return builder.select(builder.icmp_unsigned(">=", mag, ir.Constant(_I32, 0x7C00)), nonfinite, finite)


@intrinsic
def widen(typingctx, h):
    """The float32 value of the float16 whose bits are ``h`` (uint16): IEEE 754 widening, exact for
    every half (infinities stay infinite, NaNs stay NaN)."""
    if h != types.uint16:
        return None
    sig = types.float32(types.uint16)

    def codegen(context, builder, signature, args):
        if F16C:
            return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
        return _widen_integer(builder, args[0])

    return sig, codegen
