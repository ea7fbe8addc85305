"""``vecstore bench``: sweep codecs and rescoring settings on the user's data, FAISS alongside.

For every codec of the sweep, in a temporary directory that is removed afterwards:

1. train the codec once on ``train_size`` rows sampled as ``vecstore compress`` samples them, add it
   as a tier to a copy of the base store (``vecstore.compress`` with those parameters) and open the
   store with that tier resident in RAM;
2. build its FAISS twin (:mod:`vecstore.bench.faiss_twins`) from the same sample, and for two-stage
   configurations wrap it in IndexRefineFlat / IndexRefine(SQfp16) (:mod:`vecstore.bench.faiss_refine`);
3. measure every configuration of the codec (single-stage, then rescored with each oversample) against
   its twin, alternating the two, with the same thread count (:mod:`vecstore.bench.measure`).

The result is one JSON-safe document: the workload, the machine, the settings and one row per
(system, configuration); :mod:`vecstore.bench.report` turns it into a table, JSON and a plot.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import InvalidInputError, VecstoreError
from ..store.build import DEFAULT_TRAIN_SIZE
from . import configs as cfgs
from .inputs import Workload, load_workload
from .measure import System, measure
from .recommend import reproduce_commands

TOLERANCE = 1e-5
_THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
               "OPENBLAS_CORETYPE")


@dataclass
class SweepOptions:
    """Everything ``vecstore bench`` is asked; see the CLI's help for each option."""

    input_path: str
    queries: str | None = None
    holdout: int | None = None
    ground_truth: str | None = None
    codecs: str | None = None
    rescore: str | None = None
    oversample: str | None = None
    k: int = 10
    n: int | None = None
    metric: str | None = None
    threads: int | None = None
    train_size: int = DEFAULT_TRAIN_SIZE
    seed: int = 0
    single: int = 100
    repeats: int = 3
    workdir: str | None = None
    progress: bool = True


class CannotRun(Exception):
    """A codec of the sweep cannot run on this input: it is skipped and reported, not fatal."""


