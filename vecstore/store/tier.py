"""Tier: one encoding of every document (raw float32, float16, int8, PCA, PQ ...), mapped from the file.

A tier pairs a codec pipeline (config + learned arrays, validated against each other) with its code
array and, for l2 stores, the squared norms of the decoded vectors. Searching a tier never decodes
it: the query is folded into code space once and the kernel for the code layout scans the codes.
"""

from __future__ import annotations

import threading

import numpy as np

from ..codecs import Pipeline, codec_string, pipeline_from_config
from ..errors import FormatError, VecstoreError
from ..format import schema as fmt
from ..kernels import dispatch
from ..plan import check_nprobe


# An inverted-file tier with no calibrated nprobe probes one list in this many.
DEFAULT_PROBE_SHARE = 16


class InvertedLists:
    """The lists of an inverted-file tier: ``offsets`` (nlist + 1) in RAM, list l at positions
    offsets[l]:offsets[l + 1] of the tier's codes; ``rows`` (count,) mapped, the store row each
    position holds. docs/format.md, "Inverted-file tiers"."""

    def __init__(self, offsets: np.ndarray, rows: np.ndarray, where: str):
        self.offsets, self.rows, self.where = offsets, rows, where
        self._checked = False
        self._lock = threading.Lock()

    def checked_rows(self) -> np.ndarray:
        """``rows``, checked on first use to hold every row once (O(count): not at open)."""
        if not self._checked:
            with self._lock:
                n = self.rows.shape[0]
                if n and (int(self.rows.min()) < 0 or int(self.rows.max()) >= n
                          or np.bincount(self.rows, minlength=n).max() != 1):
                    raise FormatError(f"{self.where}/rows: not every row once; the file is damaged")
                self._checked = True
        return self.rows


