"""Packaging: Dask is an extra. vecstore imports and works without it, and says what to install when
a Dask cluster is asked for; the test extra keeps Dask so that `make test` tests the Dask backend."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib

from conftest import ROOT

# Run in a child whose import system refuses dask and distributed, as on an install without the extra.
WITHOUT_DASK = r'''
import sys
sys.modules["dask"] = None
sys.modules["distributed"] = None
import numpy as np
import vecstore
from click.testing import CliRunner
from vecstore.cli import cli

out = sys.argv[1]
x = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
with vecstore.build(out + "/s.vs", x, metric="l2", progress=False) as store:
    assert store.search(x[:2], 3).ids[:, 0].tolist() == [0, 1]
vecstore.shard_build(x, out + "/shards", shards=2, codecs=["int8"], metric="l2", progress=False)
with vecstore.open_sharded(out + "/shards") as coll:
    assert coll.search(x[:2], 3).ids[:, 0].tolist() == [0, 1]
try:
    vecstore.open_sharded(out + "/shards", client="tcp://127.0.0.1:1")
except vecstore.VecstoreError as exc:
    print("ERROR", exc)
result = CliRunner().invoke(cli, ["shard-search", out + "/shards", "--vector", ",".join(["0"] * 8),
                                  "--scheduler", "tcp://127.0.0.1:1"])
print("CLI", result.exit_code, result.stderr.strip())
assert "dask" not in sys.modules or sys.modules["dask"] is None
'''


def test_dask_is_an_extra_kept_in_the_test_extra():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        project = tomllib.load(fh)["project"]
    assert not any(d.startswith("dask") for d in project["dependencies"])
    extras = project["optional-dependencies"]
    assert any(d.startswith("dask[distributed]") for d in extras["dask"])
    assert any(d.startswith("dask[distributed]") for d in extras["test"])


def test_vecstore_works_without_dask(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-c", WITHOUT_DASK, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    error = next(line for line in done.stdout.splitlines() if line.startswith("ERROR"))
    assert "pip install 'vecstore[dask]'" in error
    cli = next(line for line in done.stdout.splitlines() if line.startswith("CLI"))
    assert cli.startswith("CLI 1 Error: ") and "vecstore[dask]" in cli and len(cli.splitlines()) == 1
