"""What ``import vecstore`` and the command line's start cost: the public API is imported on first
use (vecstore/__init__.py), and a command imports only its own family's module (cli/group.py), so a
fresh process that searches one store does not pay for numba's compiler, FAISS, Dask or tqdm up
front (issue 17: a fresh ``vecstore search`` against a FAISS script)."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

import vecstore

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEAVY = ("numba", "faiss", "dask", "distributed", "tqdm", "h5py", "scipy")


def modules_after(code: str) -> set[str]:
    """The top-level modules loaded by a fresh interpreter that runs ``code``."""
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys, json\n"
                          "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"],
                         capture_output=True, text=True, env=env, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_import_vecstore_loads_nothing_heavy():
    loaded = modules_after("import vecstore")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert "numpy" not in loaded


def test_cli_start_loads_nothing_heavy():
    loaded = modules_after("import vecstore.cli")
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))


@pytest.mark.parametrize("name", vecstore.__all__)
def test_every_public_name_resolves(name):
    assert getattr(vecstore, name) is not None
    assert name in dir(vecstore)


def test_lazy_names_are_the_modules_objects():
    from vecstore.store import Store, open as open_store
    from vecstore.store.provenance import describe

    assert vecstore.Store is Store and vecstore.open is open_store and vecstore.describe_model is describe
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        vecstore.nonsense


@pytest.mark.parametrize("first", ["import vecstore.kernels.flat", "from vecstore.kernels import dispatch; dispatch.K.numba",
                                   "import vecstore.encoders", "from vecstore.bench import faiss_twins; faiss_twins.set_threads(1)"])
def test_threading_layer_is_set_before_numba_is_used_whatever_is_imported_first(first):
    code = (f"{first}\nimport numba\n"
            "assert numba.config.THREADING_LAYER == 'threadsafe', numba.config.THREADING_LAYER")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    env["PYTHONPATH"] = ROOT
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def test_command_table_names_every_command():
    from vecstore.cli import group

    for module in set(group.COMMANDS.values()):
        importlib.import_module(f"vecstore.cli.{module}")
    assert sorted(group.cli.commands) == sorted(group.COMMANDS)
    for name, module in group.COMMANDS.items():
        assert group.cli.commands[name].callback.__module__ == f"vecstore.cli.{module}"


SPY = """
import importlib.abc, sys
first = []

class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "numba" and not first:
            frame = sys._getframe(1)
            while frame is not None and not frame.f_globals.get("__name__", "").startswith("vecstore"):
                frame = frame.f_back
            first.append(frame.f_globals["__name__"] if frame is not None else "?")
        return None

sys.meta_path.insert(0, Spy())
"""


def test_a_small_search_imports_no_numba(tmp_path):
    """Opening a store and a small exact search (answered in numpy: kernels.dispatch.by_numpy) need no
    numba (vecstore/codecs/pq.py imports it where PQ training and lookup tables use it), so a fresh
    `vecstore search` of a small store skips numba's 0.15 s import."""
    import numpy as np

    path = str(tmp_path / "s.vs")
    vecstore.build(path, np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32), metric="cosine",
                   progress=False).close()
    code = SPY + (f"import vecstore, numpy as np\nwith vecstore.open({path!r}) as s:\n"
                  f"    s.search(np.ones(16, np.float32), 5)\nprint('first:', first)")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == "first: []", out
