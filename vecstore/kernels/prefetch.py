"""A software prefetch for compiled code: ask the CPU for a cache line before it is read.

Two kernels use it where the hardware prefetcher cannot help in time: rescoring (candidate rows are
scattered, kernels/rescore.py) and a filtered fast scan (the filter's bits, requested while the
query's tables are made, kernels/fastscan.py:prefetch_filter).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

CACHE_LINE = 64


@intrinsic
def prefetch_line(typingctx, arr, row, col):
    """Ask the CPU for the cache line holding ``arr[row, col]``: llvm.prefetch, a hint that loads
    nothing and never faults (a line of a page not in memory is simply not fetched)."""
    sig = types.void(arr, row, col)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1], args[2]])
        byte = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [byte, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")
        # read, keep in every cache level, data
        builder.call(fn, [builder.bitcast(ptr, byte), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen
