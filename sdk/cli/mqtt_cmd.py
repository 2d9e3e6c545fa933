"""`edgepack mqtt`: bridge a bundle or a model repository to an MQTT broker.

The option set is shared with `edgepack serve --mqtt-...` (`serve_mqtt_options`,
`start_serve_bridge`), so one process can serve HTTP and MQTT from one repository.
"""
from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import Any, Callable

import click

from edgepack.runtime.mqtt.config import (CODECS, POLICIES, BridgeConfig, BrokerConfig,
                                          Subscription, TlsConfig, load_config)
from edgepack.runtime.mqtt.errors import MqttError

from .values import byte_size



def _options(prefix: str) -> list[Callable]:
    """The bridge's click options; `prefix` is "" for `edgepack mqtt`, "mqtt-" for serve."""
    p = prefix
    required = not p
    return [
        click.option(f"--{p}broker", "broker", metavar="URL", required=False,
                     help="mqtt://[user[:password]@]host[:port] (mqtts:// for TLS)."
                          + (" Required unless --config." if required else
                             " Turns the MQTT bridge on.")),
        click.option(f"--{p}subscribe", "subscribe", multiple=True, metavar="FILTER",
                     help="Topic filter to answer, e.g. 'cameras/+/frame'. Repeatable."),
        click.option(f"--{p}publish", "publish", multiple=True, metavar="TEMPLATE",
                     help="Result topic per --subscribe (in order), e.g. "
                          "'cameras/{1}/detections' ({N}: the N-th wildcard's level)."),
        click.option(f"--{p}config" if p else "--config", "mqtt_config",
                     type=click.Path(exists=True, dir_okay=False),
                     help="Bridge configuration file (TOML or JSON; see docs/mqtt.md)."),
        click.option(f"--{p}model", "mqtt_model", metavar="NAME",
                     help="Model of the repository the subscriptions use [its only model]."),
        click.option(f"--{p}qos", "qos", type=click.IntRange(0, 1), default=1, show_default=True,
                     help="QoS of the subscriptions (results go out at the same QoS)."),
        click.option(f"--{p}codec", "codec", type=click.Choice(CODECS), default="auto",
                     show_default=True,
                     help="Payload format; auto: the MQTT 5 content type, else sniffed."),
        click.option(f"--{p}policy", "policy", type=click.Choice(POLICIES), default="auto",
                     show_default=True,
                     help="Full queue: drop-oldest (QoS 0 default) or block (QoS 1 default)."),
        click.option(f"--{p}queue-size", "queue_size", type=click.IntRange(1, 100_000),
                     default=32, show_default=True, help="Messages waiting per subscription."),
        click.option(f"--{p}username", "username", help="Broker user name."),
        click.option(f"--{p}password", "password", envvar="EDGEPACK_MQTT_PASSWORD",
                     help="Broker password [env EDGEPACK_MQTT_PASSWORD]."),
        click.option(f"--{p}ca-file", "ca_file", type=click.Path(exists=True, dir_okay=False),
                     help="CA certificate(s) to trust; turns TLS on."),
        click.option(f"--{p}cert", "cert_file", type=click.Path(exists=True, dir_okay=False),
                     help="TLS client certificate (with --key)."),
        click.option(f"--{p}key", "key_file", type=click.Path(exists=True, dir_okay=False),
                     help="TLS client private key."),
        click.option(f"--{p}client-id", "client_id",
                     help="MQTT client id [edgepack-<host>-<hash of the subscriptions>]."),
        click.option(f"--{p}keepalive", "keepalive", type=click.IntRange(5, 65535), default=30,
                     show_default=True, help="Keep-alive seconds."),
        click.option(f"--{p}protocol", "protocol", type=click.Choice(["5", "3.1.1"]),
                     default="5", show_default=True, help="MQTT protocol version."),
        click.option(f"--{p}status-topic", "status_topic",
                     help="Retained online/offline status [edgepack/<client id>/status]."),
        click.option(f"--{p}error-topic", "error_topic",
                     help="Where malformed messages are reported [edgepack/<client id>/errors]."),
        click.option(f"--{p}max-payload", "max_payload", default="16M", show_default=True,
                     help="Largest payload accepted (larger ones go to the error topic)."),
        click.option(f"--{p}homeassistant", "homeassistant", is_flag=True,
                     help="Publish Home Assistant MQTT discovery configs (retained)."),
    ]


