"""`edgepack serve`: the Open Inference Protocol (KServe V2) server on the command line."""
from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import click

from edgepack.runtime.serve import ModelServer, ServeConfig, ServeError, VersionPolicy
from edgepack.runtime.serve.repository import version_key

from .mqtt_cmd import serve_mqtt_options, start_serve_bridge
from .values import byte_size


def _policies(values: tuple[str, ...]) -> tuple[VersionPolicy, tuple[tuple[str, VersionPolicy], ...]]:
    default, per_model = VersionPolicy(), []
    for value in values:
        model, sep, spec = value.partition("=")
        try:
            if sep:
                per_model.append((model.strip(), VersionPolicy.parse(spec)))
            else:
                default = VersionPolicy.parse(value)
        except ServeError as exc:
            raise click.BadParameter(str(exc), param_hint="--versions") from None
    return default, tuple(per_model)


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 to accept other machines.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Inferences run at once [number of CPU cores].")
@click.option("--threads", type=click.IntRange(min=1),
              help="Engine intra-op threads per model [cores // workers].")
@click.option("--spin-wait/--no-spin-wait", default=None,
              help="Engine worker threads spin (or sleep) between runs [engine default].")
@click.option("--engine", help="Force an engine (e.g. onnxruntime, litert).")
@click.option("--versions", "versions", multiple=True, metavar="[MODEL=]POLICY",
              help="latest (default), latest:N, all, or versions to pin such as 1,3; "
                   "prefix MODEL= for one model. Repeatable.")
@click.option("--max-body", default="64M", show_default=True,
              help="Largest request body accepted (413 beyond).")
@click.option("--max-connections", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--header-timeout", default=10.0, show_default=True,
              type=click.FloatRange(min=0.0, min_open=True),
              help="Seconds a request head may take once its first byte arrives (slow loris).")
@click.option("--body-timeout", default=30.0, show_default=True,
              type=click.FloatRange(min=0.0, min_open=True),
              help="Seconds a request body may take to arrive (400 beyond).")
@click.option("--max-image-pixels", default=25_000_000, show_default=True,
              type=click.IntRange(min=1),
              help="Largest image (width x height) decoded for /predict; 413 beyond, "
                   "checked from the header.")
@click.option("--poll", default=2.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Seconds between repository scans; 0 disables hot updates.")
@click.option("--trusted-key", type=click.Path(exists=True, dir_okay=False),
              help="Public key: refuse versions without a valid signature.")
@click.option("--no-smoke-test", is_flag=True,
              help="Skip the zero-input inference run before a version goes live.")
@click.option("--quiet", is_flag=True, help="Log warnings and errors only.")
@click.option("--pull", "pull", multiple=True, metavar="REGISTRY/REPO:TAG",
              help="Follow an OCI tag: each new digest is pulled, verified and written as "
                   "the next version PATH/<model>/N.edgepack. Repeatable.")
@click.option("--pull-poll", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between checks of the --pull tags.")
@serve_mqtt_options
def serve(path: Path, host: str, port: int, workers: int | None, threads: int | None,
          spin_wait: bool | None, engine: str | None, versions: tuple[str, ...],
          max_body: str, max_connections: int, poll: float, trusted_key: str | None,
          no_smoke_test: bool, quiet: bool, pull: tuple[str, ...] = (),
          pull_poll: float = 30.0, header_timeout: float = 10.0, body_timeout: float = 30.0,
          max_image_pixels: int = 25_000_000, **mqtt: object) -> None:
    """Serve a bundle or a model repository over the KServe V2 / Open Inference Protocol.

    PATH is one .edgepack bundle, or a repository REPO/<model>/<version>.edgepack (or
    REPO/<model>/<version>/<any>.edgepack). New versions copied in are loaded, verified and
    swapped in without downtime; a bad one is refused and the current one keeps serving.
    With --mqtt-broker (or --mqtt-config) the same models also answer MQTT messages
    (docs/mqtt.md): one repository, one hot swap, one /metrics.
    """
    default, per_model = _policies(versions)
    options = dict(host=host, port=port, engine_threads=threads, engine_spin_wait=spin_wait,
                   engine=engine, max_body_bytes=byte_size(max_body), max_connections=max_connections,
                   poll_interval=poll, smoke_test=not no_smoke_test, trusted_key=trusted_key,
                   default_policy=default, model_policies=per_model,
                   header_timeout=header_timeout, body_timeout=body_timeout,
                   max_image_pixels=max_image_pixels)
    if workers is not None:
        options["workers"] = workers
    # A ServeError (bad path, port in use) reaches the CLI's one error mapping: exit 8.
    config = ServeConfig(**options)
    if not quiet:
        logging.getLogger("edgepack.runtime.serve").setLevel(logging.INFO)
    from edgepack.cli.oci_cmd import follow_tags   # registry client only when --pull is used
    followers = follow_tags(path, pull, pull_poll, trusted_key)   # daemon threads
    server = ModelServer(path, config).serve_in_background()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    bridge = None
    try:
        bridge = start_serve_bridge(server, mqtt)
        for model, loaded in sorted(server.manager.snapshot().items()):
            names = ", ".join(sorted(loaded, key=version_key)) or "none loaded"
            click.echo(f"  {model}: {names}")
        click.echo(f"serving {path} at {server.url}/v2 (metrics at /metrics; Ctrl-C stops)")
        if bridge is not None:
            click.echo(f"answering MQTT at {bridge.config.broker.host}:"
                       f"{bridge.config.broker.port} on "
                       f"{', '.join(s.topic for s in bridge.config.subscriptions)}")
        while not stop.wait(0.5):
            pass
    finally:
        click.echo("stopping: finishing requests in flight")
        for follower in followers:
            follower.stop()
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def register(cli: click.Group) -> None:
    """Add `serve` to the edgepack command group."""
    cli.add_command(serve)
