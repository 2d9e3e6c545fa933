"""Device commands: devices (list/show), doctor, check, emulate."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import click

from edgepack.devices import (check_bundle, closest_profile, detect_host, list_profiles,
                              load_profile)
from edgepack.runtime.errors import DeviceError

_SYMBOL = {"error": "ERROR", "warning": "warn ", "info": "info "}


def _device_option(f):
    return click.option("--device", "-d", required=True, metavar="NAME",
                        help="Device profile (see `edgepack devices`).")(f)


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
@click.pass_context
def devices(ctx: click.Context, as_json: bool) -> None:
    """List the device profiles edgepack knows (`devices show NAME` for one)."""
    if ctx.invoked_subcommand is not None:
        return
    profiles = list_profiles()
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in profiles], indent=2))
        return
    click.echo(f"{'name':<20} {'arch':<8} {'core':<11} {'cores':>5} {'RAM MB':>7}  "
               f"{'engines':<44} default")
    for p in profiles:
        engines = ", ".join(e.package for e in p.engines if e.available)
        click.echo(f"{p.name:<20} {p.arch:<8} {p.core:<11} {p.cores:>5} {p.ram_mb:>7}  "
                   f"{engines:<44} {p.target}/{p.quantization}")


@devices.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
def show(name: str, as_json: bool) -> None:
    """Show one device profile."""
    p = load_profile(name)
    if as_json:
        click.echo(json.dumps(p.to_dict(), indent=2))
        return
    click.echo(f"{p.name}: {p.title}")
    click.echo(f"  cpu:     {p.cores}x {p.core} @ {p.max_mhz} MHz, {p.isa}, "
               f"features {', '.join(p.features)}")
    variants = f" (variants {', '.join(map(str, p.ram_variants_mb))})" if p.ram_variants_mb \
        else ""
    click.echo(f"  memory:  {p.ram_mb} MB{variants}, budget {p.ram_budget_mb} MB after the OS")
    click.echo(f"  os:      {p.os_name}, glibc {p.glibc}, Python {p.python} ({p.arch})")
    click.echo(f"  default: target {p.target}, quantization {p.quantization}, "
               f"threads {p.threads}")
    click.echo("  engines:")
    for e in p.engines:
        state = f"{e.version or 'any'}" if e.available else "NOT AVAILABLE"
        click.echo(f"    {e.package:<15} {state:<14} {e.wheel}")
        if e.notes:
            click.echo(f"    {'':<15} {e.notes}")
    if p.notes:
        click.echo(f"  notes:   {p.notes}")
    for s in p.sources:
        click.echo(f"  source:  {s}")


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(as_json: bool) -> None:
    """Describe this machine and the device profile closest to it."""
    host = detect_host()
    profile, why = closest_profile(host)
    if as_json:
        click.echo(json.dumps({"host": host.to_dict(), "closest_profile": profile.name,
                               "reason": why}, indent=2))
        return
    click.echo(f"board:    {host.model or '(no device-tree model)'}")
    click.echo(f"arch:     {host.arch}" + (f", core {host.core}" if host.core else ""))
    click.echo(f"cores:    {host.cores}")
    click.echo(f"RAM:      {host.ram_mb} MB" if host.ram_mb else "RAM:      unknown")
    click.echo(f"features: {', '.join(host.features) or 'none detected'}")
    click.echo(f"python:   {host.python}, glibc {host.glibc or 'not glibc'}")
    engines = ", ".join(f"{k} {v}" for k, v in host.engines.items()) or "none installed"
    click.echo(f"engines:  {engines}")
    click.echo(f"profile:  {profile.name} ({why})")


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@_device_option
@click.option("--ram-mb", type=click.IntRange(min=64), metavar="MB",
              help="The board's RAM, for a variant the profile does not describe "
                   "(e.g. a 2 GB Raspberry Pi 4) [the profile's].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_context
def check(ctx: click.Context, bundle: Path, device: str, ram_mb: int | None,
          as_json: bool) -> None:
    """Say whether BUNDLE can run on a device, and why not. Exit 1 when it cannot."""
    profile = load_profile(device)
    if ram_mb is not None:
        if ram_mb <= profile.os_reserved_mb:
            raise click.BadParameter(f"{ram_mb} MB leaves nothing after the "
                                     f"{profile.os_reserved_mb} MB the OS of {profile.name} "
                                     "uses", param_hint="--ram-mb")
        profile = dataclasses.replace(profile, ram_mb=ram_mb)
    report = check_bundle(bundle, profile)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
    else:
        est = report.estimates
        click.echo(f"{bundle.name} on {report.device}: {est.get('target')} "
                   f"{est.get('quantization')} via {est.get('engine') or 'no engine'}, "
                   f"~{est.get('estimated_total_mb')} MB of {est.get('ram_budget_mb')} MB")
        for f in report.findings:
            click.echo(f"  {_SYMBOL[f.severity]} {f.code}: {f.message}")
            if f.fix:
                click.echo(f"         fix: {f.fix}")
        click.echo("OK: it can run there" if report.ok else "NOT OK: it cannot run there")
    if not report.ok:
        ctx.exit(1)


@click.command()
@click.argument("bundle", type=click.Path(exists=True, path_type=Path))
@click.argument("inputs", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@_device_option
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="Engine threads on both sides.")
@click.option("--atol", default=1e-4, show_default=True, type=click.FloatRange(min=0.0),
              help="Float outputs: absolute tolerance.")
@click.option("--rtol", default=1e-3, show_default=True, type=click.FloatRange(min=0.0),
              help="Float outputs: relative tolerance.")
@click.option("--cache-dir", type=click.Path(path_type=Path),
              help="Where the emulated userland is cached [~/.cache/edgepack].")
@click.option("--rebuild", is_flag=True, help="Rebuild the emulated userland.")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_context
def emulate(ctx: click.Context, bundle: Path, inputs: tuple[str, ...], device: str,
            threads: int, atol: float, rtol: float, cache_dir: Path | None, rebuild: bool,
            as_json: bool) -> None:
    """Run BUNDLE under qemu as the device's CPU and compare with the host run.

    INPUT files are .npy (one per bundle input, in order) or .npz (named like the inputs);
    without them seeded random inputs are used. Integer outputs must match bit for bit,
    float outputs of a fully-int8 bundle within 1 ulp (the rounding of its final
    dequantize), other float outputs within ATOL + RTOL*|host|. The check applied is
    printed per output. Exit 1 on a mismatch.
    """
    from edgepack.devices.emulation import Tolerance, emulate as run_emulated, load_inputs

    feeds = load_inputs(bundle, inputs) if inputs else None
    result = run_emulated(bundle, device, feeds, threads=threads,
                          tolerance=Tolerance(atol=atol, rtol=rtol), cache_dir=cache_dir,
                          rebuild=rebuild, progress=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        click.echo(f"{bundle.name} on {result.device} (qemu {result.qemu_cpu}): "
                   f"host {result.host_engine} vs device {result.device_engine}")
        for o in result.outputs:
            rule = {"exact": "bit-exact",
                    "ulp": "within 1 ulp (int8 model: float output after its dequantize)"
                    }.get(o.rule, f"atol {atol:g} + rtol {rtol:g}")
            state = "ok" if o.ok else f"MISMATCH ({o.mismatches} elements)"
            click.echo(f"  {o.name} {o.dtype}{list(o.shape)}: max |diff| {o.max_abs:.3g}, "
                       f"{rule}: {state}")
        s = result.seconds
        click.echo(f"  time: host {s['host_run']} s, emulated {s['emulated_run']} s"
                   + (f", environment built in {s['environment_build']} s"
                      if s["environment_build"] else ""))
        for note in result.notes:
            click.echo(f"  note: {note}")
        click.echo("OK: outputs match the host" if result.ok else "MISMATCH")
    if not result.ok:
        ctx.exit(1)


def register(cli: click.Group) -> None:
    """Add the device commands to the `edgepack` group."""
    for command in (devices, doctor, check, emulate):
        cli.add_command(command)


__all__ = ["register", "DeviceError"]
