"""Model provenance: which model produced a store's vectors, and refusing vectors of another one.

A store records ``{"name", "version", "fingerprint"}`` in its root ``model`` attribute. The
fingerprint is a digest (vecstore.format.digest) of the model's parameters when the caller gives them, or
of the text encoder stored with the vectors (then ``"encoder"`` names it). Queries, appended
documents and encoders that declare another ``name@version`` are refused with both versions named:
vectors of two model versions live in different spaces, and mixing them fails silently otherwise.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping

import numpy as np

from ..errors import FormatError, InvalidInputError, ModelMismatchError, StoreNotFoundError
from ..format.digest import digest_arrays

MODEL_SPEC = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9_./-]{0,127})@(?P<version>[A-Za-z0-9][A-Za-z0-9_.+-]{0,63})$")


def parse_model(spec: str) -> tuple[str, str]:
    """``"name@version"`` -> (name, version); anything else is an InvalidInputError."""
    match = MODEL_SPEC.match(spec) if isinstance(spec, str) else None
    if match is None:
        raise InvalidInputError(
            f"model {spec!r} does not parse: write NAME@VERSION, e.g. minilm-l6@2 (letters, digits and "
            "_ . - / in the name; letters, digits and _ . + - in the version)"
        )
    return match["name"], match["version"]


def params_fingerprint(params) -> str:
    """Digest of a model's parameters: a mapping of name -> array, a sequence of arrays, or one array."""
    if isinstance(params, Mapping):
        arrays = {str(k): np.asarray(v) for k, v in params.items()}
    elif isinstance(params, np.ndarray):
        arrays = {"0": params}
    else:
        arrays = {str(i): np.asarray(v) for i, v in enumerate(params)}
    for name, arr in arrays.items():
        if arr.dtype.kind not in "biuf":
            raise InvalidInputError(f"model parameter {name!r} has dtype {arr.dtype}: give numeric arrays")
    return digest_arrays(arrays)


def encoder_fingerprint(encoder) -> str:
    """Digest of a text encoder: its config, vocabulary and arrays (what search_text depends on)."""
    text = json.dumps(encoder.config(), sort_keys=True) + "\0" + "\0".join(encoder.vocab)
    return digest_arrays(encoder.arrays(), text)


def model_record(model, *, params=None, encoder_name: str | None = None, encoder=None) -> dict | None:
    """The ``model`` attribute to store: from ``"name@version"`` (or a dict holding name and version),
    fingerprinted by ``params`` or else by the stored ``encoder``."""
    if model is None:
        if params is not None:
            raise InvalidInputError("model parameters were given without a model: pass model='NAME@VERSION'")
        return None
    if isinstance(model, Mapping):
        record = dict(model)
        if "name" in record or "version" in record:
            parse_model(f"{record.get('name')}@{record.get('version')}")
    else:
        name, version = parse_model(model)
        record = {"name": name, "version": version}
    if params is not None:
        record["fingerprint"] = params_fingerprint(params)
    elif encoder is not None and "fingerprint" not in record:
        record["fingerprint"] = encoder_fingerprint(encoder)
        record["encoder"] = encoder_name
    return record


def describe(record: dict | None) -> str:
    """``name@version (fingerprint f)`` for messages and ``info``."""
    if not record or "name" not in record:
        return "an unrecorded model"
    text = f"{record['name']}@{record['version']}"
    return text + (f" (fingerprint {record['fingerprint']})" if record.get("fingerprint") else "")


def check_model(record: dict | None, spec: str, what: str) -> None:
    """Refuse ``what`` (queries, documents) declared as coming from ``spec`` when the store's vectors
    come from another model or version."""
    name, version = parse_model(spec)
    if not record or "name" not in record:
        raise ModelMismatchError(
            f"{what} come from {spec} but the store records no model: rebuild it with "
            "--model NAME@VERSION (or drop the model check)"
        )
    if (record["name"], record["version"]) != (name, version):
        raise ModelMismatchError(
            f"{what} come from model {spec} but the store holds vectors of {describe(record)}: "
            "use a store built with the same model version (or re-deploy: build, verify, `vecstore swap`)"
        )


def check_encoder(record: dict | None, name: str, encoder) -> None:
    """Refuse a stored encoder whose fingerprint is not the model the store's vectors came from."""
    if not record or record.get("encoder") != name or not record.get("fingerprint"):
        return
    found = encoder_fingerprint(encoder)
    if found != record["fingerprint"]:
        raise ModelMismatchError(
            f"encoder {name!r} (fingerprint {found}) is not the model that produced the store's vectors, "
            f"{describe(record)}: rebuild the store with this encoder, or add back the one it was built with"
        )


def load_model_params(path: str) -> dict[str, np.ndarray]:
    """A model's parameters from a ``.npz`` (read without pickle) or a JSON object of number lists."""
    if not os.path.isfile(path):
        raise StoreNotFoundError(f"model parameters {path!r} do not exist")
    if path.endswith(".npz"):
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (ValueError, OSError) as exc:
            raise FormatError(f"{path!r} is not a readable .npz of numeric arrays ({exc})") from None
    try:
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        return {str(name): np.asarray(value, dtype=np.float64) for name, value in doc.items()}
    except (ValueError, TypeError) as exc:
        raise FormatError(f"{path!r}: give a .npz, or a JSON object of name -> number lists ({exc})") from None
