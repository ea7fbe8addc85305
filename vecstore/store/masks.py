"""The rows a filter admits in one part, in the forms the kernels take, and a view's bounded cache of
compiled filters and of their masks.

A filtered search needs, per part, the uint8 row mask, how many rows it admits (the strategy is
chosen from that count), and either the sorted admitted rows (exact scoring, dense scans) or the
mask as bits in the fast scan's block order. Each is made once per :class:`RowMask`, when first
needed. A view never changes (vecstore.store.view), so a ``where`` text evaluated on it gives the same
masks every time: :class:`FilterCache` keeps the compiled filter and its masks, so a repeated filter
is neither parsed nor evaluated again. 100,000 rows, ``r < 1000``, one query: parsing and checking
took 6 us a call, evaluating 14 us, counting 3 us, the block bits 8 us, the admitted rows 9 us.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from ..kernels.dispatch import K

# Compiled filters a view keeps (by text), and bytes of masks it keeps (RowMask.nbytes: the mask, its
# block bits and 8 bytes an admitted row, counted whether or not the rows are ever listed); least
# recently used first out. 32 MB: about 60 masks of a 100,000-row store at 50% selectivity; of a
# 10,000,000-row store, 2 masks at 1%, and none above ~24% (those are evaluated in every call).
FILTER_CACHE_ENTRIES = 256
MASK_CACHE_BYTES = 32 << 20


class RowMask:
    """The rows one part admits: ``mask`` uint8 (count,), nonzero = admitted (read-only), and
    ``allowed``, their number. :meth:`rows` and :meth:`blocks` are derived once, on first use."""

    __slots__ = ("_blocks", "_rows", "allowed", "mask")

    def __init__(self, mask: np.ndarray):
        if mask.dtype != bool:
            mask = mask != 0
        mask.setflags(write=False)
        self.mask = mask.view(np.uint8)  # 0 or 1
        self.allowed = int(np.count_nonzero(mask))
        self._rows: np.ndarray | None = None
        self._blocks: np.ndarray | None = None

    def rows(self) -> np.ndarray:
        """The admitted rows, sorted (int64)."""
        if self._rows is None:  # (np.flatnonzero of a bool array: 9 us over 100,000 rows; of uint8: 160 us)
            self._rows = np.flatnonzero(self.mask.view(bool))
        return self._rows

    def blocks(self) -> np.ndarray:
        """The mask as the 4-bit fast scan takes it (fastscan.block_allow)."""
        if self._blocks is None:
            self._blocks = K.fastscan.block_allow(self.mask, self.mask.shape[0])
        return self._blocks

    @property
    def nbytes(self) -> int:
        """What the cache counts for it: the mask, its block bits (8 bytes a 32-row block for AVX2, 16
        a 128-row block for VBMI) and at most every admitted row."""
        n = self.mask.shape[0]
        blocks = -(-n // K.fastscan.BLOCK) * 8 * max(1, K.fastscan.BLOCK // 64)
        return n + blocks + 8 * self.allowed


class FilterCache:
    """Per view: compiled filters by text (at most FILTER_CACHE_ENTRIES) and the row masks of a
    ``where`` text (at most MASK_CACHE_BYTES in all), least recently used evicted first. Safe to use
    from several threads; a filter evaluated twice at once is harmless (the same masks)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._filters: OrderedDict = OrderedDict()
        self._masks: OrderedDict = OrderedDict()
        self._bytes = 0
        # (text, masks) of the last get_masks hit or put_masks: already the most recently used, so
        # found again without the lock or a reorder (an application repeating one filter)
        self._recent: tuple = (None, None)

    def get_filter(self, text: str):
        with self._lock:
            found = self._filters.get(text)
            if found is not None:
                self._filters.move_to_end(text)
            return found

    def put_filter(self, text: str, predicate) -> None:
        with self._lock:
            self._filters[text] = predicate
            while len(self._filters) > FILTER_CACHE_ENTRIES:
                self._filters.popitem(last=False)

    def get_masks(self, text: str) -> list[RowMask] | None:
        recent_text, recent_masks = self._recent
        if recent_text == text:
            return recent_masks
        with self._lock:
            found = self._masks.get(text)
            if found is not None:
                self._masks.move_to_end(text)
                self._recent = (text, found)
            return found

    def put_masks(self, text: str, masks: list[RowMask]) -> None:
        size = sum(m.nbytes for m in masks)
        if size > MASK_CACHE_BYTES:
            return
        with self._lock:
            old = self._masks.pop(text, None)
            if old is not None:
                self._bytes -= sum(m.nbytes for m in old)
            self._masks[text] = masks
            self._recent = (text, masks)
            self._bytes += size
            while self._bytes > MASK_CACHE_BYTES:
                _, dropped = self._masks.popitem(last=False)
                self._bytes -= sum(m.nbytes for m in dropped)
