"""A chain of codecs: zero or more affine stages (PCA) then one terminal stage that owns the codes."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..errors import FormatError, InvalidInputError
from .abc import Codec
from .strings import codec_string


class Pipeline(Codec):
    """Stages applied in order on encode, in reverse on decode.

    The config is ``{"id": "pipeline", "dim": D, "stages": [stage configs]}`` (built back by
    :func:`vecstore.codecs.registry.pipeline_from_config`); learned arrays are named
    ``"<stage index>.<array>"`` (e.g. ``"0.components"``, ``"1.codebooks"``).
    """

    codec_id = "pipeline"

    def __init__(self, stages: list[Codec], dim: int):
        super().__init__(dim)
        if not stages or stages[-1].layout is None:
            raise InvalidInputError("a codec chain must end with a code stage (float32, float16, int8, pq)")
        if any(s.layout is not None for s in stages[:-1]):
            raise InvalidInputError(
                "only the last codec of a chain may produce codes; put pca stages first (e.g. 'pca256,pq64')"
            )
        if any(s.codec_id == "ivf" for s in stages[1:]):
            raise InvalidInputError("an ivf stage partitions the input vectors: put it first (e.g. 'ivf1024,pq32x4')")
        self.stages = stages

    # -- configuration --------------------------------------------------------------------------

    def get_config(self) -> dict:
        return {"id": self.codec_id, "dim": self.dim, "stages": [s.get_config() for s in self.stages]}

    @property
    def terminal(self) -> Codec:
        return self.stages[-1]

    @property
    def layout(self) -> str:
        return self.terminal.layout

    @property
    def ivf(self) -> Codec | None:
        """The inverted-file stage (vecstore.codecs.ivf), first in the chain, or None."""
        return self.stages[0] if self.stages[0].codec_id == "ivf" else None

    @property
    def code_dtype(self) -> np.dtype:
        return np.dtype(self.terminal.code_dtype)

    @property
    def code_width(self) -> int:
        return self.terminal.code_width

    @property
    def code_size(self) -> int:
        return self.terminal.code_size

    @property
    def out_dim(self) -> int:
        return self.terminal.out_dim

    def __str__(self) -> str:
        return codec_string(self)

    # -- parameters -----------------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return all(s.is_fitted for s in self.stages)

    def params(self) -> dict[str, np.ndarray]:
        return {f"{i}.{name}": arr for i, s in enumerate(self.stages) for name, arr in s.params().items()}

    def param_count(self) -> int:
        return sum(a.size for a in self.params().values())

    def set_params(self, params: dict[str, np.ndarray], where: str = "parameters") -> Pipeline:
        known = {f"{i}.{n}" for i, s in enumerate(self.stages) for n in s.param_names}
        extra = sorted(set(params) - known)
        if extra:
            raise FormatError(f"{where}: unexpected arrays {extra[:5]} for codec {self}")
        for i, stage in enumerate(self.stages):
            prefix = f"{i}."
            stage.set_params({k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)},
                             where=where)
        return self

    # -- the transform --------------------------------------------------------------------------

    def fit(self, sample: np.ndarray, *, seed: int = 0, metric: str = "l2",
            progress: Callable[[int, int], None] | None = None) -> Pipeline:
        """Fit the stages in order, each on the previous one's output; an ivf stage learns its lists
        for the store's ``metric`` (vecstore.codecs.ivf.IVF.fit).

        ``progress(done, total)``, if given, is called as training advances: a stage with
        ``fit_steps`` (a product quantizer: one step per sub-quantizer) reports each step, any
        other stage counts as one step when it is fitted.
        """
        x = np.asarray(sample, dtype=np.float32)
        steps = [getattr(stage, "fit_steps", 1) for stage in self.stages]
        total, done = sum(steps), 0
        if progress is not None:
            progress(0, total)
        for stage, n in zip(self.stages, steps):
            if progress is not None and hasattr(stage, "fit_steps"):
                stage.fit(x, seed=seed, progress=lambda d, _n, before=done: progress(before + d, total))
            elif stage is self.ivf:
                stage.fit(x, seed=seed, metric=metric)
            else:
                stage.fit(x, seed=seed)
            done += n
            if progress is not None:
                progress(done, total)
            if stage is not self.terminal:
                x = stage.encode(x)
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        for stage in self.stages:
            x = stage.encode(x)
        return x

    def decode(self, codes: np.ndarray) -> np.ndarray:
        x = codes
        for stage in reversed(self.stages):
            x = stage.decode(x)
        return x

    def fold_query(self, xq, const):
        for stage in self.stages:
            xq, const = stage.fold_query(xq, const)
        return np.ascontiguousarray(xq, dtype=np.float32), const