def _apply(options: list[Callable], func: Callable) -> Callable:
    for option in reversed(options):
        func = option(func)
    return func


def serve_mqtt_options(func: Callable) -> Callable:
    """The `--mqtt-*` options of `edgepack serve`."""
    return _apply(_options("mqtt-"), func)


def bridge_config(broker: str | None, subscribe: tuple[str, ...], publish: tuple[str, ...],
                  mqtt_config: str | None, mqtt_model: str | None, qos: int, codec: str,
                  policy: str, queue_size: int, username: str | None, password: str | None,
                  ca_file: str | None, cert_file: str | None, key_file: str | None,
                  client_id: str | None, keepalive: int, protocol: str,
                  status_topic: str | None, error_topic: str | None, max_payload: str,
                  homeassistant: bool, flag: str = "--") -> BridgeConfig:
    """A `BridgeConfig` from the command-line options (a --config file, overridden by any
    broker option also given). Raises `MqttError` naming the option to fix."""
    tls = TlsConfig(ca_file=ca_file, cert_file=cert_file, key_file=key_file) \
        if (ca_file or cert_file) else None
    overrides = dict(username=username, password=password, tls=tls, client_id=client_id)
    if mqtt_config:
        if subscribe or publish:
            raise MqttError(f"give subscriptions either in {mqtt_config} or with "
                            f"{flag}subscribe/{flag}publish, not both")
        if broker:
            url = BrokerConfig.from_url(broker)
            overrides.update(host=url.host, port=url.port)
        return load_config(mqtt_config, **overrides)
    if not broker:
        raise MqttError(f"give the broker: {flag}broker mqtt://HOST:1883 (or {flag}config FILE)")
    if not subscribe:
        raise MqttError(f"give at least one {flag}subscribe TOPIC with its {flag}publish TOPIC")
    if len(subscribe) != len(publish):
        raise MqttError(f"{len(subscribe)} {flag}subscribe but {len(publish)} {flag}publish: "
                        "give one result topic per subscription, in the same order")
    broker_config = BrokerConfig.from_url(broker, keepalive=keepalive, protocol=protocol,
                                          **overrides)
    subs = tuple(Subscription(topic, out, model=mqtt_model, qos=qos, codec=codec,
                              policy=policy, queue_size=queue_size)
                 for topic, out in zip(subscribe, publish))
    try:
        limit = byte_size(max_payload)
    except click.BadParameter as exc:
        raise MqttError(f"{flag}max-payload: {exc.message}") from None
    return BridgeConfig(broker_config, subs, status_topic=status_topic, error_topic=error_topic,
                        max_payload_bytes=limit, homeassistant=homeassistant)


def start_serve_bridge(server: Any, options: dict[str, Any]) -> Any:
    """Start the bridge of `edgepack serve` on the server's own model manager and metrics
    (so hot swaps and /metrics cover MQTT), or return None when no --mqtt-* option is set."""
    if not options.get("broker") and not options.get("mqtt_config"):
        if options.get("subscribe") or options.get("publish"):
            raise MqttError("--mqtt-subscribe needs --mqtt-broker (or --mqtt-config)")
        return None
    from edgepack.runtime.mqtt import MqttBridge
    config = bridge_config(flag="--mqtt-", **options)
    logging.getLogger("edgepack.runtime.mqtt").setLevel(
        logging.getLogger("edgepack.runtime.serve").level or logging.INFO)
    return MqttBridge(config, server.manager, server.metrics).start()


