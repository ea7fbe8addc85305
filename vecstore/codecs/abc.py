"""The Codec protocol (after numcodecs and scikit-learn).

A codec has a ``codec_id`` and a JSON-only config of hyperparameters (``get_config`` /
``from_config``); ``fit`` learns plain arrays, stored as attributes whose names end in ``_`` and
returned by ``params()``; ``encode`` and ``decode`` convert between float32 vectors and codes.
Nothing is pickled: a codec is fully described by its config plus its arrays.

For search, every codec is one of two kinds:
- an *affine stage* (PCA, the scale of int8) moves a query into code space: for a decoded vector
  x = A y + b, ``q . x = (A^T q) . y + q . b``, so the stage returns ``A^T q`` and adds ``q . b``
  to a per-query constant (``fold_query``);
- a *terminal stage* names the code layout that a kernel scans (``layout``: "f32", "f16", "i8",
  "pq8", "pq4").
int8 is both: its affine part folds the per-dimension scale and offset, and its codes scan as "i8".
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ..errors import FormatError, NotFittedError


class Codec:
    """Base class. Subclasses set ``codec_id``, ``code_dtype`` and the learned ``_params``."""

    codec_id: ClassVar[str]
    code_dtype: ClassVar[np.dtype]
    layout: ClassVar[str | None] = None  # terminal stages name the layout their codes scan as
    #: names of the learned arrays, each stored as ``<stage>.<name>`` in the tier's params group
    param_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, dim: int | None = None):
        self.dim = dim

    # -- configuration --------------------------------------------------------------------------

    def hyperparameters(self) -> dict:
        """The JSON-safe hyperparameters (without "id")."""
        return {}

    def get_config(self) -> dict:
        return {"id": self.codec_id, **self.hyperparameters()}

    @classmethod
    def from_config(cls, config: dict, dim: int | None = None) -> Codec:
        """The unfitted codec of ``config`` (its "id" and hyperparameters) for inputs of width ``dim``."""
        cfg = {k: v for k, v in config.items() if k != "id"}
        try:
            return cls(dim=dim, **cfg)
        except TypeError as exc:
            raise FormatError(f"codec {cls.codec_id!r}: bad config {cfg} ({exc})") from None

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    __hash__ = None  # mutable once fitted

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"

    # -- learned parameters ---------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return all(hasattr(self, name + "_") for name in self.param_names)

    def check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(
                f"codec {self.codec_id!r} has not learned its parameters: call fit(sample) first, "
                "or load them with set_params()"
            )

    def params(self) -> dict[str, np.ndarray]:
        """The learned arrays, by name (without the trailing underscore)."""
        self.check_fitted()
        return {name: getattr(self, name + "_") for name in self.param_names}

    def expected_param_shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """Shape and dtype each learned array must have, given the config and input dim."""
        return {}

    def set_params(self, params: dict[str, np.ndarray], where: str = "parameters") -> Codec:
        """Load learned arrays (from a store or a JSON export), validating shapes and values."""
        expected = self.expected_param_shapes()
        for name in self.param_names:
            if name not in params:
                raise FormatError(f"{where}: codec {self.codec_id!r} needs array {name!r}, which is missing")
            arr = np.asarray(params[name])
            shape, dtype = expected[name]
            if arr.shape != shape:
                raise FormatError(
                    f"{where}: {self.codec_id}.{name} has shape {arr.shape}, but the codec config "
                    f"implies {shape}; the parameters and the config disagree"
                )
            if arr.dtype.kind not in "fiu":
                raise FormatError(f"{where}: {self.codec_id}.{name} has dtype {arr.dtype}, not numeric")
            arr = np.ascontiguousarray(arr, dtype=dtype)
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise FormatError(f"{where}: {self.codec_id}.{name} contains NaN or Inf")
            setattr(self, name + "_", arr)
        self.check_params()
        return self

    def check_params(self) -> None:
        """Codec-specific checks on loaded values (e.g. positive scales). Raise FormatError."""

    # -- the transform --------------------------------------------------------------------------

    @property
    def out_dim(self) -> int:
        """Width of the vector this stage hands to the next one."""
        return self.dim

    @property
    def code_size(self) -> int:
        """Bytes per vector of a terminal stage's codes."""
        return self.code_width * np.dtype(self.code_dtype).itemsize

    @property
    def code_width(self) -> int:
        """Columns of a terminal stage's code array."""
        return self.dim

    def fit(self, sample: np.ndarray, *, seed: int = 0) -> Codec:
        """Learn parameters from a (n, dim) float32 sample; return self."""
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def decode(self, codes: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fold_query(self, xq: np.ndarray, const: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move queries into this stage's output space (see the module docstring)."""
        return xq, const
