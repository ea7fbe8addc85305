"""What several commands share: output formatting and the parsing of inline arguments."""

from __future__ import annotations

import json
import math
import re

import click
import numpy as np

from vecstore.errors import InvalidInputError


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def json_number(x: float):
    return None if not math.isfinite(x) else float(x)


def parse_vector(text: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise InvalidInputError("--vector must be numbers separated by commas or spaces") from None
    return np.asarray(values, dtype=np.float32)


_ID_LIST = re.compile(r"\s*-?\d+\s*(,\s*-?\d+\s*)*,?\s*")


def parse_allow(value: str) -> np.ndarray:
    """``--allow``: comma-separated ids (``3,17,42``), or a file of ids (one per line; commas and
    blank lines allowed). Ids not in the store are ignored, as ``allow=`` does; anything that is
    not an integer is an InvalidInputError naming it (and its line)."""
    if _ID_LIST.fullmatch(value):
        return _ids([(None, value)], f"--allow {value!r}")
    try:
        with open(value, encoding="utf-8") as fh:
            lines = list(enumerate(fh, start=1))
    except FileNotFoundError:
        raise InvalidInputError(f"--allow {value!r} is neither ids separated by commas (e.g. 3,17,42) nor a "
                                "file of ids (one per line)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"--allow {value!r}: cannot read the file of ids ({exc})") from None
    return _ids(lines, f"--allow file {value!r}")


def _ids(lines, where: str) -> np.ndarray:
    out = []
    for number, line in lines:
        for token in line.replace(",", " ").split():
            try:
                out.append(int(token))
            except ValueError:
                at = f", line {number}" if number is not None else ""
                raise InvalidInputError(f"{where}{at}: {token!r} is not an id (ids are integers)") from None
            if not -(1 << 63) <= out[-1] < 1 << 63:
                raise InvalidInputError(f"{where}: id {token} does not fit in int64")
    return np.asarray(out, dtype=np.int64)


def progress_option(quiet: bool) -> bool | None:
    """``progress=`` for a command's --quiet flag: off when asked, else bars only on a terminal
    (None: vecstore.progress decides), so output redirected to a log file carries no bars."""
    return False if quiet else None


def stored_metadata(store, ids: np.ndarray) -> list | None:
    """The metadata of each result id (nq lists of k), or None when the store has no metadata
    (neither its main file nor a segment)."""
    metadata = store.metadata(ids)
    if any(m is not None for row in metadata for m in row) or store.info()["has_metadata"]:
        return metadata
    return None


def echo_results(distances: np.ndarray, ids: np.ndarray, keys: list, metric: str, metadata: list | None = None,
                 skipped=()) -> None:
    """Ranked results of each query as text: rank, id, score (distance for l2), key, and the stored
    metadata as compact JSON when the store has metadata. Padding (id -1, when k exceeds the
    documents) is left out; a query in ``skipped`` (a text without a known word) says so."""
    label = "distance" if metric == "l2" else "score"
    for q in range(ids.shape[0]):
        click.echo(f"query {q}")
        if q in skipped:
            click.echo("  (no known word: skipped)")
            continue
        shown = [keys[q][r] or "" for r in range(ids.shape[1]) if ids[q, r] >= 0]
        width = max([3] + [len(key) for key in shown]) if metadata is not None else 0
        click.echo(f"  {'rank':>4}  {'id':>10}  {label:>10}  {'key':<{width}}"
                   + ("  metadata" if metadata is not None else ""))
        for r, key in enumerate(shown):
            line = f"  {r + 1:>4}  {ids[q, r]:>10}  {distances[q, r]:>10.4f}  {key:<{width}}"
            if metadata is not None and metadata[q][r] is not None:
                line += f"  {json.dumps(metadata[q][r], ensure_ascii=False, separators=(',', ':'))}"
            click.echo(line.rstrip())


def results_json(distances: np.ndarray, ids: np.ndarray, keys: list, metadata: list | None = None) -> list[dict]:
    """Ranked results of each query as JSON-safe dicts (infinite padding values become null).

    ``scores`` are the values the text output prints: similarities for ip/cosine (higher is better),
    squared L2 distances for l2 (lower is better). ``distances`` holds the same numbers under the
    library's name (``SearchResult.distances``) and is kept so that scripts written for it still work.
    ``metadata`` (one object or null per hit) is there when the store has metadata.
    """
    out = []
    for q in range(ids.shape[0]):
        values = [json_number(x) for x in distances[q]]
        entry = {"query": q, "ids": ids[q].tolist(), "scores": values, "distances": values, "keys": keys[q]}
        if metadata is not None:
            entry["metadata"] = metadata[q]
        out.append(entry)
    return out
