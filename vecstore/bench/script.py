"""What every benchmark script shares: its output options, thread counts, folders, a stderr logger,
data, and the .json + .md results it writes.

Call :func:`pin_environment` before FAISS (and its OpenBLAS) is imported, then :func:`start`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from . import metrics


def add_output_options(parser: argparse.ArgumentParser, benchmarks_dir: str) -> None:
    """``--workdir`` and ``--out``, the same in every script, so results and cached data land in the
    folders benchmarks/README.md names (``work/``, git-ignored, and ``results/``)."""
    parser.add_argument("--workdir", default=os.path.join(benchmarks_dir, "work"))
    parser.add_argument("--out", default=os.path.join(benchmarks_dir, "results"),
                        help="directory for the .json and .md")


def add_blas_core_option(parser: argparse.ArgumentParser) -> None:
    """``--keep-blas-core``, for the scripts that time FAISS: see :func:`pin_environment`."""
    parser.add_argument("--keep-blas-core", action="store_true",
                        help="do not set OPENBLAS_CORETYPE (FAISS's OpenBLAS may then use Prescott kernels)")


def pin_environment(threads: int | None, *, fix_blas_core: bool = True) -> None:
    """Thread environment for this process's libraries and its children (see metrics)."""
    metrics.pin_threads_env(threads, fix_blas_core=fix_blas_core)


def setup(args) -> int:
    """Set one thread count for numba, FAISS and BLAS (``args.threads``, else every CPU this process
    may use) and create ``args.workdir`` and ``args.out``; returns the thread count."""
    from . import faiss_twins

    threads = faiss_twins.set_threads(args.threads or len(os.sched_getaffinity(0)))
    os.makedirs(args.workdir, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    return threads


def stamped_log(text: str) -> None:
    """A line on stderr after the wall-clock time, for runs of many minutes whose steps a reader
    times by the log (bench_ivf.py, bench_realtime.py)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def start(args):
    """:func:`setup`, then load ``args.data`` (exiting with the data README's advice when it is
    missing).

    Returns (threads, log, dataset); ``log(text)`` writes above the progress bars on stderr.
    """
    from tqdm import tqdm

    from . import datasets

    threads = setup(args)

    def log(text: str) -> None:
        tqdm.write(text, file=sys.stderr)

    try:
        ds = datasets.load_dataset(args.data, n=args.n, nq=args.nq, dim=args.dim, seed=args.seed,
                                   workdir=args.workdir, progress=True)
    except datasets.DataNotFoundError as exc:
        sys.exit(f"error: {exc}")
    return threads, log, ds


def start_timed(args):
    """:func:`start` for a script that times single queries against FAISS (``--threads``,
    ``--keep-blas-core``): the thread environment pinned first, OpenMP's passive wait unless the
    caller set a policy. Returns (threads, log, dataset, the load average at the start)."""
    pin_environment(args.threads, fix_blas_core=not args.keep_blas_core)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    threads, log, ds = start(args)
    return threads, log, ds, list(os.getloadavg())


def load_text(values) -> str:
    """A load average (1, 5, 15 min) as a results file prints it; "?" when it was not recorded."""
    return "?" if not values else ", ".join(f"{v:.2f}" for v in values)


def command_line(script_path: str, argv: list[str] | None) -> str:
    """The command a result records, so that whoever reads it can run it again from the repository root.

    ``argv`` is what ``main(argv)`` was given; None means the process's own arguments.
    """
    return " ".join(["python", f"benchmarks/{os.path.basename(script_path)}", *(sys.argv[1:] if argv is None else argv)])


def dataset_tag(ds) -> str:
    """The dataset's name with its row count once, so that results of different ``--n`` do not
    overwrite each other (an ann-benchmarks slice's name already ends in ``-n<rows>``)."""
    return ds.name if ds.name.endswith(f"-n{ds.nb}") else f"{ds.name}-n{ds.nb}"


def faiss_queries(xq: np.ndarray, metric: str) -> np.ndarray:
    """Queries as a FAISS twin must get them, shape (nq, d), C-contiguous: unit float32 rows for
    cosine, since a store normalizes cosine queries itself and FAISS's inner product does not."""
    from .faiss_twins import normalize_rows

    return normalize_rows(xq) if metric == "cosine" else np.ascontiguousarray(xq)


def write_results(stem: str, result: dict, markdown: str) -> None:
    """``<stem>.json`` (every figure and its conditions, for scripts) and ``<stem>.md`` (for people)."""
    with open(stem + ".json", "w") as fh:
        json.dump(result, fh, indent=1, default=float)
    with open(stem + ".md", "w") as fh:
        fh.write(markdown)
