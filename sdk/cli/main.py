"""`edgepack` command line: a thin click layer over the library.

Every EdgepackError becomes one line on stderr and the error's exit code (the one mapping,
below: commands never re-wrap errors themselves); a traceback is shown only with --debug.
Commands from other areas register themselves through a `register(cli)` function in their
module, listed in COMMAND_MODULES.
"""
from __future__ import annotations

import importlib
import logging
import sys

import click

from edgepack.runtime.errors import EdgepackError

COMMAND_MODULES = (
    "edgepack.cli.runtime_cmds",
    "edgepack.cli.convert_cmd",
    "edgepack.cli.devices_cmds",
    "edgepack.cli.serve_cmd",
    "edgepack.cli.optimize_cmd",
    "edgepack.cli.compare_cmd",
    "edgepack.cli.mqtt_cmd",
    "edgepack.cli.deploy_cmd",
    "edgepack.cli.oci_cmd",
    "edgepack.cli.audio_cmd",
    "edgepack.cli.text_cmd",
)


#: Exit codes by error family (README "Errors"). Numbers are stable: a new family gets a
#: new number, never a reused one. 2 is also click's own code for a bad option or argument.
EXIT_CODES = {
    "input": 2, "bundle": 3, "pipeline": 4, "engine": 5, "conversion": 6, "device": 7,
    "serve": 8, "registry": 9, "mqtt": 10,
}


def exit_code_for(error: EdgepackError) -> int:
    """The process exit code for `error`: its family's number (1 for the bare root)."""
    return int(getattr(error, "exit_code", 1))


class _Group(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except EdgepackError as e:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {e}", err=True)
            ctx.exit(exit_code_for(e))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.option("--verbose", is_flag=True,
              help="Also show the frameworks' own log lines (TensorFlow, absl, LiteRT, torch).")
@click.version_option(package_name="edgepack")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool) -> None:
    """Package trained models into verified edge bundles, and run them."""
    ctx.ensure_object(dict)["debug"] = debug
    if not (debug or verbose):
        from .quiet import quiet_python_logs
        quiet_python_logs()
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that area is not part of this installation
                continue
            raise
        module.register(cli)


_register_commands()


def main() -> None:
    if {"--verbose", "--debug"} & set(sys.argv[1:]):
        cli(prog_name="edgepack")
        return
    from .quiet import NativeLogFilter
    with NativeLogFilter():
        try:
            cli(prog_name="edgepack", standalone_mode=True)
        except SystemExit as done:
            code = done.code
        else:
            code = 0
    sys.exit(code)


if __name__ == "__main__":
    sys.exit(main())
