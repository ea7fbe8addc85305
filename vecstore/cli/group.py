"""The ``vecstore`` command group: every command module registers on it. A VecstoreError (a
failure the user caused) is printed as one line on stderr with exit status 1; a bug still shows
its traceback."""

from __future__ import annotations

import click

import vecstore
from vecstore.errors import VecstoreError


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except VecstoreError as exc:
            raise click.ClickException(" ".join(str(exc).split())) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(vecstore.__version__, prog_name="vecstore")
def cli() -> None:
    """Store a neural network's outputs in one memory-mapped HDF5 file and search them fast."""


def main() -> None:
    cli(prog_name="vecstore")
