"""What a benchmark measures, and the conditions it measures under.

- :func:`recall_at_k`: share of the true k nearest found, optionally tolerant of tied scores (as
  FAISS's ``check_ref_knn_with_draws``): a returned id outside the reference top k still counts
  when its score ties the reference k-th score within a tolerance.
- :func:`time_repeated`, :func:`time_each` (and their ``_interleaved`` forms, which alternate
  between the systems compared so that a noisy neighbour slows both alike): warm-up, repeats,
  median, p50 / p99.
- :func:`memory`: RssAnon (private, what a process really costs), RssFile (mapped file pages,
  shared and reclaimable), VmRSS and VmHWM (peak), from /proc/<pid>/status.
- :func:`page_cache_fraction` / :func:`evict_page_cache`: how much of a file is in the page cache
  (``mincore``), and dropping it (``posix_fadvise(DONTNEED)``) for a cold-cache figure.
- :func:`machine`: CPU model, cores, thread counts of numba, FAISS (OpenMP) and both BLAS
  libraries, library versions, load average.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import mmap
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

# -- recall ----------------------------------------------------------------------------------------


def _hits(I: np.ndarray, I_ref: np.ndarray) -> np.ndarray:
    """(nq, k) bool: result j of query q is among the reference ids (ignoring -1)."""
    hits = np.zeros(I.shape, dtype=bool)
    for j in range(I_ref.shape[1]):  # k^2 / k passes over (nq, k): fine for k <= a few hundred
        hits |= I == I_ref[:, j:j + 1]
    return hits & (I >= 0)


def recall_at_k(I: np.ndarray, I_ref: np.ndarray, k: int | None = None, *, D: np.ndarray | None = None,
                D_ref: np.ndarray | None = None, metric: str = "ip", atol: float = 0.0,
                rtol: float = 0.0) -> float:
    """Mean over queries of |found top k  ∩  true top k| / k.

    Parameters
    ----------
    I : (nq, >= k) ids returned; I_ref : (nq, >= k) true ids, best first.
    D, D_ref : optional scores of I and I_ref, as the search reports them: similarities for
        "ip"/"cosine" (higher is better), squared L2 for "l2" (lower is better). For an approximate
        method pass the *exact* scores of its returned ids (``datasets.exact_scores``).
    atol, rtol : with D and D_ref given and a tolerance > 0, a returned id outside the reference
        set still counts if its score is within ``atol + rtol * |kth|`` of the reference k-th score
        (or better): the two results are tied and either is a correct answer.

    Duplicate ids in a row count once.
    """
    k = I_ref.shape[1] if k is None else int(k)
    if I.shape[1] < k or I_ref.shape[1] < k:
        raise ValueError(f"recall@{k} needs at least {k} columns (got {I.shape[1]} and {I_ref.shape[1]})")
    I, I_ref = np.asarray(I)[:, :k], np.asarray(I_ref)[:, :k]
    hits = _hits(I, I_ref)
    tolerant = D is not None and D_ref is not None and (atol > 0 or rtol > 0)
    if tolerant:
        D, D_ref = np.asarray(D, dtype=np.float64)[:, :k], np.asarray(D_ref, dtype=np.float64)[:, :k]
        kth = D_ref[:, k - 1:k]
        tol = atol + rtol * np.abs(kth)
        tied = (D <= kth + tol) if metric == "l2" else (D >= kth - tol)
        hits |= tied & (I >= 0)
    # an id repeated within a row is a hit once
    s = np.sort(np.where(hits, I, -1), axis=1)
    unique_hits = ((s[:, 1:] != s[:, :-1]) & (s[:, 1:] >= 0)).sum(axis=1) + (s[:, 0] >= 0)
    return float(unique_hits.sum() / (I.shape[0] * k))


def tie_report(I: np.ndarray, I_ref: np.ndarray, k: int, *, D: np.ndarray, D_ref: np.ndarray,
               metric: str = "ip", atol: float = 1e-5) -> dict:
    """Strict and tie-tolerant recall@k, and how many id differences ties explain."""
    strict = recall_at_k(I, I_ref, k)
    tolerant = recall_at_k(I, I_ref, k, D=D, D_ref=D_ref, metric=metric, atol=atol)
    nq = I.shape[0]
    return {"k": k, "recall": strict, "recall_tie_tolerant": tolerant, "tolerance": atol,
            "ids_differing": int(round((1 - strict) * nq * k)),
            "explained_by_ties": int(round((tolerant - strict) * nq * k)),
            "unexplained": int(round((1 - tolerant) * nq * k))}


# -- timing ----------------------------------------------------------------------------------------


@dataclass
class Timing:
    """Wall-clock seconds of repeated runs, with summary statistics."""

    seconds: list[float] = field(default_factory=list)
    warmup: int = 0

    @property
    def median(self) -> float:
        return float(np.median(self.seconds))

    @property
    def min(self) -> float:
        return float(np.min(self.seconds))

    @property
    def p50(self) -> float:
        return float(np.percentile(self.seconds, 50))

    @property
    def p99(self) -> float:
        return float(np.percentile(self.seconds, 99))

    @property
    def mean(self) -> float:
        return float(np.mean(self.seconds))

    def summary(self) -> dict:
        return {"n": len(self.seconds), "warmup": self.warmup, "median_s": self.median,
                "min_s": self.min, "p50_s": self.p50, "p99_s": self.p99, "mean_s": self.mean}


def _clock(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e9


def time_repeated(fn: Callable[[], object], *, repeats: int = 3, warmup: int = 1) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times timed."""
    for _ in range(warmup):
        fn()
    return Timing([_clock(fn) for _ in range(repeats)], warmup)


