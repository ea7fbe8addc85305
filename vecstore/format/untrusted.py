"""Reading the header of a file from an untrusted source in a child process first.

libhdf5 has two failures that no check in this process can prevent, because they happen inside
libhdf5 while it reads a variable-length string attribute (tests/robustness/test_hostile.py shows both): a
crafted global heap makes it loop forever, and a crafted string length makes it allocate up to 4 GiB
before it notices the lie. So for a file from outside, ``vecstore.open(path, untrusted=True)`` first
validates the header in a child process that has a time limit and an address-space limit; only a
file whose header passed there is opened here. A trusted file (one this library wrote) skips it.
"""

from __future__ import annotations

import json
import subprocess
import sys

from .. import errors
from ..errors import FormatError

HEADER_TIMEOUT_S = 20.0
HEADER_MEMORY_BYTES = 512 << 20

_CHILD = r"""
import json, resource, sys
from vecstore.format import schema as fmt
from vecstore.errors import VecstoreError
path, budget = sys.argv[1], int(sys.argv[2])
with open("/proc/self/status") as fh:
    size = int(fh.read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + budget, size + budget))
try:
    fmt.open_store_file(path, map_file=False)
    print(json.dumps({"ok": True}))
except VecstoreError as exc:
    print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
except MemoryError:
    print(json.dumps({"error": "FormatError", "message": f"{path!r}: reading its header needs more than "
                      f"{budget >> 20} MiB; the file is damaged or hostile"}))
"""


def check_header_in_child(path: str, *, timeout: float = HEADER_TIMEOUT_S,
                          memory: int = HEADER_MEMORY_BYTES) -> None:
    """Validate the header of ``path`` in a child process limited to ``timeout`` seconds and
    ``memory`` bytes of address space beyond its imports; raise what it found, as this process would."""
    try:
        run = subprocess.run([sys.executable, "-c", _CHILD, path, str(memory)], capture_output=True,
                             text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise FormatError(
            f"{path!r}: reading its HDF5 header did not finish within {timeout:.0f} s (a crafted file can "
            "make libhdf5 loop); the file is damaged or hostile"
        ) from None
    lines = run.stdout.strip().splitlines()
    try:
        verdict = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise FormatError(
            f"{path!r}: the process reading its header failed (exit {run.returncode}: "
            f"{run.stderr.strip().splitlines()[-1] if run.stderr.strip() else 'no message'}); the file is damaged or hostile"
        ) from None
    if verdict.get("ok"):
        return
    error = getattr(errors, str(verdict.get("error")), None)
    if not (isinstance(error, type) and issubclass(error, errors.VecstoreError)):
        error = FormatError
    raise error(verdict.get("message", f"{path!r} is not a readable store"))
