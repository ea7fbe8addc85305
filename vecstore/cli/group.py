"""The ``vecstore`` command group: every command module registers on it. A VecstoreError (a
failure the user caused) is printed as one line on stderr with exit status 1; a bug still shows
its traceback.

Command modules are imported on demand: a fresh ``vecstore search`` should not pay for the imports
of ``bench`` or ``build-text`` (tests/cli/test_cli.py checks COMMANDS against the modules)."""

from __future__ import annotations

import importlib

import click

from vecstore import __version__
from vecstore.errors import VecstoreError

# command -> the module of vecstore.cli that defines it
COMMANDS = {
    **dict.fromkeys(("build", "info", "search", "compress", "export-params", "verify", "add-fields"), "store"),
    **dict.fromkeys(("build-text", "add-encoder", "export-encoder"), "text"),
    **dict.fromkeys(("append", "delete", "compact", "swap", "check"), "lifecycle"),
    **dict.fromkeys(("shard-build", "shard-search"), "shards"),
    "bench": "bench",
}


class _Group(click.Group):
    def list_commands(self, ctx):
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx, name):
        if name not in self.commands and name in COMMANDS:
            importlib.import_module(f"{__package__}.{COMMANDS[name]}")  # registers its commands on cli
        return self.commands.get(name)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VecstoreError as exc:
            raise click.ClickException(" ".join(str(exc).split())) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vecstore")
def cli() -> None:
    """Store a neural network's outputs in one memory-mapped HDF5 file and search them fast."""


def main() -> None:
    cli(prog_name="vecstore")