def time_repeated_interleaved(fns: dict[str, Callable[[], object]], *, repeats: int = 3,
                              warmup: int = 1, budget_s: float = 0.0, max_repeats: int = 15) -> dict[str, Timing]:
    """As :func:`time_repeated` for several systems, alternating them run by run.

    With ``budget_s``, fast calls are repeated more than ``repeats`` times (as many rounds as the
    warm-up round's time fits in the budget, at most ``max_repeats``): a median of one or three
    100-millisecond runs on a shared machine is mostly noise. Every system gets the same rounds.
    """
    start = time.perf_counter()
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    if budget_s and warmup:
        per_round = (time.perf_counter() - start) / warmup
        repeats = max(repeats, min(max_repeats, int(budget_s / max(per_round, 1e-9))))
    out = {name: Timing([], warmup) for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            out[name].seconds.append(_clock(fn))
    return out


def time_each(fn: Callable[[np.ndarray], object], items: Sequence, *, warmup: int = 3) -> Timing:
    """Latency of ``fn(item)`` for each item (e.g. one query at a time), after ``warmup`` calls."""
    for i in range(min(warmup, len(items))):
        fn(items[i])
    return Timing([_clock(lambda it=it: fn(it)) for it in items], warmup)


def time_each_interleaved(fns: dict[str, Callable[[np.ndarray], object]], items: Sequence, *,
                          warmup: int = 3) -> dict[str, Timing]:
    """As :func:`time_each` for several systems: each item is run by every system in turn."""
    for i in range(min(warmup, len(items))):
        for fn in fns.values():
            fn(items[i])
    out = {name: Timing([], warmup) for name in fns}
    for it in items:
        for name, fn in fns.items():
            out[name].seconds.append(_clock(lambda: fn(it)))
    return out


def time_round_robin(fns: dict[str, Callable[[np.ndarray], object]], xq, rounds: int, *,
                     warmup: int = 5, seed: int = 0) -> dict[str, list[float]]:
    """Seconds of ``rounds`` one-query calls of each ``fns[name](q)``, systems round-robin in a
    random order each round (``seed``), each call on the next query: of ``xq`` (one array for every
    system) or of ``xq[name]`` (a dict: each system's own form of the queries), cycling. Unlike
    :func:`time_each_interleaved` no system always follows the same one, and no two calls share a
    query, so neither warms the caches for the other. (An order rotated each round made each of
    three or more systems follow the same one in most rounds: the default plan, timed after a plan
    reading 2 MB of other rows, measured 1.15-1.20x the same plan timed after it.)"""
    names = list(fns)
    xq_by = xq if isinstance(xq, dict) else {n: xq for n in names}
    nq = next(iter(xq_by.values())).shape[0]
    call = 0
    for _ in range(warmup):
        for n in names:
            fns[n](xq_by[n][call % nq:call % nq + 1])
            call += 1
    out: dict[str, list[float]] = {n: [] for n in names}
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        for j in rng.permutation(len(names)):
            n = names[j]
            q = xq_by[n][call % nq:call % nq + 1]
            call += 1
            t0 = time.perf_counter_ns()
            fns[n](q)
            out[n].append((time.perf_counter_ns() - t0) / 1e9)
    return out


def verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    """"met", "MISSED", or "n/a" when there is no finite figure: a benchmark's target column."""
    if value is None or not math.isfinite(value):
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "MISSED"


# -- memory ------------------------------------------------------------------------------------------

STATUS_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem", "VmSwap")


def memory(pid: int | str = "self") -> dict[str, int]:
    """Bytes of VmRSS, VmHWM (peak RSS), RssAnon, RssFile, RssShmem, VmSwap of a process.

    RssAnon is private memory (heap, arrays); RssFile counts mapped file pages currently resident,
    which the kernel can drop and other processes share. Linux only.
    """
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in STATUS_FIELDS:
                value, unit = rest.split()
                out[name] = int(value) * (1024 if unit.lower() == "kb" else 1)
    return out


def mapped_rss(path: str, pid: int | str = "self") -> int:
    """Resident bytes of every mapping of ``path`` in a process (/proc/<pid>/smaps), e.g. a store."""
    target = os.path.realpath(path)
    total, inside = 0, False
    with open(f"/proc/{pid}/smaps") as fh:
        for line in fh:
            head = line.split(None, 5)
            if len(head) >= 5 and "-" in head[0] and ":" not in head[0]:  # a mapping's header line
                inside = len(head) == 6 and os.path.realpath(head[5].strip()) == target
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1]) * 1024
    return total


