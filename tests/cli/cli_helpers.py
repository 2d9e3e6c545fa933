"""Helpers of the CLI tests (a module, not conftest.py: importable by name)."""
from __future__ import annotations


def invoke(*args: object):
    """Run the edgepack CLI in-process; returns click's Result (exit_code, output)."""
    from click.testing import CliRunner

    from edgepack.cli.main import cli
    return CliRunner().invoke(cli, [str(a) for a in args])
