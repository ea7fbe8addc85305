"""Element-wise codecs: float32 (identity), float16 and int8 scalar quantization."""

from __future__ import annotations

import numpy as np

from ..errors import FormatError, InvalidInputError
from .abc import Codec

FLOAT16_MAX = 65504.0


class Float32(Codec):
    """Identity: codes are the float32 vectors themselves (the raw tier)."""

    codec_id = "float32"
    code_dtype = np.dtype("<f4")
    layout = "f32"

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(x, dtype=np.float32)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes, dtype=np.float32)


class Float16(Codec):
    """IEEE 754 half precision; values beyond +-65504 are clipped to it (never infinity)."""

    codec_id = "float16"
    code_dtype = np.dtype("<f2")
    layout = "f16"

    def encode(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x, -FLOAT16_MAX, FLOAT16_MAX).astype("<f2")

    def decode(self, codes: np.ndarray) -> np.ndarray:
        return np.asarray(codes).astype(np.float32)


class Int8(Codec):
    """Per-dimension uniform scalar quantization to int8.

    decode: ``x[j] = offset[j] + scale[j] * c[j]`` with c in [-128, 127].
    fit: the range [lo, hi] of each dimension is the sample's min and max, or its ``clip`` and
    ``1 - clip`` quantiles when ``clip`` is given (outliers then saturate instead of stretching
    the grid); ``scale = (hi - lo) / 255`` and ``offset = lo + 128 * scale``.
    encode: ``c = clip(round((x - offset) / scale), -128, 127)``.
    """

    codec_id = "int8"
    code_dtype = np.dtype("i1")
    layout = "i8"
    param_names = ("scale", "offset")

    def __init__(self, dim: int | None = None, clip: float | None = None):
        super().__init__(dim)
        if clip is not None and not (isinstance(clip, (int, float)) and 0 <= clip < 0.5):
            raise InvalidInputError(f"int8 clip must be a quantile in [0, 0.5), got {clip!r}")
        self.clip = clip

    def hyperparameters(self) -> dict:
        return {} if self.clip is None else {"clip": self.clip}

    def expected_param_shapes(self):
        return {"scale": ((self.dim,), np.dtype("<f4")), "offset": ((self.dim,), np.dtype("<f4"))}

    def check_params(self) -> None:
        if (self.scale_ <= 0).any():
            raise FormatError("int8.scale must be positive in every dimension")

    def fit(self, sample: np.ndarray, *, seed: int = 0) -> Int8:
        if self.clip:
            lo, hi = np.quantile(sample, [self.clip, 1 - self.clip], axis=0)
        else:
            lo, hi = sample.min(axis=0), sample.max(axis=0)
        span = np.maximum(hi - lo, 1e-12 * np.maximum(1.0, np.abs(lo)))
        self.scale_ = (span / 255.0).astype("<f4")
        self.offset_ = (lo + 128.0 * self.scale_).astype("<f4")
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        self.check_fitted()
        c = np.rint((x - self.offset_) / self.scale_)
        return np.clip(c, -128, 127).astype("i1")

    def decode(self, codes: np.ndarray) -> np.ndarray:
        self.check_fitted()
        return (self.offset_ + self.scale_ * np.asarray(codes, dtype=np.float32)).astype(np.float32)

    def fold_query(self, xq, const):
        self.check_fitted()
        return (xq * self.scale_).astype(np.float32), const + xq @ self.offset_
