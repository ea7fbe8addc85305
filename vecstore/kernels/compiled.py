"""One kernel body compiled twice, serial and ``parallel=True``, each with its own on-disk cache entry.

A parallel region wakes numba's other threads, which sleep between regions (OMP_WAIT_POLICY=PASSIVE:
45-50 us on 2 threads), so small work wants the serial compilation of the same loop (``prange`` is
``range`` there). numba's cache names a function by its module, qualified name and first line, and
keys its entries by bytecode and closure variables, not by ``parallel=``: two compilations of one
body made by a factory shared one entry, and whichever was compiled first was loaded for both (a
fresh cache then ran the encoders' batch kernels serially, or the merge of one query's reservoirs
in a parallel region). Each compilation here gets a qualified name of its own.
"""

from __future__ import annotations

from collections.abc import Callable

import numba as nb


def compiled(fn: Callable, parallel: bool, options: dict):
    """``nb.njit(parallel=parallel, **options)(fn)`` under the qualified name ``<name>_parallel`` or
    ``<name>_serial``. ``fn`` must be a function object made for this call (a factory's inner
    function): its name is changed."""
    fn.__qualname__ = f"{fn.__qualname__}_{'parallel' if parallel else 'serial'}"
    return nb.njit(parallel=parallel, **options)(fn)