def memory_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if k in before}


def mib(n: float) -> float:
    return n / (1 << 20)


# -- page cache ------------------------------------------------------------------------------------

_libc = None


def _mincore():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
        _libc.mincore.restype = ctypes.c_int
    return _libc.mincore


def page_cache_fraction(path: str) -> float | None:
    """Fraction of ``path``'s pages in the page cache (0..1), or None where mincore is unavailable."""
    size = os.path.getsize(path)
    if size == 0:
        return 1.0
    try:
        mincore = _mincore()
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            view = np.frombuffer(mm, dtype=np.uint8)
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vec = np.zeros(pages, dtype=np.uint8)
            rc = mincore(view.ctypes.data, size, vec.ctypes.data)
            del view
            if rc != 0:
                return None
            return float((vec & 1).mean())
    except (OSError, AttributeError):
        return None


def evict_page_cache(path: str) -> float | None:
    """Ask the kernel to drop ``path``'s clean cached pages (no root needed); return what is left.

    Pages that some process still has mapped and touched stay cached.
    """
    with open(path, "rb") as fh:
        try:
            os.fsync(fh.fileno())  # dirty pages are not dropped: write them back first
        except OSError:
            pass
        os.posix_fadvise(fh.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    return page_cache_fraction(path)


def cache_state(path: str) -> str:
    frac = page_cache_fraction(path)
    if frac is None:
        return "unknown"
    label = "warm" if frac > 0.99 else "cold" if frac < 0.01 else "partly cached"
    return f"{label} ({100 * frac:.0f}% of {os.path.basename(path)} in page cache)"


# -- machine ---------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _mem_total() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _blas_paths(maps) -> list[str]:
    """Shared libraries named lib*blas* in a /proc/<pid>/maps listing (not Python extension modules)."""
    paths = set()
    for line in maps:
        path = line.split()[-1]
        name = os.path.basename(path)
        if path.startswith("/") and name.startswith("lib") and "blas" in name and ".cpython" not in name:
            paths.add(path)
    return sorted(paths)


def blas_libraries() -> list[dict]:
    """Every OpenBLAS loaded in this process (numpy's and FAISS's are separate): config and threads."""
    found = []
    try:
        with open("/proc/self/maps") as fh:
            paths = _blas_paths(fh)
    except OSError:
        return found
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        info = {"library": os.path.basename(path)}
        for prefix, suffix in (("scipy_openblas", "64_"), ("scipy_openblas", ""), ("openblas", "64_"),
                               ("openblas", "")):
            cfg = getattr(lib, f"{prefix}_get_config{suffix}", None)
            nth = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
            if cfg is not None and nth is not None:
                cfg.restype = ctypes.c_char_p
                text = cfg().decode(errors="replace")
                info.update(config=text, threads=int(nth()),
                            core=text.split("MAX_THREADS")[0].split()[-1] if "MAX_THREADS" in text else None)
                break
        found.append(info)
    return found


def machine() -> dict:
    """A JSON-safe description of the machine and the thread settings in force."""
    import h5py
    import numba

    from .. import _runtime  # noqa: F401  (numba's threading layer, set before numba starts threads)

    import vecstore

    out = {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "simd": sorted(f for f in cpu_flags() if f in {"avx", "avx2", "fma", "f16c", "avx512f", "avx512bw",
                                                         "avx512_vnni", "avx512_fp16"}),
        "mem_total_bytes": _mem_total(),
        "load_average": list(os.getloadavg()),
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": _numba_layer(),
        "blas": blas_libraries(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                                            "MKL_NUM_THREADS", "OPENBLAS_CORETYPE", "NUMBA_THREADING_LAYER", "OMP_WAIT_POLICY")
                if k in os.environ},
        "versions": {"python": sys.version.split()[0], "numpy": np.__version__, "numba": numba.__version__,
                     "h5py": h5py.__version__, "vecstore": vecstore.__version__},
        "platform": platform.platform(),
    }
    if "faiss" in sys.modules:
        faiss = sys.modules["faiss"]
        out["faiss_omp_threads"] = faiss.omp_get_max_threads()
        out["versions"]["faiss"] = faiss.__version__
        out["faiss_compile_options"] = faiss.get_compile_options()
    return out


