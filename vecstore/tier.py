"""Tier: one encoding of every document (raw float32, float16, int8, PCA, PQ ...), mapped from the file.

A tier pairs a codec pipeline (config + learned arrays, validated against each other) with its code
array and, for l2 stores, the squared norms of the decoded vectors. Searching a tier never decodes
it: the query is folded into code space once and the kernel for the code layout scans the codes.
"""

from __future__ import annotations

import threading

import numba
import numpy as np

from . import _format as fmt
from .codecs import Pipeline, codec_string
from .errors import FormatError, InvalidInputError, VecstoreError
from .kernels import fastscan
from .kernels import pq as pq_kernels
from .kernels.rescore import rescore as rescore_kernel
from .search import SearchResult, finish, pq_parts, scan_dense, threads_for


_RESCORE_LAYOUT = {"f32": 0, "i8": 1, "f16": 2}


class Tier:
    """A searchable encoding of the store's documents."""

    def __init__(self, name: str, codec: Pipeline, codes: np.ndarray, sqnorms: np.ndarray | None,
                 metric: str):
        self.name = name
        self.codec = codec
        self.codes = codes
        self.sqnorms = sqnorms
        self.metric = metric
        self.resident = False
        self.calibration: dict | None = None  # see calibrate.py
        # 4-bit PQ tiers: the codes in fast-scan blocks (kernels/fastscan.py), built on first search
        self._blocked: tuple[np.ndarray, np.ndarray] | None = None
        self._blocked_lock = threading.Lock()

    @property
    def codec_string(self) -> str:
        return codec_string(self.codec)

    @property
    def count(self) -> int:
        return self.codes.shape[0]

    @property
    def bytes_per_vector(self) -> int:
        """Bytes each document costs in this tier: its code plus its norm for l2 stores."""
        return self.codec.code_size + (4 if self.sqnorms is not None else 0)

    @property
    def param_bytes(self) -> int:
        return int(sum(a.nbytes for a in self.codec.params().values()))

    def describe(self) -> dict:
        return {
            "name": self.name,
            "codec": self.codec_string,
            "bytes_per_vector": self.bytes_per_vector,
            "code_bytes": int(self.codes.nbytes),
            "param_bytes": self.param_bytes,
            "size_bytes": int(self.codes.nbytes) + self.param_bytes
            + (int(self.sqnorms.nbytes) if self.sqnorms is not None else 0),
            "resident": self.resident,
            "calibration": self.calibration,
        }

    # -- residency ------------------------------------------------------------------------------

    def load(self) -> None:
        """Copy this tier's codes (and norms) into private memory: scans no longer wait on the disk."""
        if not self.resident:
            self.codes = np.array(self.codes)
            if self.sqnorms is not None:
                self.sqnorms = np.array(self.sqnorms)
            self.resident = True

    def memory(self) -> dict:
        """Bytes of this tier held in private memory against bytes merely mapped from the file.

        A 4-bit PQ tier that has been searched also holds its codes in fast-scan blocks
        (``fastscan_bytes``, private memory, about the size of the codes).
        """
        size = int(self.codes.nbytes) + (int(self.sqnorms.nbytes) if self.sqnorms is not None else 0)
        blocked = self._blocked
        return {"resident_bytes": size if self.resident else 0, "mapped_bytes": 0 if self.resident else size,
                "param_bytes": self.param_bytes,
                "fastscan_bytes": 0 if blocked is None else int(blocked[0].nbytes + blocked[1].nbytes)}

    # -- search ---------------------------------------------------------------------------------

    @property
    def can_rescore(self) -> bool:
        """Whether this tier can score chosen rows exactly (a dense layout: float32/float16/int8)."""
        return self.codec.layout in _RESCORE_LAYOUT

    def check_rescores(self, coarse: Tier) -> None:
        """Refuse a fine tier that cannot refine ``coarse``."""
        if not self.can_rescore:
            raise InvalidInputError(
                f"tier {self.name!r} ({self.codec_string}) cannot rescore: choose a float32, float16 or "
                "int8 tier (e.g. raw)"
            )
        if self.codec.code_size <= coarse.codec.code_size:
            raise InvalidInputError(
                f"rescore tier {self.name!r} ({self.codec.code_size} B/vector) is not finer than the scanned "
                f"tier {coarse.name!r} ({coarse.codec.code_size} B/vector): rescore from a larger tier, e.g. raw"
            )

    def rescore(self, xq: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best-first (scores, rows) over each query's candidate rows, scored on this tier."""
        folded, const, bias = self._fold(xq)
        codes = self.codes.view(np.uint16) if self.codec.layout == "f16" else self.codes
        with threads_for(candidates.size * codes.shape[1]):
            scores, rows = rescore_kernel(folded, codes, _RESCORE_LAYOUT[self.codec.layout], candidates, bias, k)
        return self._add_const(scores, const), rows

    def _fold(self, xq: np.ndarray):
        q = xq * np.float32(2.0) if self.metric == "l2" else xq
        folded, const = self.codec.fold_query(q, np.zeros(q.shape[0], dtype=np.float64))
        bias = -self.sqnorms if self.sqnorms is not None else np.empty(0, dtype=np.float32)
        return folded, const, bias

    @staticmethod
    def _add_const(scores: np.ndarray, const: np.ndarray) -> np.ndarray:
        return scores + const[:, None].astype(np.float32) if const.any() else scores

    def search(self, xq: np.ndarray, kk: int, k: int, ids: np.ndarray) -> SearchResult:
        """Top-k over this tier for validated queries; ``kk = min(k, count)`` columns are real."""
        scores, rows = self.scan(xq, kk)
        return finish(scores, rows, ids, k, self.metric, xq)

    def scan(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best-first (scores, rows) where score = q . x (ip, cosine) or 2 q . x - |x|^2 (l2)."""
        folded, const, bias = self._fold(xq)
        layout = self.codec.layout
        if layout in ("pq8", "pq4"):
            scores, rows = self._scan_pq(self.codec.terminal.lookup_tables(folded), bias, k)
        else:
            codes = self.codes.view(np.uint16) if layout == "f16" else self.codes
            scores, rows = scan_dense(folded, codes, bias, k, layout)
        return self._add_const(scores, const), rows

    def _scan_pq(self, lut: np.ndarray, bias: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Choose the PQ kernel: the fast scan for 4-bit codes where the CPU has it, else 256-entry
        tables (4-bit codes through fused pair tables) scanned a query at a time, or GROUP queries a
        vector for batches. Non-finite tables (only a damaged file makes them) take the scalar kernel,
        which ranks NaN last."""
        nq = lut.shape[0]
        finite = bool(np.isfinite(lut).all())
        if self.codec.layout == "pq4":
            if FAST_SCAN and finite:
                return self._scan_fast(lut, bias, k)
            lut = pq_kernels.pair_tables(lut, self.codes.shape[1])
        work = nq * self.count * self.codes.shape[1]
        if finite and nq >= GROUPED_MIN_QUERIES:
            with threads_for(work // GROUPED_SPEEDUP):
                return pq_kernels.scan_pq8_grouped(lut, self.codes, bias, k,
                                                   pq_parts(nq, self.count, k, pq_kernels.GROUP))
        with threads_for(work):
            return pq_kernels.scan_pq8(lut, self.codes, bias, k, pq_parts(nq, self.count, k, pq_kernels.QUERY_GROUP))

    def _scan_fast(self, lut: np.ndarray, bias: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """4-bit PQ through quantised tables in SIMD registers; the same results as the float scan."""
        blocked, bias_max = self._fast_layout(bias)
        nq = lut.shape[0]
        quantize = fastscan.quantize_tables if nq < PARALLEL_TABLES_QUERIES else fastscan.quantize_tables_parallel
        lut8, base, scale, margin = quantize(lut)
        with threads_for(nq * self.count * self.codes.shape[1] // fastscan.SPEEDUP):
            # at most one slice of rows per thread (more were slower), enough (group, slice) tasks
            threads = numba.get_num_threads()
            groups = -(-nq // fastscan.QUERY_GROUP)
            parts = max(1, min(threads, -(-4 * threads // groups), -(-self.count // fastscan.BLOCK)))
            return fastscan.scan_pq4_fast(lut, lut8, base, scale, margin, blocked, self.codes, bias, bias_max, k,
                                          parts)

    def _fast_layout(self, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with self._blocked_lock:
            if self._blocked is None:
                blocked = fastscan.to_blocked(np.asarray(self.codes), self.codec.terminal.m)
                bias_max = fastscan.block_max(bias, self.count) if bias.shape[0] else np.empty(0)
                self._blocked = (blocked, bias_max)
            return self._blocked


# From this many queries on, 8-bit PQ batches are scanned GROUP queries a vector; measured on
# 100,000 rows, m = 48/64/256: 4 queries 2.4/5.8/29.7 ms grouped against 8.2/8.4/30.2 one at a time,
# 2 queries slower grouped. The grouped scan does about a quarter of the work per (row, query).
GROUPED_MIN_QUERIES = 4
GROUPED_SPEEDUP = 4
# From this many queries on, the fast scan's tables are quantised on every thread (1,000 queries,
# m = 96: 13 ms on one thread, 7 on two; one query: 13 us serial, 40 us in a parallel region).
PARALLEL_TABLES_QUERIES = 64

# Whether this machine runs the 4-bit fast scan (AVX-512 VBMI or AVX2); otherwise 4-bit codes are scanned
# through fused 256-entry tables (kernels/pq.py), with the same results.
FAST_SCAN = bool(fastscan.LAYOUT)


def open_tier(name: str, header: fmt.Header, file_map: fmt.FileMap, dim: int, count: int,
              metric: str) -> Tier:
    """Build a Tier from a validated header, checking config, arrays and codes agree."""
    where = f"/{fmt.TIERS}/{name}"
    attrs = header.tier_attrs[name]
    try:
        codec = Pipeline.from_config(attrs[fmt.ATTR_CODEC])
    except VecstoreError as exc:
        raise FormatError(f"{where}: {exc}") from None
    if codec.dim != dim:
        raise FormatError(f"{where}: codec input dimension {codec.dim} differs from the store's {dim}")
    params = {}
    for key, span in header.datasets.items():
        prefix = f"{fmt.TIERS}/{name}/{fmt.PARAMS}/"
        if key.startswith(prefix):
            if span.dtype != np.dtype("<f4"):
                raise FormatError(f"/{key}: learned arrays are <f4, found {span.dtype.str}; the file was edited")
            params[key[len(prefix):]] = np.array(file_map.array(span))  # small: copied into RAM
    codec.set_params(params, where=where)
    codes_span = header.datasets[f"{fmt.TIERS}/{name}/{fmt.CODES}"]
    expect = (count, codec.code_width)
    if codes_span.shape != expect or codes_span.dtype != codec.code_dtype:
        raise FormatError(
            f"{where}/{fmt.CODES}: {codes_span.dtype.str}{codes_span.shape}, but codec "
            f"{codec_string(codec)!r} over {count} documents implies {codec.code_dtype.str}{expect}"
        )
    sq_span = header.datasets.get(f"{fmt.TIERS}/{name}/{fmt.SQNORMS}")
    if metric == "l2" and sq_span is None:
        raise FormatError(f"{where}: an l2 store's tier needs {fmt.SQNORMS}; the file is damaged")
    if sq_span is not None and (sq_span.shape != (count,) or sq_span.dtype != np.dtype("<f4")):
        raise FormatError(f"{where}/{fmt.SQNORMS}: {sq_span.dtype.str}{sq_span.shape}, expected <f4({count},)")
    sqnorms = file_map.array(sq_span) if (sq_span is not None and metric == "l2") else None
    if attrs.get(fmt.ATTR_CODEC_STRING) != codec_string(codec):
        raise FormatError(f"{where}: attribute 'codec_string' {attrs.get(fmt.ATTR_CODEC_STRING)!r} does not "
                          f"describe its codec config ({codec_string(codec)!r}); the file was edited")
    tier = Tier(name, codec, file_map.array(codes_span), sqnorms, metric)
    tier.calibration = _checked_calibration(attrs.get(fmt.ATTR_CALIBRATION), where)
    return tier


def _checked_calibration(record, where: str) -> dict | None:
    if record is None:
        return None
    factor = record.get("oversample") if isinstance(record, dict) else None
    if (not isinstance(record, dict) or not isinstance(record.get("rescore"), str)
            or isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor <= 1e6):
        raise FormatError(f"{where}: attribute 'calibration' must hold 'rescore' (a tier) and 'oversample' >= 1")
    return record
