"""The CPU numba compiles for: which instruction-set features the kernels may use.

Decided once per process from what also keys numba's on-disk cache (the host's features, or those
NUMBA_CPU_NAME / NUMBA_CPU_FEATURES name), so a cached kernel never meets a CPU it was not built for.
"""

from __future__ import annotations


def target_features() -> frozenset[str]:
    """Features (LLVM names: "avx2", "f16c", "avx512vbmi", ...) of the CPU numba compiles for.

    The host's, unless NUMBA_CPU_NAME or NUMBA_CPU_FEATURES is set: then only the features
    NUMBA_CPU_FEATURES names with a "+" (``NUMBA_CPU_NAME=generic``: none). A CPU name's implied
    features are not counted, so a choice made from this set errs towards the portable code.
    """
    import llvmlite.binding as llvm
    from numba.core import config

    if config.CPU_NAME in (None, "host") and not config.CPU_FEATURES:
        return frozenset(name for name, on in llvm.get_host_cpu_features().items() if on)
    return frozenset(f[1:] for f in (config.CPU_FEATURES or "").split(",") if f.startswith("+"))