def _numba_layer() -> str:
    import numba

    from .. import _runtime  # noqa: F401  (numba's threading layer, set before numba starts threads)

    try:
        return numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        return f"not started (configured: {numba.config.THREADING_LAYER})"


def describe_machine(m: dict) -> str:
    """One line for the head of a report."""
    blas = "; ".join(f"{b['library'].split('-')[0]} {b.get('core', '?')} x{b.get('threads', '?')}"
                     for b in m.get("blas", []) if "config" in b)
    return (f"{m['cpu_model']}, {m['usable_cpus']} usable cpus ({m['logical_cpus']} logical), "
            f"{mib(m['mem_total_bytes'] or 0) / 1024:.0f} GiB RAM, load {m['load_average'][0]:.2f}; "
            f"numba {m['versions']['numba']} x{m['numba_threads']} ({m['numba_threading_layer']}), "
            f"faiss {m['versions'].get('faiss', '-')} x{m.get('faiss_omp_threads', '-')}, BLAS: {blas}")


# -- thread settings ------------------------------------------------------------------------------


def pin_threads_env(threads: int | None, *, fix_blas_core: bool = True, numba_env: bool = True) -> dict:
    """Set the thread environment that child processes (and libraries not yet loaded) read.

    Sets OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS and NUMBA_NUM_THREADS to
    ``threads``. With ``fix_blas_core``, also sets OPENBLAS_CORETYPE from the CPU flags when the user
    has not: FAISS's bundled OpenBLAS (0.3.15) does not recognise newer Xeons and falls back to its
    slowest (Prescott, SSE3) kernels, which slows FAISS's batch search several-fold and would flatter
    every ratio against it. Call before ``import faiss``; for this process also call
    :func:`vecstore.bench.faiss_twins.set_threads`. Pass ``numba_env=False`` in a process whose numba
    threads may already run: numba re-reads NUMBA_NUM_THREADS when it compiles, and refuses a value
    that differs from its running pool.

    Also sets OMP_WAIT_POLICY=PASSIVE unless the user has set it: FAISS's OpenMP threads (and numba's)
    otherwise spin for a while after every call, and on a machine with as many cores as threads the
    spinning pool of one library delays the next call of the other, which a benchmark alternating
    them measures (one query of an int8 scan: 4.4 ms alone, 9.8 ms right after a FAISS search, 5.4
    with passive waiting; FAISS unchanged at 12-13 ms).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") + (
                ("NUMBA_NUM_THREADS",) if numba_env else ()):
            os.environ[var] = str(threads)
    if fix_blas_core and "OPENBLAS_CORETYPE" not in os.environ:
        flags = cpu_flags()
        core = "SkylakeX" if "avx512f" in flags else "Haswell" if "avx2" in flags else None
        if core:
            os.environ["OPENBLAS_CORETYPE"] = core
    return {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_CORETYPE", "OMP_WAIT_POLICY")}


def set_blas_threads(threads: int) -> list[dict]:
    """Set the thread count of every OpenBLAS loaded in this process (numpy's and FAISS's)."""
    try:
        with open("/proc/self/maps") as fh:
            paths = _blas_paths(fh)
    except OSError:
        paths = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
                     "openblas_set_num_threads64_", "openblas_set_num_threads"):
            fn = getattr(lib, name, None)
            if fn is not None:
                fn.argtypes = (ctypes.c_int,)
                fn(int(threads))
                break
    return blas_libraries()
