"""The start every benchmark script shares: thread counts, output folders, a stderr logger, data.

Call :func:`pin_environment` before FAISS (and its OpenBLAS) is imported, then :func:`start`.
"""

from __future__ import annotations

import os
import sys

from . import metrics


def pin_environment(threads: int | None, *, fix_blas_core: bool = True) -> None:
    """Thread environment for this process's libraries and its children (see metrics)."""
    metrics.pin_threads_env(threads, fix_blas_core=fix_blas_core)


def start(args):
    """Set one thread count for numba, FAISS and BLAS, create ``args.workdir`` and ``args.out``,
    and load ``args.data`` (exiting with the data README's advice when it is missing).

    Returns (threads, log, dataset); ``log(text)`` writes above the progress bars on stderr.
    """
    from tqdm import tqdm

    from . import datasets, faiss_twins

    threads = faiss_twins.set_threads(args.threads or len(os.sched_getaffinity(0)))
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)

    def log(text: str) -> None:
        tqdm.write(text, file=sys.stderr)

    try:
        ds = datasets.load_dataset(args.data, n=args.n, nq=args.nq, dim=args.dim, seed=args.seed,
                                   workdir=args.workdir, progress=True)
    except datasets.DataNotFoundError as exc:
        sys.exit(f"error: {exc}")
    return threads, log, ds
