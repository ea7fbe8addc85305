"""Tier: one encoding of every document (raw float32, float16, int8, PCA, PQ ...), mapped from the file.

A tier pairs a codec pipeline (config + learned arrays, validated against each other) with its code
array and, for l2 stores, the squared norms of the decoded vectors. Searching a tier never decodes
it: the query is folded into code space once and the kernel for the code layout scans the codes.
"""

from __future__ import annotations

import numpy as np

from . import _format as fmt
from .codecs import Pipeline, codec_string
from .errors import FormatError, VecstoreError
from .kernels import pq as pq_kernels
from .search import SearchResult, default_parts, finish, scan_dense


class Tier:
    """A searchable encoding of the store's documents."""

    def __init__(self, name: str, codec: Pipeline, codes: np.ndarray, sqnorms: np.ndarray | None,
                 metric: str, spans: tuple = ()):
        self.name = name
        self.codec = codec
        self.codes = codes
        self.sqnorms = sqnorms
        self.metric = metric
        self._spans = spans
        self.resident = False

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
        }

    def search(self, xq: np.ndarray, kk: int, k: int, ids: np.ndarray) -> SearchResult:
        """Top-k over this tier for validated queries; ``kk = min(k, count)`` columns are real."""
        scores, rows = self.scan(xq, kk)
        qn = (xq * xq).sum(axis=1) if self.metric == "l2" else None
        return finish(scores, rows, ids, k, self.metric, qn)

    def scan(self, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best-first (scores, rows) where score = q . x (ip, cosine) or 2 q . x - |x|^2 (l2)."""
        q = xq * np.float32(2.0) if self.metric == "l2" else xq
        folded, const = self.codec.fold_query(q, np.zeros(q.shape[0], dtype=np.float64))
        bias = -self.sqnorms if self.sqnorms is not None else np.empty(0, dtype=np.float32)
        layout = self.codec.layout
        if layout in ("pq8", "pq4"):
            lut = self.codec.terminal.lookup_tables(folded)
            kernel = pq_kernels.scan_pq8 if layout == "pq8" else pq_kernels.scan_pq4
            scores, rows = kernel(lut, self.codes, bias, k, default_parts(self.count))
        else:
            codes = self.codes.view(np.uint16) if layout == "f16" else self.codes
            scores, rows = scan_dense(folded, codes, bias, k, layout)
        if const.any():
            scores = scores + const[:, None].astype(np.float32)
        return scores, rows


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
    return Tier(name, codec, file_map.array(codes_span), sqnorms, metric,
                (codes_span,) + ((sq_span,) if sq_span is not None else ()))
