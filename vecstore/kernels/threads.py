"""The numba thread count, read and set inside compiled code.

numba's own ``set_num_threads`` works in a jitted function, but through a ctypes pointer, which keeps
the function out of numba's on-disk cache. These two intrinsics call the threading layer's C
functions by name instead (the same thread-local setting ``numba.set_num_threads`` changes), so a
kernel that picks its thread count per call stays cached: the fused query path
(kernels/fused.py:search_pq4) sets one thread for a query too small to wake another, where doing
it from Python (``dispatch.threads_for``) cost 3.4 us a query.

The threading layer registers those names with LLVM when it starts, so this module starts it on
import, before any kernel using them is compiled or loaded from the cache.
"""

from __future__ import annotations

import numba as nb
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

nb.get_num_threads()  # starts the threading layer: its set_num_threads / get_num_threads symbols exist from here


@intrinsic
def set_threads(typingctx, n):
    """Set this thread's numba thread count to ``n`` (1 <= n <= NUMBA_NUM_THREADS: not checked)."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(32)]),
                                            "set_num_threads")
        builder.call(fn, [builder.trunc(args[0], ir.IntType(32))])
        return context.get_dummy_value()
    return types.void(n), codegen


@intrinsic
def get_threads(typingctx):
    """This thread's numba thread count (``numba.get_num_threads()``)."""
    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "get_num_threads")
        return builder.sext(builder.call(fn, []), ir.IntType(64))
    return types.int64(), codegen