class Tier:
    """A searchable encoding of the store's documents."""

    def __init__(self, name: str, codec: Pipeline, codes: np.ndarray, sqnorms: np.ndarray | None,
                 metric: str, lists: InvertedLists | None = None):
        self.name = name
        self.codec = codec
        self.codes = codes
        self.sqnorms = sqnorms
        self.metric = metric
        self.resident = False
        self._blocks_only = False  # resident as fast-scan blocks, the codes left mapped (see load)
        self.calibration: dict | None = None  # see quality.py
        # 4-bit PQ tiers: the codes in fast-scan blocks (kernels/fastscan.py), built on first search
        self._blocked: dispatch.FastLayout | None = None
        self._blocked_lock = threading.Lock()
        self._bias: np.ndarray | None = None
        # inverted-file tiers: codes (and norms) in list order, and which row each position holds
        self.lists = lists
        if (lists is None) != (codec.ivf is None):
            raise FormatError(f"tier {name!r}: an ivf codec needs its lists, and only an ivf codec has lists")

    @property
    def codec_string(self) -> str:
        return codec_string(self.codec)

    @property
    def layout(self) -> str:
        """The code layout its kernels scan: "f32", "f16", "i8", "pq8" or "pq4"."""
        return self.codec.layout

    @property
    def code_size(self) -> int:
        return self.codec.code_size

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

    def row_slice(self, start: int, stop: int) -> Tier:
        """This (flat) tier over rows start:stop only: a scan of it costs those rows, and its row
        numbers count from ``start``. For passes in blocks and for warming the kernels on a few rows."""
        norms = None if self.sqnorms is None else self.sqnorms[start:stop]
        return Tier(self.name, self.codec, self.codes[start:stop], norms, self.metric)

    # -- residency ------------------------------------------------------------------------------

    def load(self) -> None:
        """Hold what this tier's scans read in private memory, so they no longer wait on the disk:
        its codes (and norms); for a 4-bit PQ tier on a CPU with the fast scan, its fast-scan blocks
        instead of its codes. Those scans read only the blocks, and the stored codes, left mapped,
        serve the few rows a single-stage search scores exactly: the tier costs its code bytes once,
        not twice (the caller may release their mapped pages, vecstore.store.file.StoreFile.load)."""
        if self.resident:
            return
        if self.sqnorms is not None:
            self.sqnorms = np.array(self.sqnorms)
        if self.layout == "pq4" and dispatch.fast_scan():
            self.fast_layout()
            self._blocks_only = True
        else:
            self.codes = np.array(self.codes)
        self.resident = True

    def memory(self) -> dict:
        """Bytes of this tier held in private memory against bytes merely mapped from the file.

        A 4-bit PQ tier that has been searched or loaded holds its codes in fast-scan blocks
        (``fastscan_bytes``, private memory, about the size of the codes; loaded, those are all it
        holds of its codes on a CPU with the fast scan); an l2 tier that has been
        searched holds its negated norms (``bias_bytes``, 4 bytes a row). An inverted-file tier's
        lists (``list_bytes``: the row of each position, 8 bytes a row, mapped and read for every
        candidate, plus the offsets in private memory) count apart.
        """
        codes = int(self.codes.nbytes)
        norms = int(self.sqnorms.nbytes) if self.sqnorms is not None else 0
        private = (0 if self._blocks_only else codes) + norms if self.resident else 0
        blocked = self._blocked
        lists = 0 if self.lists is None else int(self.lists.rows.nbytes + self.lists.offsets.nbytes)
        return {"resident_bytes": private, "mapped_bytes": codes + norms - private,
                "param_bytes": self.param_bytes,
                "fastscan_bytes": 0 if blocked is None else int(blocked.blocked.nbytes + blocked.bias_max.nbytes
                                                                + blocked.bias_gaps.nbytes),
                "bias_bytes": 0 if self._bias is None else int(self._bias.nbytes),
                "list_bytes": lists}

    # -- search ---------------------------------------------------------------------------------

    def rescore(self, xq: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Best-first (scores, rows) over each query's candidate rows, scored on this tier (a dense
        layout: see vecstore.plan.check_rescores)."""
        folded, const, bias = self.fold(xq)
        scores, rows = dispatch.rescore(folded, self.dense_codes(), self.layout, candidates, bias, k)
        return self._add_const(scores, const), rows

    def dense_codes(self) -> np.ndarray:
        """The codes as the dense kernels read them (float16 as uint16 bits)."""
        return self.codes.view(np.uint16) if self.layout == "f16" else self.codes

    @property
    def bias(self) -> np.ndarray:
        """What the kernels add to each row's score: minus its squared norm for l2 (score =
        2 q.x - |x|^2), nothing (an empty array) otherwise. Negated once, then kept in private memory
        (4 bytes a row; a negation per query cost more than a 4-bit scan of the same rows)."""
        if self._bias is None:
            self._bias = -np.asarray(self.sqnorms) if self.sqnorms is not None else np.empty(0, dtype=np.float32)
        return self._bias

    def fold(self, xq: np.ndarray, doubled: np.ndarray | None = None):
        """(folded queries, per-query constant, bias): validated queries moved into this tier's code
        space, so that score = folded . code + constant + bias[row]. ``doubled``: an l2 store's
        ``xq * 2`` already made (a plan folding one query into two tiers makes it once)."""
        if self.metric == "l2":
            q = xq * np.float32(2.0) if doubled is None else doubled
        else:
            q = xq
        folded, const = self.codec.fold_query(q, np.zeros(q.shape[0], dtype=np.float64))
        return folded, const, self.bias

    @staticmethod
    def _add_const(scores: np.ndarray, const: np.ndarray) -> np.ndarray:
        return scores + const[:, None].astype(np.float32) if const.any() else scores

    def scan(self, xq: np.ndarray, k: int, *, candidates: bool = False,
             nprobe: int | None = None, any_order: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Best-first (scores, rows) where score = q . x (ip, cosine) or 2 q . x - |x|^2 (l2).

        ``candidates=True``: the rows are candidates that a finer tier will rescore, so a 4-bit
        fast scan may rank them by its quantised scores (see kernels.fastscan.scan_pq4_fast).
        ``nprobe``: lists an inverted-file tier scans (default: :attr:`default_nprobe`); rows past
        what the probed lists hold are -1.
        ``any_order=True``: the same rows, each query's in any order (padding last), for a caller that
        needs only the set, as rescoring does; a 4-bit fast scan then skips its sort.
        """
        if self.lists is not None:
            return self._scan_lists(xq, k, not candidates, nprobe, None, any_order)
        folded, const, bias = self.fold(xq)
        if self.layout in ("pq8", "pq4"):
            lut = self.codec.terminal.lookup_tables(folded)
            scores, rows = dispatch.scan_pq(lut, self.codes, bias, k, self.layout, lambda: self._fast_layout(bias),
                                            exact=not candidates, best_first=not any_order)
        else:
            scores, rows = dispatch.scan_dense(folded, self.dense_codes(), bias, k, self.layout)
        return self._add_const(scores, const), rows

    def scan_allowed(self, xq: np.ndarray, k: int, allow: np.ndarray, rows: np.ndarray | None = None, *,
                     candidates: bool = False, nprobe: int | None = None,
                     any_order: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`scan` over only the rows the uint8 mask ``allow`` admits (``rows``: its
        np.flatnonzero, if the caller has it); 1 <= k <= their count. ``candidates=True`` and
        ``any_order`` as in :meth:`scan`: a 4-bit tier ranks the admitted rows by its quantised
        scores (docs/format.md, "Candidates of a 4-bit PQ tier"). An inverted-file tier probes
        ``nprobe`` / (admitted share) lists, so that about as many admitted rows are scanned as
        without the filter."""
        if self.lists is not None:
            return self._scan_lists(xq, k, not candidates, nprobe, allow, any_order)
        folded, const, bias = self.fold(xq)
        if self.layout in ("pq8", "pq4"):
            lut = self.codec.terminal.lookup_tables(folded)
            scores, found = dispatch.scan_pq(lut, self.codes, bias, k, self.layout, lambda: self._fast_layout(bias),
                                             exact=not candidates, allow=allow, best_first=not any_order)
        else:
            rows = np.flatnonzero(allow) if rows is None else rows
            scores, found = dispatch.scan_dense_rows(folded, self.dense_codes(), bias, k, self.layout, rows)
        return self._add_const(scores, const), found

    # -- inverted-file tiers ---------------------------------------------------------------------

    @property
    def nlist(self) -> int:
        return self.codec.ivf.nlist if self.lists is not None else 0

    @property
    def default_nprobe(self) -> int:
        """Lists a search probes without ``nprobe=``: the calibrated figure, else one in DEFAULT_PROBE_SHARE."""
        cal = self.calibration or {}
        value = cal.get("nprobe")
        if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= self.nlist:
            return value
        return max(1, -(-self.nlist // DEFAULT_PROBE_SHARE))

    def check_nprobe(self, nprobe) -> int:
        """``nprobe`` validated for this tier (vecstore.plan.check_nprobe); None: the default (0 for a
        flat tier)."""
        if nprobe is None:  # (every search asks: no codec string built then)
            return self.default_nprobe if self.lists is not None else 0
        return check_nprobe(nprobe, self.nlist, self.name, self.codec_string)

    def probe(self, xq: np.ndarray, nprobe: int) -> np.ndarray:
        """(nq, nprobe, 2) int64: the [start, stop) positions of each query's ``nprobe`` nearest
        lists (highest IVF.probe_scores for the store's metric, ties to the lower list), in list order."""
        return self._probed(xq, nprobe)[1]

    def _probed(self, xq: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """(every list's score for each query, :meth:`probe`'s ranges)."""
        scores = dispatch.list_scores(xq, self.codec.ivf, self.metric)
        return scores, dispatch.probe_lists(scores, nprobe, self.lists.offsets)

    def probe_in_order(self, xq: np.ndarray, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`probe`'s ranges and the order fastscan.scan_pq4_lists takes them in: one query's
        best-scoring list first, so that its reservoir's threshold rises early and fewer rows enter
        it (10M rows, 32 of 4,096 lists, 640 candidates: store.search 460-476 -> 405-433 us), several
        queries' list by list."""
        scores, ranges = self._probed(xq, nprobe)
        if xq.shape[0] > 1:
            return ranges, dispatch.K.fastscan.list_major(ranges)
        lists = np.searchsorted(self.lists.offsets, ranges[0, :, 0], side="right") - 1  # (an empty list: the next)
        return ranges, np.argsort(-scores[0, lists], kind="stable")

    def _scan_lists(self, xq: np.ndarray, k: int, exact: bool, nprobe: int | None,
                    allow: np.ndarray | None, any_order: bool) -> tuple[np.ndarray, np.ndarray]:
        nprobe = self.check_nprobe(nprobe)
        rows_of = self.lists.checked_rows()
        if allow is not None:
            allow = allow[rows_of]  # position order
            share = max(np.count_nonzero(allow), 1) / max(self.count, 1)
            nprobe = min(self.nlist, int(np.ceil(nprobe / share)))
        ranges = self.probe(xq, nprobe)
        folded, const, bias = self.fold(xq)
        lut = self.codec.terminal.lookup_tables(folded) if self.layout in ("pq8", "pq4") else None
        scores, found = dispatch.scan_lists(folded, lut, self.codes, bias, k, self.layout, ranges,
                                            lambda: self._fast_layout(bias), exact, allow, not any_order)
        return self._add_const(scores, const), np.where(found >= 0, rows_of[np.maximum(found, 0)], -1)

    def _fast_layout(self, bias: np.ndarray) -> dispatch.FastLayout:
        with self._blocked_lock:
            if self._blocked is None:
                self._blocked = dispatch.blocked_codes(self.codes, self.codec.terminal.m, bias)
            return self._blocked

    def fast_layout(self) -> dispatch.FastLayout:
        """The 4-bit codes in the fast scan's blocks, with each block's largest bias and each row's
        gap below it (built once)."""
        return self._fast_layout(self.bias)


def open_tier(name: str, header: fmt.Header, file_map: fmt.FileMap, dim: int, count: int,
              metric: str) -> Tier:
    """Build a Tier from a validated header, checking config, arrays and codes agree."""
    where = f"/{fmt.TIERS}/{name}"
    attrs = header.tier_attrs[name]
    try:
        codec = pipeline_from_config(attrs[fmt.ATTR_CODEC])
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
    tier = Tier(name, codec, file_map.array(codes_span), sqnorms, metric,
                _open_lists(header, file_map, where, codec, count))
    tier.calibration = _checked_calibration(attrs.get(fmt.ATTR_CALIBRATION), where)
    return tier


def _open_lists(header: fmt.Header, file_map: fmt.FileMap, where: str, codec: Pipeline,
                count: int) -> InvertedLists | None:
    """An inverted-file tier's lists, their offsets checked (O(nlist)); rows are checked on first use."""
    prefix = f"{where[1:]}/{fmt.LISTS}"
    offsets_span = header.datasets.get(f"{prefix}/{fmt.LIST_OFFSETS}")
    if codec.ivf is None:
        if offsets_span is not None:
            raise FormatError(f"{where}: has {fmt.LISTS} but its codec {codec_string(codec)!r} has no ivf stage")
        return None
    rows_span = header.datasets.get(f"{prefix}/{fmt.LIST_ROWS}")
    if offsets_span is None or rows_span is None:
        raise FormatError(f"{where}: an ivf tier needs {fmt.LISTS}/{fmt.LIST_OFFSETS} and {fmt.LISTS}/{fmt.LIST_ROWS}; "
                          "the file is damaged")
    nlist = codec.ivf.nlist
    if offsets_span.shape != (nlist + 1,) or offsets_span.dtype != np.dtype("<i8"):
        raise FormatError(f"/{prefix}/{fmt.LIST_OFFSETS}: {offsets_span.dtype.str}{offsets_span.shape}, "
                          f"expected <i8({nlist + 1},)")
    if rows_span.shape != (count,) or rows_span.dtype != np.dtype("<i8"):
        raise FormatError(f"/{prefix}/{fmt.LIST_ROWS}: {rows_span.dtype.str}{rows_span.shape}, expected <i8({count},)")
    offsets = np.array(file_map.array(offsets_span))
    if offsets[0] != 0 or offsets[-1] != count or (np.diff(offsets) < 0).any():
        raise FormatError(f"/{prefix}/{fmt.LIST_OFFSETS}: must rise from 0 to the count {count}; the file is damaged")
    rows = file_map.array(rows_span)
    file_map.advise_random(rows_span)  # a search reads k x oversample scattered entries
    return InvertedLists(offsets, rows, f"/{prefix}")


def _checked_calibration(record, where: str) -> dict | None:
    if record is None:
        return None
    factor = record.get("oversample") if isinstance(record, dict) else None
    if (not isinstance(record, dict) or not isinstance(record.get("rescore"), str)
            or isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 1 <= factor <= 1e6):
        raise FormatError(f"{where}: attribute 'calibration' must hold 'rescore' (a tier) and 'oversample' >= 1")
    return record
