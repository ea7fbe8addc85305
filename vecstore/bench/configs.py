"""What a sweep measures: codec strings, rescoring settings, and the configurations they make.

A *configuration* is one way to search a store: scan one tier (``pq16``), optionally rescore
``k x oversample`` candidates from a finer tier (``pq16 > raw x4``). Each has a FAISS twin: the
index_factory string of :mod:`vecstore.bench.faiss_twins`, wrapped in ``IndexRefineFlat``
(``,RFlat``) or ``IndexRefine(SQfp16)`` for two-stage configurations, with ``k_factor`` equal to the
oversample.

Codec lists are separated by semicolons or spaces, since codec strings contain commas
(``"float16;int8;pca128,int8;pq64"``); ``raw`` (alias ``float32``) is exact search.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..codecs import parse_codec_string
from ..errors import InvalidInputError, UnknownCodecError
from . import faiss_twins

RAW = "raw"
#: fine tiers a two-stage configuration may rescore from
FINE_TIERS = ("raw", "float16")
DEFAULT_OVERSAMPLES = (2.0, 4.0, 8.0, 16.0)
DEFAULT_RESCORE = ("raw",)

#: default sweeps for the two dimensions the project measures; other dimensions use a rule. 4-bit
#: product quantizers (twins: FAISS's fast-scan PQ<m>x4fs) take half a byte per sub-quantizer
DEFAULT_CODECS = {
    384: ["raw", "float16", "int8", "pca128,int8", "pq16", "pq32", "pq64", "pq48x4", "pq96x4"],
    4096: ["raw", "float16", "int8", "pca512,int8", "pq64", "pq128", "pca512,pq64", "pq256x4", "pq512x4"],
}


def _divisor_near(dim: int, target: float) -> int:
    return min((m for m in range(1, dim + 1) if dim % m == 0), key=lambda m: (abs(m - target), m))


def default_codecs(dim: int) -> list[str]:
    """A sweep from exact to ~1/100 of float32, sized for ``dim``.

    Exact, float16 and int8; PCA to about a third of the dimension then int8; 8-bit product
    quantizers of about dim/24, dim/12 and dim/6 bytes and 4-bit ones of about dim/16 and dim/8
    bytes (m must divide dim).
    """
    if dim in DEFAULT_CODECS:
        return list(DEFAULT_CODECS[dim])
    out = [RAW, "float16", "int8"]
    p = int(round(dim / 3 / 8)) * 8
    if 8 <= p < dim:
        out.append(f"pca{p},int8")
    for target in (dim / 24, dim / 12, dim / 6):
        codec = f"pq{_divisor_near(dim, max(1.0, target))}"
        if codec not in out:
            out.append(codec)
    for target in (dim / 8, dim / 4):  # sub-quantizers, two a byte
        codec = f"pq{_divisor_near(dim, max(1.0, target))}x4"
        if codec not in out:
            out.append(codec)
    return out


def canonical_codec(text: str, dim: int) -> str:
    """The canonical spelling of a codec string (``raw`` for raw/float32); raises on unknown ones."""
    from ..codecs import get_codec

    t = text.strip().lower()
    if t in (RAW, "float32"):
        return RAW
    return str(get_codec(t, dim))  # UnknownCodecError / InvalidInputError name the problem


def parse_codec_list(text: str | None, dim: int) -> list[str]:
    """``"float16;int8;pq64"`` -> canonical codec strings, validated for ``dim`` (default sweep if empty)."""
    if text is None or not text.strip():
        return default_codecs(dim)
    out: list[str] = []
    for token in text.replace(";", " ").split():
        codec = canonical_codec(token, dim)
        if codec not in out:
            out.append(codec)
    if not out:
        raise UnknownCodecError(f"--codecs {text!r} names no codec; e.g. 'float16;int8;pq64'")
    return out


def parse_oversamples(text: str | None) -> tuple[float, ...]:
    """``"2,4,8"`` -> (2.0, 4.0, 8.0); every value a number >= 1."""
    if text is None or not text.strip():
        return DEFAULT_OVERSAMPLES
    values = []
    for token in text.replace(";", ",").replace(" ", ",").split(","):
        if not token:
            continue
        try:
            value = float(token)
        except ValueError:
            raise InvalidInputError(f"--oversample {text!r}: {token!r} is not a number; e.g. '2,4,8'") from None
        if not value >= 1 or value != value or value == float("inf"):
            raise InvalidInputError(f"--oversample {text!r}: {token} is below 1; oversampling takes k x "
                                    "oversample candidates, so it must be >= 1")
        if value not in values:
            values.append(value)
    if not values:
        raise InvalidInputError(f"--oversample {text!r} names no value; e.g. '2,4,8'")
    return tuple(values)


def parse_rescore(text: str | None) -> tuple[str, ...]:
    """``"raw"``, ``"raw,float16"`` or ``"none"`` -> the fine tiers to rescore from."""
    if text is None or not text.strip():
        return DEFAULT_RESCORE
    tokens = [t.strip().lower() for t in text.replace(";", ",").split(",") if t.strip()]
    if tokens == ["none"]:
        return ()
    out = []
    for token in tokens:
        token = RAW if token == "float32" else token
        if token not in FINE_TIERS:
            raise InvalidInputError(f"--rescore {text!r}: {token!r} cannot rescore; use raw, float16, "
                                    "both ('raw,float16') or none")
        if token not in out:
            out.append(token)
    return tuple(out)


def code_size(codec: str, dim: int) -> int:
    """Code bytes per vector of a canonical codec string (norms not included)."""
    from ..codecs import get_codec

    return 4 * dim if codec == RAW else get_codec(codec, dim).code_size


def min_training_rows(codec: str) -> int:
    """Training vectors the codec needs (2**nbits for a product quantizer, else 1)."""
    if codec == RAW:
        return 0
    need = 1
    for cfg in parse_codec_string(codec):
        if cfg["id"] == "pq":
            need = max(need, 1 << cfg["nbits"])
        if cfg["id"] == "pca":
            need = max(need, 2)
    return need


@dataclass(frozen=True)
class Config:
    """One way to search: scan ``codec``, optionally rescore ``k x oversample`` candidates from ``rescore``."""

    codec: str
    rescore: str | None = None
    oversample: float | None = None

    @property
    def label(self) -> str:
        if self.rescore is None:
            return self.codec
        return f"{self.codec} > {self.rescore} x{self.oversample:g}"

    @property
    def two_stage(self) -> bool:
        return self.rescore is not None

    def twin_label(self) -> str:
        """The FAISS twin as an index_factory string (plus k_factor for a refine stage)."""
        base = faiss_twins.twin_factory_string("float32" if self.codec == RAW else self.codec)
        if self.rescore is None:
            return base
        refine = "RFlat" if self.rescore == RAW else "Refine(SQfp16)"
        return f"{base},{refine} k_factor={self.oversample:g}"


def rescorable(codec: str, fine: str, dim: int) -> bool:
    """Whether a sweep pairs ``codec`` with rescoring from ``fine``: only codes more than 2x smaller
    (float16 from raw, or int8 from float16, is near exact already and saves too little memory)."""
    return codec != RAW and codec != fine and 2 * code_size(codec, dim) < code_size(fine, dim)


def configurations(codecs: list[str], rescore: tuple[str, ...], oversamples: tuple[float, ...],
                   dim: int) -> dict[str, list[Config]]:
    """Per codec, its configurations in measuring order: single-stage first, then each fine tier."""
    out: dict[str, list[Config]] = {}
    for codec in codecs:
        configs = [Config(codec)]
        for fine in rescore:
            if rescorable(codec, fine, dim):
                configs += [Config(codec, fine, f) for f in oversamples]
        out[codec] = configs
    return out
