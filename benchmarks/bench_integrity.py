"""Issue 16's figures: integrity of appended segments, deletions, cleanup and re-deploys.

    python benchmarks/bench_integrity.py fuzz            # >= 2,000 seeded mutations, ~ a few minutes
    python benchmarks/bench_integrity.py cleanup-race    # readers vs one writer of an old store, ~60 s
    python benchmarks/bench_integrity.py kill-points     # SIGKILL every writer at each rename/unlink/fsync
    python benchmarks/bench_integrity.py errors          # errors that escape as something else
    python benchmarks/bench_integrity.py all

Each part prints its table and merges its figures into ``--out``.json / .md (default
benchmarks/results/integrity-before). Stores and probes live under ``--workdir`` (default
/tmp/vecstore-integrity). See benchmarks/integrity/README.md.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
# children (forkserver, subprocesses) import this worktree's vecstore and benchmarks.integrity
os.environ["PYTHONPATH"] = ROOT + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from benchmarks.integrity import common as C  # noqa: E402

DEFAULT_OUT = os.path.join(C.RESULTS, "integrity-before")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/vecstore-integrity")
    parser.add_argument("--out", default=DEFAULT_OUT, help="results prefix ('' to write nothing)")
    sub = parser.add_subparsers(dest="part", required=True)

    f = sub.add_parser("fuzz", help="seeded mutations of main file, manifest, segments, deleted ids")
    f.add_argument("--mutations", type=int, default=2000)
    f.add_argument("--seed", type=int, default=16)
    f.add_argument("--workers", type=int, default=2)
    f.add_argument("--timeout", type=float, default=60.0, help="seconds a probe may take (else: hung)")
    f.add_argument("--mem-limit", type=int, default=4 << 30, help="RLIMIT_AS of a probe, bytes (0: none)")
    f.add_argument("--json", default=None, help="also write every probe's record here")

    r = sub.add_parser("cleanup-race", help="readers open and search while a writer changes an old store")
    r.add_argument("--seconds", type=float, default=60.0, help="how long the writer runs (unless --ops)")
    r.add_argument("--ops", type=int, default=0, help="number of writes (0: until --seconds)")
    r.add_argument("--n", type=int, default=20000, help="documents in the store")
    r.add_argument("--age", type=float, default=7200.0, help="seconds into the past files are set before each write")
    r.add_argument("--mix", default="delete:85,append:10,compact:5", help="writes, by weight")
    r.add_argument("--seed", type=int, default=16)

    k = sub.add_parser("kill-points", help="SIGKILL each writer at every rename/link/unlink/fsync/move call")
    k.add_argument("--writers", default="build-over,compress,append,delete,compact,swap,swap-back,add-encoder")
    k.add_argument("--max-points", type=int, default=0, help="stop a writer after this many points (0: all)")
    k.add_argument("--age", type=float, default=7200.0, help="seconds into the past the store's files are set first (0: not)")

    e = sub.add_parser("errors", help="scripted errors that escape as something else, and silent cases")
    e.add_argument("--tmpfs-size", default="4m")

    a = sub.add_parser("all", help="every part with its defaults")
    a.add_argument("--mutations", type=int, default=2000)

    args = parser.parse_args(argv)
    os.makedirs(args.workdir, exist_ok=True)
    everything = args.part == "all"
    parts = ["fuzz", "cleanup-race", "kill-points", "errors"] if everything else [args.part]
    top = args
    for part in parts:
        if everything:
            args = parser.parse_args(["--workdir", top.workdir, "--out", top.out, part]
                                     + (["--mutations", str(top.mutations)] if part == "fuzz" else []))
        sub_workdir = argparse.Namespace(**vars(args))
        sub_workdir.workdir = os.path.join(args.workdir, part)
        os.makedirs(sub_workdir.workdir, exist_ok=True)
        if part == "fuzz":
            from benchmarks.integrity import fuzz as mod
        elif part == "cleanup-race":
            from benchmarks.integrity import race as mod
        elif part == "kill-points":
            from benchmarks.integrity import killpoints as mod
        else:
            from benchmarks.integrity import errors as mod
        result = mod.run(sub_workdir)
        C.save_section(part, result["data"], result["markdown"], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