def _positive(value, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")


def _log(text: str) -> None:
    from tqdm import tqdm

    tqdm.write(text, file=sys.stderr)


def run_sweep(opts: SweepOptions) -> dict:
    """Run the whole sweep; return the result document (see the module docstring)."""
    for name in ("k", "train_size", "single", "repeats"):
        _positive(getattr(opts, name), f"--{name.replace('_', '-')}")
    if opts.threads is not None:
        _positive(opts.threads, "--threads")
    rescore = cfgs.parse_rescore(opts.rescore)
    oversamples = cfgs.parse_oversamples(opts.oversample)
    workload = load_workload(opts.input_path, queries=opts.queries, holdout=opts.holdout,
                             ground_truth=opts.ground_truth, n=opts.n, metric=opts.metric, seed=opts.seed)
    codecs = cfgs.parse_codec_list(opts.codecs, workload.dim)
    train_size = min(opts.train_size, workload.nb)
    skipped = []
    for codec in codecs:
        need = cfgs.min_training_rows(codec)
        if train_size < need:
            skipped.append({"codec": codec, "reason": f"needs at least {need} training vectors, but only "
                            f"{train_size} are available (database {workload.nb} rows, --train-size "
                            f"{opts.train_size})"})
    codecs = [c for c in codecs if c not in {s["codec"] for s in skipped}]
    if not codecs:
        raise InvalidInputError("no codec can run on this input: " + "; ".join(
            f"codec {s['codec']} {s['reason']}" for s in skipped) + ": use more rows or a smaller codec")
    plan = cfgs.configurations(codecs, rescore, oversamples, workload.dim)
    if opts.k > workload.nb:
        raise InvalidInputError(f"--k {opts.k} is more than the {workload.nb} database vectors")

    from . import metrics

    saved_env = {v: os.environ.get(v) for v in _THREAD_ENV}
    metrics.pin_threads_env(opts.threads, numba_env=False)  # before FAISS (and its OpenBLAS) loads
    import faiss
    import numba

    from .. import _runtime  # noqa: F401  (numba's threading layer, set before numba starts threads)

    from . import faiss_twins

    before = (numba.get_num_threads(), faiss.omp_get_max_threads(),
              max([b.get("threads") or 0 for b in metrics.blas_libraries()] + [0]))
    threads = faiss_twins.set_threads(opts.threads)
    tmp = tempfile.mkdtemp(prefix="vecstore-bench-", dir=opts.workdir)
    try:
        return _run(opts, workload, codecs, plan, rescore, oversamples, train_size, threads, tmp, skipped)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        numba.set_num_threads(before[0])
        faiss.omp_set_num_threads(before[1])
        if before[2]:
            metrics.set_blas_threads(before[2])
        for var, value in saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value


def _run(opts: SweepOptions, workload: Workload, codecs: list[str], plan: dict, rescore: tuple,
         oversamples: tuple, train_size: int, threads: int, tmp: str, skipped: list[dict]) -> dict:
    from tqdm import tqdm

    import vecstore

    from . import faiss_twins, metrics
    from .groundtruth import Judge, exact_neighbors

    t_start = time.perf_counter()
    metric, k, nb = workload.metric, opts.k, workload.nb
    _log(f"bench: {workload.name}: {nb} x {workload.dim}, metric {metric}, {workload.nq} queries "
         f"({workload.queries_from}); {threads} threads; temporary stores in {tmp}")
    for skip in skipped:
        _log(f"skipped {skip['codec']}: {skip['reason']}")
    base = os.path.join(tmp, "base.vs")
    t0 = time.perf_counter()
    vecstore.build(base, workload.database, metric=metric, progress=opts.progress).close()
    base_build_s = time.perf_counter() - t0
    base_store = vecstore.open(base)
    try:
        raw = base_store.tier().codes                  # unit rows for cosine: FAISS gets exactly these
        xq = workload.queries
        xq_f = faiss_twins.normalize_rows(xq) if metric == "cosine" else np.ascontiguousarray(xq)
        t0 = time.perf_counter()
        gt = workload.groundtruth
        if gt is None:
            gt = exact_neighbors(base_store, xq, progress=opts.progress)
        gt_s = time.perf_counter() - t0
        judge = Judge(gt, raw, xq_f, metric, TOLERANCE)
        rows_idx = faiss_twins.training_rows(nb, train_size, opts.seed)
        sample = np.ascontiguousarray(raw[rows_idx], dtype=np.float32)

        rows: list[dict] = []
        total = sum(len(v) for v in plan.values())
        with tqdm(total=total, desc="bench", unit="config", file=sys.stderr, dynamic_ncols=True,
                  disable=not opts.progress) as bar:
            for i, codec in enumerate(codecs):
                try:
                    rows += _run_codec(codec, plan[codec], i, opts, workload, base, base_store, base_build_s,
                                       raw, sample, xq, xq_f, judge, threads, train_size, tmp, bar)
                except CannotRun as exc:
                    skipped.append({"codec": codec, "reason": str(exc)})
                    _log(f"skipped {codec}: {exc}")
                    bar.update(len(plan[codec]))
    finally:
        base_store.close()
    if not rows:
        raise InvalidInputError("no codec could run on this input: " + "; ".join(
            f"{s['codec']}: {s['reason']}" for s in skipped))
    settings = {"k": k, "batch_queries": workload.nq, "single_queries": min(opts.single, workload.nq),
                "repeats": opts.repeats, "warmup": 1, "train_size": train_size, "seed": opts.seed,
                "codecs": codecs, "rescore": list(rescore), "oversample": list(oversamples),
                "threads": threads, "tie_tolerance": TOLERANCE,
                "cache": "warm: every configuration is run once untimed first; scanned tiers are held in RAM, "
                         "rescoring tiers stay memory-mapped (page cache)"}
    return {"tool": "vecstore bench", "options": asdict(opts), "workload": workload.describe(),
            "machine": metrics.machine(), "settings": settings, "base_build_s": base_build_s,
            "groundtruth_s": gt_s, "rows": rows, "skipped": skipped, "total_s": time.perf_counter() - t_start,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def _run_codec(codec, configs, index_no, opts, workload, base, base_store, base_build_s, raw, sample, xq, xq_f,
               judge, threads, train_size, tmp, bar) -> list[dict]:
    import vecstore

    from .faiss_refine import add_refine, build_twin_sized

    metric, nb = workload.metric, workload.nb
    bar.set_postfix_str(f"{codec}: train + encode")
    if codec == cfgs.RAW:
        path, tier, train_s, build_s = base, "raw", 0.0, base_build_s
        store = base_store
    else:
        pipeline = vecstore.get_codec(codec, workload.dim)
        tier = str(pipeline)
        t0 = time.perf_counter()
        try:
            pipeline.fit(sample, seed=opts.seed)                   # what `vecstore compress` trains
        except VecstoreError as exc:                               # e.g. too few rows for this codec
            raise CannotRun(f"training failed: {exc}") from None
        train_s = time.perf_counter() - t0
        path = os.path.join(tmp, f"tier{index_no}.vs")
        _link_or_copy(base, path)                                  # compress replaces the link, not base
        t0 = time.perf_counter()
        vecstore.compress(path, codec, params=pipeline.params(), seed=opts.seed, calibrate=False,
                          progress=False).close()
        build_s = time.perf_counter() - t0
        store = vecstore.open(path, resident=[tier])
    out: list[dict] = []
    try:
        bar.set_postfix_str(f"{codec}: FAISS twin")
        index, twin = build_twin_sized(codec, raw, metric=metric, train=sample)
        if store.tier(tier).lists is not None:  # both probe the lists vecstore's search probes by default
            from .faiss_twins import set_nprobe

            set_nprobe(index, store.tier(tier).default_nprobe)
        refine_cache: dict = {}
        f16_build_s = 0.0
        for cfg in configs:
            if cfg.rescore == "float16" and "float16" not in store.tiers:
                bar.set_postfix_str(f"{codec}: float16 tier")
                store.close()
                t0 = time.perf_counter()
                vecstore.compress(path, "float16", calibrate=False, progress=False).close()
                f16_build_s = time.perf_counter() - t0
                store = vecstore.open(path, resident=[tier])
            if cfg.rescore is None:
                faiss_index, refine = index, None
            else:
                if cfg.rescore not in refine_cache:
                    refine_cache[cfg.rescore] = add_refine(index, raw, fine=cfg.rescore, metric=metric)
                faiss_index, refine = refine_cache[cfg.rescore]
                faiss_index.k_factor = float(cfg.oversample)
            bar.set_postfix_str(cfg.label)
            figures = measure(
                [System("vecstore", _vecstore_search(store, tier, cfg), xq),
                 System("faiss", lambda q, kk, ix=faiss_index: ix.search(q, kk), xq_f)],
                judge, k=opts.k, single=opts.single, repeats=opts.repeats)
            t = store.tier(tier)
            common = {"config": cfg.label, "codec": codec, "rescore": cfg.rescore, "oversample": cfg.oversample,
                      "n": nb, "corpus_rows": workload.input_rows, "k": opts.k, "threads": threads}
            ours_code = t.bytes_per_vector
            # parameters spread over the input's rows, as the advice counts them (recommend.py): the
            # store a user builds holds them all, not only the database rows measured here
            corpus = workload.input_rows
            ours = {"system": "vecstore", **common, "tier": tier, "twin": cfg.twin_label(),
                    "code_bytes_per_vector": t.codec.code_size if codec != cfgs.RAW else 4 * workload.dim,
                    "resident_code_bytes_per_vector": ours_code, "param_bytes": t.param_bytes,
                    "resident_bytes_per_vector": ours_code + t.param_bytes / corpus,
                    "resident_bytes_total": ours_code * corpus + t.param_bytes,
                    "disk_bytes_per_vector": os.path.getsize(path) / nb,
                    "train_s": train_s, "build_s": build_s + (f16_build_s if cfg.rescore == "float16" else 0.0),
                    **figures["vecstore"]}
            theirs_code = twin["code_size"] + (refine["refine_bytes_per_vector"] if refine else 0)
            theirs = {"system": "faiss", **common, "factory": cfg.twin_label(),
                      "code_bytes_per_vector": twin["code_size"],
                      "resident_code_bytes_per_vector": theirs_code, "param_bytes": twin["param_bytes"],
                      "resident_bytes_per_vector": theirs_code + twin["param_bytes"] / corpus,
                      "resident_bytes_total": theirs_code * corpus + twin["param_bytes"],
                      "disk_bytes_per_vector": theirs_code + twin["param_bytes"] / corpus,
                      "train_s": twin["train_s"], "build_s": twin["add_s"] + (refine["add_s"] if refine else 0.0),
                      **figures["faiss"]}
            ours["vs_faiss"] = _ratios(ours, theirs)
            ours["commands"] = reproduce_commands(
                codec=codec, rescore=cfg.rescore, oversample=cfg.oversample, input_path=workload.input_path,
                input_kind=workload.kind, metric=metric, queries_path=workload.queries_path,
                train_size=opts.train_size, seed=opts.seed, k=opts.k)
            out += [ours, theirs]
            _log(f"{cfg.label}: recall@{opts.k} {_fmt(ours['recall_at_k'])} (FAISS {_fmt(theirs['recall_at_k'])}), "
                 f"{ours['resident_bytes_per_vector']:.1f} B/vector resident (FAISS "
                 f"{theirs['resident_bytes_per_vector']:.1f}), {ours['qps']:,.0f} QPS (FAISS {theirs['qps']:,.0f}), "
                 f"p50 {ours['p50_ms']:.2f} ms (FAISS {theirs['p50_ms']:.2f})")
            bar.update(1)
    finally:
        if store is not base_store:
            store.close()
            os.unlink(path)
    return out


def _vecstore_search(store, tier: str, cfg: cfgs.Config):
    def search(q, kk):
        return store.search(q, kk, tier=tier, rescore=cfg.rescore, oversample=cfg.oversample)
    return search


def _ratios(ours: dict, theirs: dict) -> dict:
    def div(a, b):
        return a / b if a is not None and b else None

    recall_diff = (ours["recall_at_k"] - theirs["recall_at_k"]
                   if ours["recall_at_k"] is not None and theirs["recall_at_k"] is not None else None)
    return {"faiss_resident_over_ours": div(theirs["resident_bytes_per_vector"], ours["resident_bytes_per_vector"]),
            "qps_ours_over_faiss": div(ours["qps"], theirs["qps"]),
            "p50_ours_over_faiss": div(ours["p50_ms"], theirs["p50_ms"]),
            "recall_at_k_ours_minus_faiss": recall_diff}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
