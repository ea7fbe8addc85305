"""Progress bars: one rule for every long operation (build, compress, append, compact, shards).

``progress=None`` (the default everywhere) draws bars only when stderr is a terminal, so logs and
pipes stay clean; True or False forces them on or off.
"""

from __future__ import annotations

import sys


def progress_enabled(progress: bool | None) -> bool:
    """Whether to draw bars for a ``progress`` argument (None: only on a terminal)."""
    return sys.stderr.isatty() if progress is None else bool(progress)
