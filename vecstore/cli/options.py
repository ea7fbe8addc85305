"""What several commands share: output formatting and the parsing of inline arguments."""

from __future__ import annotations

import math

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


def progress_option(quiet: bool) -> bool | None:
    """``progress=`` for a command's --quiet flag: off when asked, else bars only on a terminal
    (None: vecstore.progress decides), so output redirected to a log file carries no bars."""
    return False if quiet else None


def echo_results(distances: np.ndarray, ids: np.ndarray, keys: list, metric: str) -> None:
    """Ranked results of each query as text: rank, id, score (distance for l2), key. Padding (id -1,
    when k exceeds the documents) is left out."""
    label = "distance" if metric == "l2" else "score"
    for q in range(ids.shape[0]):
        click.echo(f"query {q}")
        click.echo(f"  {'rank':>4}  {'id':>10}  {label:>10}  key")
        for r in range(ids.shape[1]):
            if ids[q, r] < 0:
                break
            key = keys[q][r] if keys[q][r] is not None else ""
            click.echo(f"  {r + 1:>4}  {ids[q, r]:>10}  {distances[q, r]:>10.4f}  {key}")


def results_json(distances: np.ndarray, ids: np.ndarray, keys: list) -> list[dict]:
    """Ranked results of each query as JSON-safe dicts (infinite padding distances become null)."""
    return [{"query": q, "ids": ids[q].tolist(), "distances": [json_number(x) for x in distances[q]],
             "keys": keys[q]} for q in range(ids.shape[0])]