def _describe(config: BridgeConfig) -> list[str]:
    b = config.broker
    lines = [f"broker {'mqtts' if b.tls else 'mqtt'}://{b.host}:{b.port} as {b.client_id} "
             f"(MQTT {b.protocol})"]
    for s in config.subscriptions:
        lines.append(f"  {s.topic} -> {s.publish} (QoS {s.qos}, {s.effective_policy}, "
                     f"queue {s.queue_size})")
    lines.append(f"  status {config.status_topic}, errors {config.error_topic}")
    return lines


@click.command("mqtt")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--engine", help="Force an engine (e.g. onnxruntime, litert).")
@click.option("--threads", type=click.IntRange(1, 1024), help="Engine intra-op threads.")
@click.option("--poll", default=2.0, show_default=True, type=click.FloatRange(0),
              help="Seconds between repository scans; 0 disables hot updates.")
@click.option("--trusted-key", type=click.Path(exists=True, dir_okay=False),
              help="Public key: refuse versions without a valid signature.")
@click.option("--json", "as_json", is_flag=True, help="Print the final counters as JSON.")
@click.option("--quiet", is_flag=True, help="Log warnings and errors only.")
@lambda f: _apply(_options(""), f)
def mqtt(path: Path, engine: str | None, threads: int | None, poll: float,
         trusted_key: str | None, as_json: bool, quiet: bool, **options: Any) -> None:
    """Answer MQTT messages with a bundle's predictions.

    PATH is one .edgepack bundle or a model repository (as for `edgepack serve`); new
    versions copied in are swapped in without a restart. Each message on a --subscribe
    filter (JPEG/PNG, .npy, JSON tensors, PCM, base64 in JSON) is answered with a JSON
    result on the matching --publish topic; malformed ones go to the error topic.

        edgepack mqtt conv.edgepack --broker mqtt://127.0.0.1:1883 \\
            --subscribe 'cameras/+/frame' --publish 'cameras/{1}/detections'
    """
    from edgepack.runtime.mqtt import MqttBridge
    from edgepack.runtime.serve import ServeConfig
    from edgepack.runtime.serve.manager import ModelManager
    from edgepack.runtime.serve.metrics import Metrics

    config = bridge_config(**options)
    level = logging.WARNING if quiet else logging.INFO
    for name in ("edgepack.runtime.mqtt", "edgepack.runtime.serve"):
        logging.getLogger(name).setLevel(level)
    serve_options: dict[str, Any] = dict(poll_interval=poll, engine=engine,
                                         engine_threads=threads, trusted_key=trusted_key,
                                         workers=max(1, len(config.subscriptions)))
    metrics = Metrics()
    manager = ModelManager(path, ServeConfig(**serve_options), metrics)
    manager.sync(settle=False)
    if not any(manager.snapshot().values()):
        manager.close()
        raise MqttError(f"no model version could be loaded from {path}; see the log above")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGINT, signal.SIGTERM)}
    bridge = None
    try:
        manager.start_watching()
        bridge = MqttBridge(config, manager, metrics).start()
        if not as_json:
            for line in _describe(config):
                click.echo(line)
            served = ", ".join(f"{n} {v}" for n, v in bridge.models.describe())
            click.echo(f"bridging {served} (Ctrl-C stops)")
        while not stop.wait(0.5):
            pass
    finally:
        if bridge is not None:
            bridge.stop()
        manager.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = bridge.stats() if bridge is not None else {}
    if as_json:
        click.echo(json.dumps(stats, indent=2))
    else:
        for sub in stats.get("subscriptions", []):
            click.echo(f"{sub['topic']}: {sub['received']} received, {sub['answered']} "
                       f"answered, {sub['errors']} errors, {sub['dropped']} dropped")


def register(cli: click.Group) -> None:
    """Add `mqtt` to the edgepack command group."""
    cli.add_command(mqtt)
