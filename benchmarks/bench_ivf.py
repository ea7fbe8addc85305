#!/usr/bin/env python
"""Inverted-file tier (issue 19): vecstore's ivf codecs against FAISS IVF{nlist},PQ{m}x4fs + Refine(SQfp16).

    python benchmarks/bench_ivf.py --n 1000000                        # every part, 1M generated documents
    python benchmarks/bench_ivf.py --n 10000000                       # 10M (15.4 GB .npy; see --help's notes)
    python benchmarks/bench_ivf.py --n 20000 --nq 200 --single 50 --codecs "ivf64,pq32x4"   # a smoke run (~1 min)
    python benchmarks/bench_ivf.py --n 1000000 --parts faiss          # one part; results are merged

Data: nothing to download for the generated sets. ``benchmarks/ivf_data.py`` makes them (seeded, a
two-level Gaussian mixture like 384-d sentence embeddings, unit rows; its docstring says what it is)
into ``--workdir`` (default benchmarks/work, git-ignored): the base .npy written block by block,
``--nq`` held-out queries and the exact top-100 from a chunked FAISS IndexFlatIP scan; everything is
reused when present. Row i is the same for every --n. Sizes on disk: 1M = 1.5 GB, 10M = 15.4 GB, plus
a store of the same size (its raw tier) and FAISS's saved twins (SQfp16 refine: 768 B a vector).
The ``real`` part needs the real 100,000 x 384 WordNet / all-MiniLM-L6-v2 set at
../shared/data/wordnet-minilm-384.hdf5 (``--real``; ../shared/data/README.md says where to get it,
make_wordnet_minilm.py regenerates it; any ann-benchmarks .hdf5 with train/test/neighbors works).

Parts (``--parts``, comma-separated; default all):

data      generate the base, queries and ground truth (seconds recorded).
faiss     for every codec's twin (``ivf4096,pq32x4`` -> ``IVF4096,PQ32x4fs,Refine(SQfp16)``; ``ivfN,int8``
          -> ``IVFN,SQ8,Refine(SQfp16)``): train on the rows ``vecstore.compress`` samples (same
          --train-size, same seed) and add the whole file in chunks, in a child process (time,
          VmHWM and sampled RssAnon/RssFile peaks); the index is saved to --workdir. Then, in this
          process, nprobe x k_factor swept: recall@10 on the held-out queries, batch QPS (all --nq
          queries in one call, median of --repeats), single-query p50/p99 (--sweep-single calls).
          Reported: FAISS's least-memory configuration reaching recall@10 >= 0.95 (resident bytes:
          codes in their 32-row blocks + 8 B ids + SQfp16 refine + centroids and tables / n, all in RAM)
          and its fastest one at that recall.
vecstore  ``vecstore.build(store, base.npy, metric="ip")`` in a child (time, peak RSS), then
          ``vecstore.compress(store, codec, train_size=...)`` per codec in a child (train, encode,
          calibrate: time, peak RSS); the calibration record (nprobe, oversample, rescore, predicted
          recall@10, latency) read from ``store.info()``; the default search (``store.search(q, 10)``)
          and each codec's calibrated plan measured on the held-out queries: recall@10, single-query
          p50/p99 alternating call by call with FAISS's two configurations above (a fresh query every
          call, a random order each round), batch QPS alternating run by run; ``store.memory()`` (RssAnon, the tier's
          resident and fast-scan bytes) per vector; an nprobe sweep of each tier at its calibrated oversample.
real      the real 100K set: a store with the flat tier (--real-flat, pq96x4) and the ivf tier wrapping it
          (--real-ivf, ivf1024,pq96x4), each searched with its calibrated default plan; recall@10
          against the shipped neighbours (target: the ivf tier loses none).

Targets (issue 19): recall@10 >= 0.95 at <= 64 B/vector resident; single-query p50 <= 1.0x and batch
QPS >= 1.0x FAISS's at the same recall; p50 growth 1M -> 10M <= 3x (``--growth-from`` a 1M result);
build peak RSS <= 4 GB and build time <= 1.5x FAISS's train + add; the real set loses no recall.
Writes results/ivf-n<N>.md and .json (a run of some parts updates the parts already there).
2 threads (numba, FAISS's OpenMP, both BLAS), OMP_WAIT_POLICY=PASSIVE, page cache warm unless said.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)

from vecstore.bench import script  # noqa: E402  (light: pins threads before numpy/FAISS load BLAS)

PARTS = ("data", "faiss", "vecstore", "real")
K = 10
TARGET_RECALL = 0.95
BUDGET = 64.0
TARGETS = {"p50": 1.0, "qps": 1.0, "growth": 3.0, "build_rss_gb": 4.0, "build_time": 1.5, "real_loss": 0.0}
NPROBE = "1 2 4 8 16 32 64 128 256 512"
K_FACTORS = "1 2 4 8 16 32 64 128 256 512 1024"
REAL = os.path.join(ROOT, "..", "shared", "data", "wordnet-minilm-384.hdf5")


def default_codecs(n: int) -> str:
    """nlist near 4 sqrt(n) rounded to a power of two (FAISS's advice: 4-16 sqrt(n)), 16 and 24 B of codes."""
    nlist = 1 << max(4, round(__import__("math").log2(4 * n ** 0.5)))
    return f"ivf{nlist},pq32x4 ivf{nlist},pq48x4"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    ap.add_argument("--n", type=int, default=1_000_000, help="documents (rows of the generated set)")
    ap.add_argument("--nq", type=int, default=1000, help="held-out queries (batch size of the QPS figures)")
    ap.add_argument("--codecs", default=None, help="ivf codec strings, space- or ';'-separated "
                    "(default by n: ivf<nlist>,pq32x4 and ivf<nlist>,pq48x4 with nlist ~ 4 sqrt(n))")
    ap.add_argument("--train-size", type=int, default=None,
                    help="training rows for both systems (default: min(n, max(100,000, 64 nlist)))")
    ap.add_argument("--nprobe", default=NPROBE, help="FAISS nprobe sweep (values above nlist dropped)")
    ap.add_argument("--k-factors", default=K_FACTORS, help="FAISS Refine k_factor sweep")
    ap.add_argument("--vs-nprobe", default="4 8 16 32 64 128 256", help="vecstore nprobe sweep at the calibrated oversample")
    ap.add_argument("--single", type=int, default=1000, help="single-query calls per system in the head-to-head")
    ap.add_argument("--sweep-single", type=int, default=200, help="single-query calls per swept configuration")
    ap.add_argument("--repeats", type=int, default=5, help="timed batch runs after a warm-up")
    ap.add_argument("--growth-from", default=None, help="a smaller run's results .json for the p50 growth figure")
    ap.add_argument("--real", default=REAL, help="ann-benchmarks .hdf5 of the real-set check")
    ap.add_argument("--real-flat", default="pq96x4")
    ap.add_argument("--real-ivf", default="ivf1024,pq96x4")
    ap.add_argument("--rebuild", action="store_true", help="rebuild FAISS indexes and the store even if saved")
    ap.add_argument("--rescoring", default="raw", choices=("raw", "float16"),
                    help="float16: the store also holds a float16 tier (mapped, like raw), compressed before the "
                         "ivf tiers so that their calibration can choose to rescore from it")
    ap.add_argument("--report-only", action="store_true", help="write the .md again from the saved .json; run nothing")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    script.add_output_options(ap, HERE)
    args = ap.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        ap.error(f"unknown --parts {sorted(unknown)}; choose from {','.join(PARTS)}")
    args.codecs = [c for c in re.split(r"[;\s]+", args.codecs or default_codecs(args.n)) if c]
    for c in args.codecs:
        parse_ivf(c)
    if args.train_size is None:
        nlist = max(parse_ivf(c)[0] for c in args.codecs)
        args.train_size = min(args.n, max(100_000, 64 * nlist))
    return args


# -- helpers ---------------------------------------------------------------------------------------


def parse_ivf(codec: str) -> tuple[int, str]:
    """(nlist, inner codec) of ``ivf<nlist>,<inner>``."""
    m = re.fullmatch(r"ivf(\d+),(.+)", codec.strip().lower())
    if not m:
        raise SystemExit(f"error: {codec!r} is not an ivf codec string (ivf<nlist>,<inner>, e.g. ivf4096,pq32x4)")
    return int(m.group(1)), m.group(2)


def faiss_factory(codec: str) -> str:
    """The FAISS twin of an ivf codec: the same lists and code bytes, refined from SQfp16."""
    nlist, inner = parse_ivf(codec)
    m = re.fullmatch(r"pq(\d+)x4", inner)
    if m:
        return f"IVF{nlist},PQ{m.group(1)}x4fs,Refine(SQfp16)"
    m = re.fullmatch(r"pq(\d+)(x8)?", inner)
    if m:
        return f"IVF{nlist},PQ{m.group(1)}np,Refine(SQfp16)"
    if inner == "int8":
        return f"IVF{nlist},SQ8,Refine(SQfp16)"
    if inner == "float16":
        return f"IVF{nlist},SQfp16"
    raise SystemExit(f"error: no FAISS twin for the inner codec {inner!r} of {codec!r}")


def values(text: str) -> list[float]:
    return [float(x) for x in str(text).replace(",", " ").split()]


def least_memory(rows: list[dict]) -> dict | None:
    """Least resident bytes among rows reaching the target; the fastest (p50) of those."""
    ok = [r for r in rows if r["recall_at_10"] >= TARGET_RECALL]
    return min(ok, key=lambda r: (round(r["resident_bytes_per_vector"], 1), r["p50_ms"])) if ok else None


def fastest(rows: list[dict]) -> dict | None:
    ok = [r for r in rows if r["recall_at_10"] >= TARGET_RECALL]
    return min(ok, key=lambda r: (r["p50_ms"], -r["qps"])) if ok else None


def npy_offset(path: str) -> tuple[int, tuple]:
    """(byte offset of the data, shape) of a C-ordered float32 .npy."""
    import numpy as np

    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(fh)
        if fortran or dtype != np.float32:
            raise ValueError(f"{path}: expected a C-ordered float32 array")
        return fh.tell(), shape


def read_rows(fd: int, offset: int, d: int, start: int, count: int):
    """Rows [start, start + count) read with pread (no mapping, so the file's pages do not count in RSS)."""
    import numpy as np

    out = np.empty((count, d), dtype=np.float32)
    view, pos, want = memoryview(out).cast("B"), 0, count * d * 4
    while pos < want:
        got = os.preadv(fd, [view[pos:]], offset + start * d * 4 + pos)
        if got <= 0:
            raise OSError(f"short read at row {start}")
        pos += got
    return out


def proc_status(pid) -> dict:
    out = {}
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                name, _, rest = line.partition(":")
                if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                    out[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def run_child(spec: dict, log) -> dict:
    """Run ``spec`` in a fresh interpreter (this script with --child), sampling its memory every 50 ms.

    Returns the child's JSON answer plus wall seconds, its own VmHWM at exit and the sampled peaks."""
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    done = threading.Event()

    def sample():
        while not done.is_set():
            st = proc_status(proc.pid)
            for k in peaks:
                peaks[k] = max(peaks[k], st.get(k, 0))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"child {spec['kind']} failed ({proc.returncode}): {err[-3000:]}")
    answer = json.loads(out.strip().splitlines()[-1])
    answer.update(wall_s=wall, sampled_peak_bytes=peaks)
    return answer


def child_main(spec: dict) -> None:
    """The work of one child process; prints one JSON line."""
    t_import = time.perf_counter()
    script.pin_environment(spec["threads"])
    import numpy as np

    import faiss

    import vecstore  # noqa: F401  (the same imports in every child: the baseline is comparable)
    from vecstore.bench import faiss_twins

    faiss_twins.set_threads(spec["threads"])
    base_hwm = proc_status("self").get("VmHWM", 0)
    out: dict = {"import_s": time.perf_counter() - t_import, "baseline_vmhwm_bytes": base_hwm}
    kind = spec["kind"]
    if kind == "faiss_build":
        offset, (n, d) = npy_offset(spec["base"])
        fd = os.open(spec["base"], os.O_RDONLY)
        try:
            rows = faiss_twins.training_rows(n, spec["train_size"], spec["seed"])
            t0 = time.perf_counter()
            train = np.empty((rows.shape[0], d), dtype=np.float32)
            for i, r in enumerate(rows):
                train[i] = read_rows(fd, offset, d, int(r), 1)[0]
            out["read_sample_s"] = time.perf_counter() - t0
            index = faiss.index_factory(d, spec["factory"], faiss.METRIC_INNER_PRODUCT)
            t0 = time.perf_counter()
            index.train(train)
            out["train_s"] = time.perf_counter() - t0
            del train
            t0 = time.perf_counter()
            chunk = 65536
            for start in range(0, n, chunk):
                index.add(read_rows(fd, offset, d, start, min(chunk, n - start)))
            out["add_s"] = time.perf_counter() - t0
        finally:
            os.close(fd)
        out["vmhwm_bytes"] = proc_status("self").get("VmHWM", 0)
        ivf = faiss.extract_index_ivf(index)
        out["niter"] = int(ivf.cp.niter)
        t0 = time.perf_counter()
        faiss.write_index(index, spec["out"] + ".tmp")
        os.replace(spec["out"] + ".tmp", spec["out"])
        out["write_s"] = time.perf_counter() - t0
    elif kind == "vecstore_build":
        t0 = time.perf_counter()
        vecstore.build(spec["store"], spec["base"], metric="ip", overwrite=True, progress=False).close()
        out["build_s"] = time.perf_counter() - t0
        out["vmhwm_bytes"] = proc_status("self").get("VmHWM", 0)
    elif kind == "vecstore_compress":
        t0 = time.perf_counter()
        vecstore.compress(spec["store"], spec["codec"], train_size=spec["train_size"], seed=spec["seed"],
                          replace=spec.get("replace", False), calibrate=spec.get("calibrate", True),
                          progress=False).close()
        out["compress_s"] = time.perf_counter() - t0
        out["vmhwm_bytes"] = proc_status("self").get("VmHWM", 0)
    else:
        raise SystemExit(f"unknown child kind {kind!r}")
    print(json.dumps(out))


# -- the run ---------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args):
        import numpy as np

        from vecstore.bench import metrics

        self.args, self.np = args, np
        self.threads = script.setup(args)
        self.stem = os.path.join(args.out, f"ivf-n{args.n}")
        self.result = {"parts": {}}
        if os.path.exists(self.stem + ".json"):   # earlier parts of the same --n: keep them
            with open(self.stem + ".json") as fh:
                self.result = json.load(fh)
        self.machine = metrics.machine()
        self.data = None

    log = staticmethod(script.stamped_log)

    def ensure_data(self, base: bool = True) -> dict:
        """The generated set (``base=False``: queries and ground truth only, when they exist)."""
        if self.data is None:
            import ivf_data

            a = self.args
            self.data = ivf_data.ensure(a.workdir, a.n, a.nq, 100, a.seed, log=self.log, base=base)
            np = self.np
            self.xq = np.ascontiguousarray(np.load(self.data["queries"]))
            self.gt = np.load(self.data["gt_ids"])[:, :K]
        return self.data

    def run(self) -> dict:
        a = self.args
        t_start = time.perf_counter()
        runs = self.result.setdefault("runs", [])
        runs.append({"command": script.command_line(__file__, None), "parts": a.parts,
                     "started": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average_start": list(os.getloadavg())})
        self.result.update(machine=self.machine, threads=self.threads, k=K, target_recall=TARGET_RECALL,
                           budget_bytes=BUDGET, targets=TARGETS, n=a.n, nq=a.nq,
                           settings={k: v for k, v in vars(a).items() if k not in ("workdir", "out", "parts")})
        for part in PARTS:
            if part in a.parts:
                t0 = time.perf_counter()
                self.log(f"== {part}")
                out = getattr(self, f"part_{part}")()
                out["seconds"] = time.perf_counter() - t0
                out["load_average_end"] = list(os.getloadavg())
                self.result["parts"][part] = out
                self.save()   # a part's figures survive a later part's failure
        runs[-1].update(finished=time.strftime("%Y-%m-%d %H:%M:%S"), total_s=time.perf_counter() - t_start,
                        load_average_end=list(os.getloadavg()))
        self.save()
        return self.result

    def save(self) -> None:
        report = markdown(self.result, self.args)
        script.write_results(self.stem, self.result, report)

    # 0. data
    def part_data(self) -> dict:
        d = self.ensure_data()
        self.log(f"  data: base {d['generate_base_s']:.0f} s, queries {d['generate_queries_s']:.1f} s, "
                 f"ground truth {d['ground_truth_s']:.0f} s (0 = reused)")
        return {k: v for k, v in d.items()}

    # 1. FAISS
    def faiss_path(self, factory: str) -> str:
        a = self.args
        safe = re.sub(r"[^A-Za-z0-9]+", "_", factory)
        return os.path.join(a.workdir, f"faiss-{safe}-n{a.n}-t{a.train_size}-s{a.seed}.faissindex")

    def part_faiss(self) -> dict:
        import faiss

        a = self.args
        d = self.ensure_data()
        out = {"twins": {}, "rows": []}
        for codec in a.codecs:
            factory = faiss_factory(codec)
            path = self.faiss_path(factory)
            build = None
            prev = self.result["parts"].get("faiss", {}).get("twins", {}).get(factory, {}).get("build")
            if a.rebuild or not os.path.exists(path) or prev is None:
                self.log(f"  building {factory} over {a.n:,} rows (train {a.train_size:,}) in a child")
                build = run_child({"kind": "faiss_build", "factory": factory, "base": d["base"], "out": path,
                                   "train_size": a.train_size, "seed": a.seed, "threads": a.threads}, self.log)
                self.log(f"  {factory}: train {build['train_s']:.1f} s + add {build['add_s']:.1f} s, "
                         f"VmHWM {build['vmhwm_bytes'] / 2**30:.2f} GiB")
            else:
                build = prev
                self.log(f"  {factory}: reusing {path}")
            before = proc_status("self").get("RssAnon", 0)
            index = faiss.read_index(path)
            loaded = proc_status("self").get("RssAnon", 0) - before
            ivf = faiss.extract_index_ivf(index)
            mem = faiss_memory(index, ivf, a.n)
            mem["rss_anon_after_read_bytes_per_vector"] = loaded / a.n
            out["twins"][factory] = {"codec": codec, "build": build, "memory": mem}
            rows = self.faiss_sweep(index, ivf, factory, mem)
            out["rows"] += rows
            del index, ivf
        least, best = least_memory(out["rows"]), fastest(out["rows"])
        out["least_memory"], out["fastest"] = least, best
        for label, r in (("least memory", least), ("fastest", best)):
            if r:
                self.log(f"  FAISS {label} at recall >= {TARGET_RECALL}: {r['config']} recall {r['recall_at_10']:.4f} "
                         f"{r['resident_bytes_per_vector']:.1f} B/vec p50 {r['p50_ms']:.3f} ms {r['qps']:,.0f} QPS")
        return out

    def faiss_sweep(self, index, ivf, factory: str, mem: dict) -> list[dict]:
        from vecstore.bench import metrics

        a, xq, gt = self.args, self.xq, self.gt
        rows = []
        for nprobe in [int(p) for p in values(a.nprobe) if p <= ivf.nlist]:
            ivf.nprobe = nprobe
            last = -1.0
            for kf in values(a.k_factors):
                index.k_factor = float(kf)
                recall = metrics.recall_at_k(index.search(xq, K)[1], gt, K)
                if recall - last < 0.001 and last >= 0:   # more candidates stopped paying
                    break
                last = recall
                runs = metrics.time_repeated(lambda: index.search(xq, K), repeats=a.repeats, warmup=1)
                singles = [xq[i % xq.shape[0]:i % xq.shape[0] + 1] for i in range(a.sweep_single)]
                one = metrics.time_each(lambda q: index.search(q, K), singles, warmup=5)
                row = {"system": "faiss", "factory": factory, "nprobe": nprobe, "k_factor": kf,
                       "config": f"{factory} nprobe={nprobe} k_factor={kf:g}", "recall_at_10": recall,
                       "qps": xq.shape[0] / runs.median, "p50_ms": one.p50 * 1e3, "p99_ms": one.p99 * 1e3,
                       "resident_bytes_per_vector": mem["resident_bytes_per_vector"],
                       "coarse_bytes_per_vector": mem["coarse_bytes_per_vector"]}
                rows.append(row)
                self.log(f"  {row['config']}: recall {recall:.4f}, p50 {row['p50_ms']:.3f} ms, {row['qps']:,.0f} QPS")
                if recall >= 0.999:
                    break
            if last >= 0.999:
                break
        return rows

    def faiss_search(self, row: dict, loaded: dict):
        """A search function for a sweep row's configuration: its saved twin (read once per factory,
        into ``loaded``: at 10M a twin holds 7.7 GB of refine vectors) searched with that row's
        nprobe and k_factor passed as search parameters."""
        import faiss

        index = loaded.get(row["factory"])
        if index is None:
            index = loaded[row["factory"]] = faiss.read_index(self.faiss_path(row["factory"]))
        params = faiss.IndexRefineSearchParameters(
            k_factor=float(row["k_factor"]), base_index_params=faiss.SearchParametersIVF(nprobe=int(row["nprobe"])))
        keep = (index, params)   # the parameters must outlive each call
        return lambda q, keep=keep: keep[0].search(q, K, params=keep[1])

    # 2. vecstore
    def store_path(self) -> str:
        a = self.args
        return os.path.join(a.workdir, f"ivf-n{a.n}-t{a.train_size}-s{a.seed}.vs")

    def part_vecstore(self) -> dict:
        import vecstore
        from vecstore.bench import metrics

        a, np, xq, gt = self.args, self.np, None, None
        path = self.store_path()
        prev = self.result["parts"].get("vecstore", {})
        d = self.ensure_data(base=a.rebuild or not os.path.exists(path) or prev.get("build") is None)
        xq, gt = self.xq, self.gt
        out = {"store": path, "codecs": {}, "build": prev.get("build"), "compress": dict(prev.get("compress", {}))}
        if a.rebuild or not os.path.exists(path) or out["build"] is None:
            self.log(f"  vecstore.build {path} from {d['base']} in a child")
            out["build"] = run_child({"kind": "vecstore_build", "store": path, "base": d["base"],
                                      "threads": a.threads}, self.log)
            out["compress"] = {}
            self.log(f"  built in {out['build']['build_s']:.1f} s, VmHWM {out['build']['vmhwm_bytes'] / 2**30:.2f} GiB")
        with vecstore.open(path) as s:
            have = set(s.info()["tiers"]) if isinstance(s.info()["tiers"], dict) else \
                {t.get("name") for t in s.info()["tiers"]}
        if a.rescoring != "raw" and (a.rescoring not in have or a.rescoring not in out["compress"] or a.rebuild):
            # the rescoring tier first, so that the ivf tiers' calibration measures rescoring from it
            self.log(f"  vecstore.compress {a.rescoring} (a rescoring tier, mapped like raw) in a child")
            out["compress"][a.rescoring] = run_child({"kind": "vecstore_compress", "store": path, "codec": a.rescoring,
                                                      "train_size": a.train_size, "seed": a.seed, "calibrate": False,
                                                      "replace": a.rescoring in have, "threads": a.threads}, self.log)
            have.add(a.rescoring)
        for codec in a.codecs:
            if codec in have and codec in out["compress"] and not a.rebuild:
                continue
            self.log(f"  vecstore.compress {codec} (train {a.train_size:,}) in a child")
            out["compress"][codec] = run_child({"kind": "vecstore_compress", "store": path, "codec": codec,
                                                "train_size": a.train_size, "seed": a.seed,
                                                "replace": codec in have, "threads": a.threads}, self.log)
            c = out["compress"][codec]
            self.log(f"  {codec}: {c['compress_s']:.1f} s, VmHWM {c['vmhwm_bytes'] / 2**30:.2f} GiB")

        fparts = self.result["parts"].get("faiss")
        twins = {}
        if fparts:
            for label in ("least_memory", "fastest"):
                r = fparts.get(label)
                if r:
                    twins[label] = r
        store = vecstore.open(path, resident=list(a.codecs))
        try:
            info = store.info()
            out["info"] = info
            out["default_search"] = info.get("default_search")
            tiers = info["tiers"] if isinstance(info["tiers"], dict) else {t["name"]: t for t in info["tiers"]}
            for codec in a.codecs:
                cal = tiers.get(codec, {}).get("calibration")
                out["codecs"][codec] = {"calibration": cal}
                self.log(f"  {codec} calibration: {cal}")
            # nprobe sweep of each tier at its calibrated oversample
            out["sweep"] = []
            for codec in a.codecs:
                cal = out["codecs"][codec]["calibration"] or {}
                for nprobe in [int(p) for p in values(a.vs_nprobe) if p <= parse_ivf(codec)[0]]:
                    kw = {"tier": codec, "nprobe": nprobe}
                    if cal.get("rescore"):
                        kw.update(rescore=cal["rescore"], oversample=cal.get("oversample"))
                    fn = lambda q, kw=kw: store.search(q, K, **kw)  # noqa: E731
                    recall = metrics.recall_at_k(np.asarray(fn(xq)[1]), gt, K)
                    runs = metrics.time_repeated(lambda fn=fn: fn(xq), repeats=a.repeats, warmup=1)
                    one = metrics.time_each(fn, [xq[i % xq.shape[0]:i % xq.shape[0] + 1]
                                                 for i in range(a.sweep_single)], warmup=5)
                    row = {"codec": codec, "nprobe": nprobe, "oversample": cal.get("oversample"),
                           "recall_at_10": recall, "qps": xq.shape[0] / runs.median, "p50_ms": one.p50 * 1e3,
                           "p99_ms": one.p99 * 1e3}
                    out["sweep"].append(row)
                    self.log(f"  {codec} nprobe={nprobe} x{cal.get('oversample')}: recall {recall:.4f}, "
                             f"p50 {row['p50_ms']:.3f} ms, {row['qps']:,.0f} QPS")
            # the fastest swept plan that reaches the target on the held-out queries: "at the same recall"
            ok = [r for r in out["sweep"] if r["recall_at_10"] >= TARGET_RECALL]
            out["sweep_best"] = min(ok, key=lambda r: r["p50_ms"]) if ok else None
            # the default search and each codec's calibrated plan, beside FAISS's two configurations
            systems = {"vecstore default": lambda q: store.search(q, K)}
            for codec in a.codecs:   # each tier's calibrated plan (the default search is one of them)
                kw = calibrated_options(codec, out["codecs"][codec]["calibration"])
                systems[f"vecstore {codec}"] = lambda q, kw=kw: store.search(q, K, **kw)
            if out["sweep_best"]:
                b = out["sweep_best"]
                kw = calibrated_options(b["codec"], out["codecs"][b["codec"]]["calibration"])
                kw.update(nprobe=b["nprobe"])
                systems[f"vecstore {b['codec']} nprobe={b['nprobe']} (held-out >= {TARGET_RECALL})"] = \
                    lambda q, kw=kw: store.search(q, K, **kw)
            loaded = {}
            for label, r in twins.items():
                systems[f"faiss {label}"] = self.faiss_search(r, loaded)
            recalls = {}
            for name, fn in systems.items():
                fn(xq[:1])
                recalls[name] = metrics.recall_at_k(np.asarray(fn(xq)[1]), gt, K)
                self.log(f"  {name}: recall@10 {recalls[name]:.4f} on {xq.shape[0]} held-out queries")
            mem_after = store.memory()
            times = metrics.time_round_robin(systems, xq, a.single)
            batch = metrics.time_repeated_interleaved({n: (lambda fn=fn: fn(xq)) for n, fn in systems.items()},
                                                      repeats=a.repeats, warmup=1)
            h2h = {}
            for name in systems:
                h2h[name] = {"recall_at_10": recalls[name], "p50_ms": float(np.percentile(times[name], 50) * 1e3),
                             "p99_ms": float(np.percentile(times[name], 99) * 1e3),
                             "qps": xq.shape[0] / batch[name].median, "single_calls": len(times[name]),
                             "batch_runs": len(batch[name].seconds)}
                if name.startswith("faiss"):
                    h2h[name]["config"] = twins[name.split(" ", 1)[1]]["config"]
                    h2h[name]["resident_bytes_per_vector"] = twins[name.split(" ", 1)[1]]["resident_bytes_per_vector"]
                self.log(f"  {name}: p50 {h2h[name]['p50_ms']:.3f} ms, p99 {h2h[name]['p99_ms']:.3f} ms, "
                         f"{h2h[name]['qps']:,.0f} QPS")
            out["head_to_head"] = h2h
            out["memory"] = mem_after
            n = store.count
            for codec in a.codecs:
                t = mem_after["tiers"].get(codec, {})
                out["codecs"][codec]["memory"] = t
                # everything the tier holds in private memory: its codes when resident, their fast-scan
                # copy (a 4-bit tier holds both), parameters (centroids, codebooks), l2 norms
                res = t.get("resident_bytes", 0) + t.get("fastscan_bytes", 0) + t.get("param_bytes", 0) \
                    + t.get("bias_bytes", 0)
                out["codecs"][codec]["resident_bytes_per_vector"] = res / n
                # an ivf tier's lists/rows (the store row of each list position) stay mapped, so
                # store.memory() does not count them, but every query reads its candidates' entries
                lists = getattr(store.tier(codec), "lists", None)
                rows_b = int(lists.rows.nbytes) if lists is not None else 0
                out["codecs"][codec]["list_rows_bytes_per_vector"] = rows_b / n
                out["codecs"][codec]["memory_all_bytes_per_vector"] = {k: v / n for k, v in t.items()
                                                                       if isinstance(v, (int, float))}
            out["rss_anon_bytes_per_vector"] = mem_after["process"].get("RssAnon", 0) / n \
                if isinstance(mem_after.get("process"), dict) else None
        finally:
            store.close()
        return out

    # 3. the real set
    def part_real(self) -> dict:
        import vecstore
        from vecstore.bench import datasets, metrics

        a, np = self.args, self.np
        try:
            ds = datasets.load_dataset(a.real, workdir=a.workdir, progress=False)
        except datasets.DataNotFoundError as exc:
            sys.exit(f"error: {exc}")
        path = os.path.join(a.workdir, f"ivf-real-{script.dataset_tag(ds)}.vs")
        t0 = time.perf_counter()
        vecstore.build(path, ds.database_path() or ds.get_database(), metric=ds.metric, overwrite=True,
                       progress=False).close()
        times = {"build_s": time.perf_counter() - t0}
        for codec in (a.real_flat, a.real_ivf):
            t0 = time.perf_counter()
            vecstore.compress(path, codec, train_size=min(ds.nb, 50_000), seed=a.seed, progress=False).close()
            times[f"compress {codec}_s"] = time.perf_counter() - t0
        xq = np.ascontiguousarray(ds.get_queries(), dtype=np.float32)
        _, gt = ds.get_groundtruth_with_scores(K)
        gt = np.asarray(gt)[:, :K]
        out = {"dataset": ds.describe(), "times": times, "plans": {}}
        with vecstore.open(path, resident=[a.real_flat, a.real_ivf]) as store:
            info = store.info()
            tiers = info["tiers"] if isinstance(info["tiers"], dict) else {t["name"]: t for t in info["tiers"]}
            for codec in (a.real_flat, a.real_ivf):
                cal = tiers[codec].get("calibration")
                kw = calibrated_options(codec, cal)
                fn = lambda q, kw=kw: store.search(q, K, **kw)  # noqa: E731
                recall = metrics.recall_at_k(np.asarray(fn(xq)[1]), gt, K)
                one = metrics.time_each(fn, [xq[i % xq.shape[0]:i % xq.shape[0] + 1]
                                             for i in range(a.sweep_single)], warmup=5)
                out["plans"][codec] = {"calibration": cal, "recall_at_10": recall, "p50_ms": one.p50 * 1e3}
                self.log(f"  real {codec}: calibration {cal}, recall@10 {recall:.4f}, p50 {one.p50 * 1e3:.3f} ms")
            # what the ivf tier needs to match the flat tier: more lists at the flat tier's oversample
            flat_cal = tiers[a.real_flat].get("calibration") or {}
            ivf_cal = tiers[a.real_ivf].get("calibration") or {}
            out["ivf_nprobe_sweep"] = []
            nlist = parse_ivf(a.real_ivf)[0]
            start = int(ivf_cal.get("nprobe") or 1)
            for nprobe in sorted({min(nlist, start * 2 ** i) for i in range(0, 12)}):
                kw = {"tier": a.real_ivf, "nprobe": nprobe}
                if flat_cal.get("rescore"):
                    kw.update(rescore=flat_cal["rescore"], oversample=float(flat_cal["oversample"]))
                fn = lambda q, kw=kw: store.search(q, K, **kw)  # noqa: E731
                recall = metrics.recall_at_k(np.asarray(fn(xq)[1]), gt, K)
                one = metrics.time_each(fn, [xq[i % xq.shape[0]:i % xq.shape[0] + 1]
                                             for i in range(a.sweep_single)], warmup=5)
                out["ivf_nprobe_sweep"].append({"nprobe": nprobe, "oversample": kw.get("oversample"),
                                                "recall_at_10": recall, "p50_ms": one.p50 * 1e3})
                self.log(f"  real {a.real_ivf} nprobe={nprobe} x{kw.get('oversample')}: recall {recall:.4f}, "
                         f"p50 {one.p50 * 1e3:.3f} ms")
            out["default_search"] = info.get("default_search")
        out["recall_loss"] = out["plans"][a.real_flat]["recall_at_10"] - out["plans"][a.real_ivf]["recall_at_10"]
        return out


def calibrated_options(codec: str, cal: dict | None) -> dict:
    """search() options of a tier's calibrated plan: ``tier=`` alone would scan it without rescoring;
    with ``rescore=`` the oversample (and an ivf tier's nprobe) default to the calibration."""
    kw = {"tier": codec}
    if cal and cal.get("rescore"):
        kw["rescore"] = cal["rescore"]
    return kw


def faiss_memory(index, ivf, n: int) -> dict:
    """Bytes per vector FAISS holds in RAM: list codes as stored (fast-scan: 32-row blocks), 8-byte
    ids, the refine index's codes, the coarse centroids and the codec's tables / n."""
    import faiss

    sizes = [ivf.invlists.list_size(i) for i in range(ivf.nlist)]
    ivf = faiss.downcast_index(index.base_index) if isinstance(index, faiss.IndexRefine) else ivf
    code_size = ivf.code_size
    block = getattr(ivf, "bbs", 0)
    if block:
        codes = sum(-(-s // block) * block for s in sizes) * code_size
    else:
        codes = sum(sizes) * code_size
    ids = 8 * sum(sizes)
    refine = 0
    if isinstance(index, faiss.IndexRefine):
        r = faiss.downcast_index(index.refine_index)
        refine = r.sa_code_size() * r.ntotal
    centroids = ivf.nlist * ivf.d * 4
    tables = 0
    pq = getattr(ivf, "pq", None)
    if pq is not None:
        tables = pq.M * pq.ksub * pq.dsub * 4
    coarse = codes + ids + centroids + tables
    s = sorted(sizes)
    return {"codes_bytes": codes, "code_size": code_size, "ids_bytes": ids, "refine_bytes": refine,
            "centroid_bytes": centroids, "table_bytes": tables, "nlist": ivf.nlist,
            "coarse_bytes_per_vector": coarse / n, "resident_bytes_per_vector": (coarse + refine) / n,
            "list_sizes": {"min": s[0], "median": s[len(s) // 2], "max": s[-1],
                           "imbalance": float(ivf.invlists.imbalance_factor())}}


# -- the report ------------------------------------------------------------------------------------


def _cal_text(cal: dict | None) -> str:
    if not cal:
        return "none"
    probe = f"nprobe {cal['nprobe']}, " if cal.get("nprobe") is not None else ""
    return (f"{probe}> {cal.get('rescore')} x{cal.get('oversample')}: predicted recall@10 {cal.get('recall_at_10')}, "
            f"{cal.get('latency_us')} us")


def _gb(x) -> str:
    return f"{x / 2**30:.2f}" if x is not None else "-"


def markdown(r: dict, args) -> str:
    from vecstore.bench import metrics

    P = r["parts"]
    runs = r.get("runs", [])
    L = [f"# Inverted-file tier (issue 19): vecstore against FAISS IVF + Refine(SQfp16), {r['n']:,} documents", "",
         f"Machine: {metrics.describe_machine(r['machine'])}; OMP_WAIT_POLICY="
         f"{r['machine']['env'].get('OMP_WAIT_POLICY', '-')}. {r['threads']} threads for both systems; k = {K}; "
         f"{r['nq']:,} held-out queries; page cache warm unless said.", "", "Runs (each part's figures come from the last run that had it):", ""]
    for run in runs:
        L.append(f"- `{run['command']}`: {run['started']} - {run.get('finished', '(did not finish)')}"
                 + (f", {run['total_s']:.0f} s" if "total_s" in run else "")
                 + f", load {' '.join(f'{x:.2f}' for x in run['load_average_start'])} at start"
                 + (f", {' '.join(f'{x:.2f}' for x in run['load_average_end'])} at end" if "load_average_end" in run else ""))
    if "data" in P:
        d = P["data"]
        L += ["", "## Data", "", f"`{d['base']}` ({d['n']:,} x 384 float32), queries `{os.path.basename(d['queries'])}`, "
              f"exact top-{d['k']} `{os.path.basename(d['gt_ids'])}`. {d['description']['what']}: "
              f"{d['description']['topics']} topics, {d['description']['clusters']:,} clusters, seed {d['seed']}. "
              f"Generated in {d['generate_base_s']:.0f} s (queries {d['generate_queries_s']:.1f} s), ground truth "
              f"{d['ground_truth_s']:.0f} s (0 s: reused from an earlier run)."]

    T = r["targets"]
    tg = ["", "## Targets", "", "| target | measured | goal | |", "|---|---|---|---|"]

    def tgt(name, value, goal, higher, fmt="{:.2f}x"):
        tg.append(f"| {name} | {fmt.format(value) if value is not None else 'n/a'} | "
                  f"{'>=' if higher else '<='} {fmt.format(goal)} | {metrics.verdict(value, goal, higher)} |")

    F, V = P.get("faiss"), P.get("vecstore")
    if V and V.get("head_to_head"):
        h = V["head_to_head"]
        dflt = h.get("vecstore default")
        for label in ("least_memory", "fastest"):
            f = h.get(f"faiss {label}")
            if dflt and f:
                tgt(f"p50, default search vs FAISS's {label.replace('_', '-')} configuration at recall >= 0.95 "
                    f"(`{f['config']}`)", dflt["p50_ms"] / f["p50_ms"], T["p50"], False)
                tgt(f"batch QPS, default search vs FAISS's {label.replace('_', '-')}", dflt["qps"] / f["qps"], T["qps"], True)
        same = next((n for n in h if "held-out" in n), None)
        for label in ("least_memory", "fastest"):
            f = h.get(f"faiss {label}")
            if same and f:
                tgt(f"p50 at the same recall: `{same[9:]}` (recall {h[same]['recall_at_10']:.4f}) vs FAISS's "
                    f"{label.replace('_', '-')} ({f['recall_at_10']:.4f})", h[same]["p50_ms"] / f["p50_ms"], T["p50"], False)
                tgt("batch QPS at the same recall, same pair", h[same]["qps"] / f["qps"], T["qps"], True)
        if dflt:
            tgt("recall@10 of the default search, held-out queries", dflt["recall_at_10"], TARGET_RECALL, True, "{:.4f}")
        ds = V.get("default_search") or []
        tier = ds[0] if ds else None
        c = V["codecs"].get(tier) if tier else None
        if c and c.get("resident_bytes_per_vector") is not None:
            tgt(f"resident bytes/vector of the default tier `{tier}` (codes or fast-scan blocks + parameters / n)",
                c["resident_bytes_per_vector"], BUDGET, False, "{:.1f}")
        if V.get("build") and F:
            b = V["build"]
            # the build of the store the default search runs on: the .npy in, the default tier compressed
            made = [b] + ([V["compress"][tier]] if tier in V["compress"] else list(V["compress"].values()))
            fine = ds[1] if len(ds) > 1 else None
            if fine in V["compress"]:  # the default plan's rescoring tier was compressed for it too
                made.append(V["compress"][fine])
            peak = max(x.get("vmhwm_bytes", 0) for x in made)
            what = f"the build and the compress of `{tier}`" if tier in V["compress"] else "the build and compress children"
            tgt(f"build peak RSS (VmHWM of {what}), GiB", peak / 2**30, T["build_rss_gb"], False, "{:.2f}")
            if tier and tier in V["compress"]:
                twin = F["twins"].get(faiss_factory(tier))
                if twin:
                    fs = twin["build"]["train_s"] + twin["build"]["add_s"]
                    vs = b["build_s"] + sum(x["compress_s"] for x in made[1:])
                    both = f"`{tier}`" + (f" and `{fine}`" if fine in V["compress"] else "")
                    tgt(f"build time: vecstore build + compress {both} vs FAISS train + add `{faiss_factory(tier)}`",
                        vs / fs, T["build_time"], False)
    growth = r.get("growth")
    if growth:
        tgt(f"p50 growth of the default search, {growth['from_n']:,} -> {r['n']:,}", growth["ratio"], T["growth"], False)
    if "real" in P:
        re_ = P["real"]
        tgt(f"real set: recall@10 lost by `{args.real_ivf if args else ''}` against `{args.real_flat if args else ''}` "
            "(default plans)", re_["recall_loss"], T["real_loss"], False, "{:.4f}")
    L += tg

    if F:
        L += ["", "## FAISS twins", "", "Build in a child process (train on the sample vecstore uses, add in 65,536-row "
              "chunks read with pread, so the .npy's pages do not count in its RSS).", "",
              "| index | train s | add s | VmHWM GiB | sampled RssAnon peak GiB | resident B/vec | coarse B/vec (codes, ids, centroids) | lists min/median/max | imbalance |",
              "|---|---|---|---|---|---|---|---|---|"]
        for fac, t in F["twins"].items():
            b, m = t["build"], t["memory"]
            ls = m["list_sizes"]
            L.append(f"| `{fac}` | {b['train_s']:.1f} | {b['add_s']:.1f} | {_gb(b['vmhwm_bytes'])} | "
                     f"{_gb(b['sampled_peak_bytes']['RssAnon'])} | {m['resident_bytes_per_vector']:.1f} | "
                     f"{m['coarse_bytes_per_vector']:.1f} | {ls['min']}/{ls['median']}/{ls['max']} | {ls['imbalance']:.2f} |")
        L += ["", "FAISS's configurations reaching recall@10 >= 0.95:", ""]
        for label in ("least_memory", "fastest"):
            x = F.get(label)
            L.append(f"- {label.replace('_', ' ')}: " + (f"`{x['config']}`: recall {x['recall_at_10']:.4f}, "
                     f"{x['resident_bytes_per_vector']:.1f} B/vec, p50 {x['p50_ms']:.3f} ms, {x['qps']:,.0f} QPS"
                     if x else "none"))
        L += ["", "### Sweep", "", "| config | recall@10 | p50 ms | p99 ms | QPS |", "|---|---|---|---|---|"]
        for row in F["rows"]:
            L.append(f"| `{row['config']}` | {row['recall_at_10']:.4f} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | {row['qps']:,.0f} |")
    if V:
        L += ["", "## vecstore", ""]
        b = V.get("build")
        if b:
            L += ["| step | seconds | VmHWM GiB | baseline VmHWM GiB (imports only) | sampled RssAnon peak GiB | sampled RssFile peak GiB |",
                  "|---|---|---|---|---|---|",
                  f"| `vecstore.build` (.npy -> store) | {b['build_s']:.1f} | {_gb(b['vmhwm_bytes'])} | "
                  f"{_gb(b['baseline_vmhwm_bytes'])} | {_gb(b['sampled_peak_bytes']['RssAnon'])} | {_gb(b['sampled_peak_bytes']['RssFile'])} |"]
            for codec, c in V["compress"].items():
                L.append(f"| `vecstore.compress {codec}` | {c['compress_s']:.1f} | {_gb(c['vmhwm_bytes'])} | "
                         f"{_gb(c['baseline_vmhwm_bytes'])} | {_gb(c['sampled_peak_bytes']['RssAnon'])} | "
                         f"{_gb(c['sampled_peak_bytes']['RssFile'])} |")
        L += ["", f"Default search: `{V.get('default_search')}`.", "", "| tier | calibrated nprobe | oversample | rescore | "
              "predicted recall@10 | calibrated latency us | resident B/vec |", "|---|---|---|---|---|---|---|"]
        for codec, c in V["codecs"].items():
            cal = c.get("calibration") or {}
            L.append(f"| `{codec}` | {cal.get('nprobe')} | {cal.get('oversample')} | {cal.get('rescore')} | "
                     f"{cal.get('recall_at_10')} | {cal.get('latency_us')} | {c.get('resident_bytes_per_vector', float('nan')):.1f}"
                     + (f" (+ {c['list_rows_bytes_per_vector']:.0f} B of mapped lists/rows)" if c.get("list_rows_bytes_per_vector") else "")
                     + " |")
        h = V.get("head_to_head")
        if h:
            L += ["", f"Head to head: {next(iter(h.values()))['single_calls']} single-query calls each, systems round-robin "
                  "(a random order each round, a fresh query every call); batch = all queries in one call, median of runs alternating.", "",
                  "| system | recall@10 | p50 ms | p99 ms | QPS | p50 / FAISS least-memory | QPS / FAISS least-memory |",
                  "|---|---|---|---|---|---|---|"]
            ref = h.get("faiss least_memory")
            for name, x in h.items():
                L.append(f"| {name}" + (f" `{x['config']}`" if "config" in x else "") + f" | {x['recall_at_10']:.4f} | "
                         f"{x['p50_ms']:.3f} | {x['p99_ms']:.3f} | {x['qps']:,.0f} | "
                         + (f"{x['p50_ms'] / ref['p50_ms']:.2f}x | {x['qps'] / ref['qps']:.2f}x |" if ref else "| |"))
        if V.get("rss_anon_bytes_per_vector") is not None:
            L += ["", f"Process RssAnon after the searches (FAISS's loaded twins included): "
                  f"{V['rss_anon_bytes_per_vector']:.1f} B/vector."]
        if V.get("sweep"):
            L += ["", "### nprobe sweep (calibrated oversample)", "", "| tier | nprobe | oversample | recall@10 | p50 ms | QPS |",
                  "|---|---|---|---|---|---|"]
            for row in V["sweep"]:
                L.append(f"| `{row['codec']}` | {row['nprobe']} | {row['oversample']} | {row['recall_at_10']:.4f} | "
                         f"{row['p50_ms']:.3f} | {row['qps']:,.0f} |")
    if "real" in P:
        re_ = P["real"]
        L += ["", f"## Real set: {re_['dataset'].get('name')} ({re_['dataset'].get('nb', '?'):,} x {re_['dataset'].get('d', '?')})", "",
              "| tier | calibration | recall@10 (shipped neighbours) | p50 ms |", "|---|---|---|---|"]
        for codec, p in re_["plans"].items():
            L.append(f"| `{codec}` | {_cal_text(p['calibration'])} | {p['recall_at_10']:.4f} | {p['p50_ms']:.3f} |")
        if re_.get("ivf_nprobe_sweep"):
            L += ["", "The ivf tier at more lists, rescored as the flat tier's plan:", "",
                  "| nprobe | oversample | recall@10 | p50 ms |", "|---|---|---|---|"]
            for x in re_["ivf_nprobe_sweep"]:
                L.append(f"| {x['nprobe']} | {x['oversample']} | {x['recall_at_10']:.4f} | {x['p50_ms']:.3f} |")
        L.append(f"\nDefault search of that store: `{re_.get('default_search')}`; build and compress: "
                 + ", ".join(f"{k} {v:.1f}" for k, v in re_["times"].items()) + ".")
    L += ["", "Part run times: " + ", ".join(f"{k} {v['seconds']:.0f} s" for k, v in P.items() if "seconds" in v)]
    return "\n".join(L) + "\n"


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        child_main(json.loads(argv[1]))
        return
    args = parse_args(argv)
    script.pin_environment(args.threads)
    bench = Bench(args)
    if args.report_only:  # the saved figures rendered again (after a change of the report), no part run
        bench.save()
        print(markdown(bench.result, args))
        return
    if args.growth_from:
        with open(args.growth_from) as fh:
            small = json.load(fh)
        try:
            bench.result["growth_from"] = {"n": small["n"],
                                           "p50_ms": small["parts"]["vecstore"]["head_to_head"]["vecstore default"]["p50_ms"]}
        except KeyError:
            sys.exit(f"error: {args.growth_from} has no vecstore head-to-head figures")
    result = bench.run()
    g = result.get("growth_from")
    try:
        if g:
            p50 = result["parts"]["vecstore"]["head_to_head"]["vecstore default"]["p50_ms"]
            result["growth"] = {"from_n": g["n"], "from_p50_ms": g["p50_ms"], "p50_ms": p50, "ratio": p50 / g["p50_ms"]}
            bench.save()
    except KeyError:
        pass
    print(markdown(result, args))
    print(f"wrote {bench.stem}.json and .md", file=sys.stderr)


if __name__ == "__main__":
    main()
