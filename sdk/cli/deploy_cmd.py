"""`edgepack deploy`, `rollback`, `status`: bundles onto boards over the system ssh client."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgepack.devices.deploy import (DeployConfig, DeployError, ServiceConfig, SshOptions,
                                     SshTarget, deploy_fleet, read_hosts)
from edgepack.devices.deploy import deploy as deploy_one
from edgepack.devices.deploy import rollback as rollback_one
from edgepack.devices.deploy import status as board_status


def _ssh_options(f):
    f = click.option("--ssh-config", "-F", "ssh_config", type=click.Path(dir_okay=False),
                     help="ssh config file to use instead of ~/.ssh/config (ssh -F).")(f)
    f = click.option("--ssh-option", "-o", "ssh_option", multiple=True, metavar="KEY=VALUE",
                     help="Extra ssh option (ssh -o), repeatable.")(f)
    f = click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535),
                     help="Port of `edgepack serve` on the board (reached through ssh).")(f)
    f = click.option("--timeout", default=60.0, show_default=True,
                     type=click.FloatRange(min=0.1),
                     help="Seconds to wait for the board's server to report READY.")(f)
    f = click.option("--edgepack", "remote_edgepack", metavar="PATH",
                     help="The board's edgepack [on PATH, else ~/.edgepack/venv/bin/edgepack].")(f)
    return f


def _config(ssh_config, ssh_option, port, timeout, remote_edgepack, **more) -> DeployConfig:
    for option in ssh_option:
        if "=" not in option:
            raise click.BadParameter(f"{option!r}: use KEY=VALUE", param_hint="--ssh-option")
    return DeployConfig(port=port, timeout=timeout, edgepack=remote_edgepack,
                        ssh=SshOptions(config_file=ssh_config, options=tuple(ssh_option)),
                        **more)


def _print_table(results) -> None:
    click.echo(f"{'host':<32} {'state':<12} {'version':<8} message")
    for r in results:
        click.echo(f"{r.host:<32} {r.state:<12} {r.version or '-':<8} {r.message}")


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("target", required=False)
@click.option("--hosts", "hosts_file", type=click.Path(exists=True, dir_okay=False,
                                                        path_type=Path),
              help="Deploy to every board in FILE (one [USER@]HOST[:REPO] per line), canary first.")
@click.option("--model", help="Model name on the board [the bundle's manifest name].")
@click.option("--version", "version", help="Version to create [next integer].")
@click.option("--device", "-d", help="Check against this profile instead of the one the "
                                     "board's `edgepack doctor` picks.")
@click.option("--force", is_flag=True, help="Deploy even when the check finds errors.")
@click.option("--smoke", is_flag=True, help="Also run one inference on the new version "
                                            "(always done on a fleet's canary).")
@click.option("--trusted-key", type=click.Path(exists=True, dir_okay=False),
              help="Refuse the bundle unless its signature verifies with this public key.")
@click.option("--install-service", is_flag=True,
              help="Install edgepack in a venv on the board if missing, and a systemd unit "
                   "for `edgepack serve` (idempotent).")
@click.option("--user", "user_unit", is_flag=True,
              help="With --install-service: a systemd --user unit (no root needed).")
@click.option("--unit-dir", metavar="DIR",
              help="With --install-service: write the unit here [/etc/systemd/system, or "
                   "~/.config/systemd/user with --user].")
@click.option("--serve-host", default="127.0.0.1", show_default=True,
              help="With --install-service: address the service listens on.")
@click.option("--pip-spec", help="With --install-service: what to pip install "
                                 "[edgepack[onnx,serve] or edgepack[litert,serve]].")
@click.option("--parallel", default=4, show_default=True, type=click.IntRange(min=1),
              help="With --hosts: boards deployed at once after the canary.")
@click.option("--continue", "keep_going", is_flag=True,
              help="With --hosts: keep deploying after a board fails.")
@click.option("--json", "as_json", is_flag=True, help="Print the result(s) as JSON.")
@_ssh_options
@click.pass_context
def deploy(ctx: click.Context, bundle: Path, target: str | None, hosts_file: Path | None,
           model, version, device, force, smoke, trusted_key, install_service, user_unit,
           unit_dir, serve_host, pip_spec, parallel, keep_going, as_json, **ssh) -> None:
    """Deploy BUNDLE to the board TARGET ([USER@]HOST[:REPOSITORY], default repository
    `models`), or to every board of --hosts FILE.

    The board is checked first (its `edgepack doctor` profile and installed engines); the
    bundle is copied to a hidden name, checksummed there and renamed into
    REPOSITORY/MODEL/N.edgepack; the board's server must then list it READY, or it is
    removed again and the previous version keeps serving. Exit 7 when it did not go live.
    """
    if (target is None) == (hosts_file is None):
        raise click.UsageError("give either TARGET or --hosts FILE")
    service = ServiceConfig(user_unit=user_unit, host=serve_host, port=ssh["port"],
                            unit_dir=unit_dir, pip_spec=pip_spec) if install_service else None
    config = _config(**ssh, model=model, version=version, device=device, force=force,
                     smoke=smoke, trusted_key=trusted_key, install_service=service)
    if target is not None:
        result = deploy_one(bundle, SshTarget.parse(target), config)
        if as_json:
            click.echo(json.dumps(result.to_dict(), indent=2))
            return
        for finding in result.findings:
            if finding["severity"] == "warning":
                click.echo(f"  warn  {finding['code']}: {finding['message']}")
        for note in result.notes:
            click.echo(f"  {note}")
        click.echo(f"{result.host}: {result.message} ({result.seconds:.1f} s; "
                   f"previous: {', '.join(result.previous) or 'none'})")
        return
    if version is not None:
        raise click.UsageError("--version applies to one board; a fleet takes the next number "
                               "on each board")
    hosts = read_hosts(hosts_file)
    results = deploy_fleet(bundle, hosts, config, parallel=parallel, keep_going=keep_going)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        _print_table(results)
    failed = [r for r in results if not r.ok]
    if failed:
        if not as_json:
            click.echo(f"error: {len(failed)} of {len(results)} board(s) did not take the "
                       "bundle", err=True)
        ctx.exit(DeployError.exit_code)


@click.command()
@click.argument("target")
@click.option("--model", required=True, help="Model to roll back.")
@click.option("--to", "to", help="Version to serve again [the one before the newest].")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_ssh_options
def rollback(target: str, model: str, to: str | None, as_json: bool, **ssh) -> None:
    """Serve an older version of MODEL on TARGET again.

    Versions newer than --to are renamed to hidden `.N.edgepack.rolled-back` files (kept,
    not deleted) and the command waits until the server lists --to READY.
    """
    result = rollback_one(SshTarget.parse(target), model, to, _config(**ssh))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(f"{result.host}: {model} {result.message}")


@click.command()
@click.argument("target")
@click.option("--json", "as_json", is_flag=True, help="Print the versions as JSON.")
@_ssh_options
def status(target: str, as_json: bool, **ssh) -> None:
    """List every model version on TARGET's server: READY, LOADING or UNAVAILABLE and why."""
    rows = board_status(SshTarget.parse(target), _config(**ssh))
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        return
    if not rows:
        click.echo("no models")
    for r in rows:
        click.echo(f"{r.model:<20} {r.version:<8} {r.state:<12} {r.reason}")


def register(cli: click.Group) -> None:
    """Add deploy, rollback and status to the edgepack command group."""
    for command in (deploy, rollback, status):
        cli.add_command(command)


__all__ = ["register"]
