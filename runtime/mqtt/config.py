"""Typed, frozen configuration of the MQTT bridge: broker, subscriptions, topics, limits.

Built from command-line options (`BrokerConfig.from_url`) or a TOML/JSON file
(`load_config`), validated here so a typo fails before any connection is made.
"""
from __future__ import annotations

import hashlib
import json
import socket
import urllib.parse
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, Mapping

from .errors import MqttError
from .topics import TopicMap

Policy = Literal["auto", "drop-oldest", "block"]
POLICIES = ("auto", "drop-oldest", "block")
CODECS = ("auto", "image", "npy", "json", "pcm", "base64")
PROTOCOLS = ("3.1.1", "5")


@dataclass(frozen=True)
class TlsConfig:
    """TLS towards the broker: CA to trust (None: the system's), optional client cert/key."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False      # skip the host name check (self-signed lab brokers only)

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(self, name)
            if value is not None and not Path(value).is_file():
                raise MqttError(f"TLS {name.replace('_', ' ')} {value} does not exist")
        if (self.cert_file is None) != (self.key_file is None):
            raise MqttError("a TLS client certificate needs both --cert and --key")


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to connect. `session_expiry` (MQTT 5, seconds) keeps the broker-side
    session, so QoS 1 messages that arrive while the bridge is away are delivered later."""

    host: str = "127.0.0.1"
    port: int = 1883
    tls: TlsConfig | None = None
    username: str | None = None
    password: str | None = None
    client_id: str | None = None    # None: derived from the host name and the subscriptions
    keepalive: int = 30
    protocol: str = "5"
    session_expiry: int = 3600
    reconnect_min: float = 0.5
    reconnect_max: float = 30.0
    connect_timeout: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.port <= 65535:
            raise MqttError(f"broker port {self.port} is out of range 1..65535")
        if self.protocol not in PROTOCOLS:
            raise MqttError(f"MQTT protocol {self.protocol!r} is not supported: use 3.1.1 or 5")
        if self.keepalive < 5:
            raise MqttError(f"keep-alive {self.keepalive} s is too short: use at least 5")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise MqttError("reconnect delays must satisfy 0 < min <= max")
        if self.password is not None and self.username is None:
            raise MqttError("a broker password needs a user name (--username)")

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> "BrokerConfig":
        """Parse ``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` turns TLS on, port
        8883 by default). Keyword overrides win over what the URL says."""
        parsed = urllib.parse.urlsplit(url if "://" in url else f"mqtt://{url}")
        if parsed.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise MqttError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
        if not parsed.hostname:
            raise MqttError(f"broker URL {url!r} names no host, e.g. mqtt://127.0.0.1:1883")
        secure = parsed.scheme in ("mqtts", "ssl")
        try:
            port = parsed.port or (8883 if secure else 1883)
        except ValueError:
            raise MqttError(f"broker URL {url!r}: the port is not a number") from None
        values: dict[str, Any] = {"host": parsed.hostname, "port": port}
        if parsed.username:
            values["username"] = urllib.parse.unquote(parsed.username)
        if parsed.password:
            values["password"] = urllib.parse.unquote(parsed.password)
        if secure:
            values["tls"] = TlsConfig()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


@dataclass(frozen=True)
class Subscription:
    """One input topic filter and how its messages are handled.

    `policy` ``auto`` means ``block`` for QoS 1 (nothing acknowledged is lost: the broker
    holds what does not fit) and ``drop-oldest`` for QoS 0 (a slow model answers the newest
    camera frame, not a backlog). `result_qos` None answers at the input's QoS.
    """

    topic: str
    publish: str
    model: str | None = None
    qos: int = 1
    codec: str = "auto"
    policy: Policy = "auto"
    queue_size: int = 32
    result_qos: int | None = None

    def __post_init__(self) -> None:
        TopicMap(self.topic, self.publish)       # validates both
        if self.qos not in (0, 1):
            raise MqttError(f"subscription {self.topic!r}: QoS {self.qos} is not supported "
                            "(use 0 or 1)")
        if self.result_qos not in (None, 0, 1):
            raise MqttError(f"subscription {self.topic!r}: result QoS must be 0 or 1")
        if self.codec not in CODECS:
            raise MqttError(f"subscription {self.topic!r}: unknown codec {self.codec!r}; "
                            f"known: {', '.join(CODECS)}")
        if self.policy not in POLICIES:
            raise MqttError(f"subscription {self.topic!r}: unknown queue policy "
                            f"{self.policy!r}; known: {', '.join(POLICIES)}")
        if not 1 <= self.queue_size <= 100_000:
            raise MqttError(f"subscription {self.topic!r}: queue size must be 1..100000")

    @property
    def topic_map(self) -> TopicMap:
        return TopicMap(self.topic, self.publish)

    @property
    def effective_policy(self) -> str:
        if self.policy != "auto":
            return self.policy
        return "block" if self.qos > 0 else "drop-oldest"

    @property
    def effective_result_qos(self) -> int:
        return self.qos if self.result_qos is None else self.result_qos


@dataclass(frozen=True)
class BridgeConfig:
    """Everything the bridge is told. Status and error topics default to
    ``edgepack/<client id>/status`` and ``.../errors``."""

    broker: BrokerConfig
    subscriptions: tuple[Subscription, ...]
    status_topic: str | None = None
    error_topic: str | None = None
    max_payload_bytes: int = 16 * 1024 * 1024
    base64_field: str = "data"
    homeassistant: bool = False
    discovery_prefix: str = "homeassistant"
    drain_timeout: float = 10.0
    #: paho's network thread runs the connection, beside one worker per subscription.
    #: False, with one subscription: one thread drives paho's network loop between answers
    #: (see bridge.py); it never hands the GIL to another thread, but gets one thread's
    #: share of a busy host and cannot overlap network work with an inference.
    network_thread: bool = True
    #: Diagnostic mode: per-step CPU and wall timers in every bridge thread (phases.py),
    #: reported under "phases" in `MqttBridge.stats()`.
    phases: bool = False
    #: Python's GIL switch interval while the bridge runs (ms; None: leave it as it is,
    #: 5 ms by default). A worker that released the GIL (JPEG decode, inference, a socket
    #: write) waits for it until the network thread, busy framing and dropping a burst
    #: of frames, gives it up at its next system call, or is made to after this interval.
    #: Process-wide: set at start(), put back at stop().
    switch_interval_ms: float | None = None

    def __post_init__(self) -> None:
        if not self.subscriptions:
            raise MqttError("give at least one subscription (--subscribe TOPIC --publish TOPIC)")
        filters = [s.topic for s in self.subscriptions]
        if len(set(filters)) != len(filters):
            raise MqttError("the same topic filter is subscribed twice")
        if self.max_payload_bytes < 1:
            raise MqttError("the payload limit must be at least 1 byte")
        if self.switch_interval_ms is not None and not 0 < self.switch_interval_ms <= 1000:
            raise MqttError(f"switch_interval_ms {self.switch_interval_ms} is out of range: "
                            "give 0 < ms <= 1000 (Python's default is 5)")
        if self.broker.client_id is None:
            object.__setattr__(self, "broker", replace(self.broker,
                                                       client_id=default_client_id(filters)))
        prefix = f"edgepack/{self.broker.client_id}"
        if self.status_topic is None:
            object.__setattr__(self, "status_topic", f"{prefix}/status")
        if self.error_topic is None:
            object.__setattr__(self, "error_topic", f"{prefix}/errors")
        for name in ("status_topic", "error_topic"):
            value = getattr(self, name)
            if not value or "+" in value or "#" in value:
                raise MqttError(f"{name.replace('_', ' ')} {value!r} must be a plain topic")

    @property
    def client_id(self) -> str:
        return self.broker.client_id or ""


def default_client_id(filters: list[str]) -> str:
    """Stable across restarts (the broker keeps the session) and distinct per configuration
    on one host (two bridges with one id would keep kicking each other off)."""
    digest = hashlib.sha1("\n".join(sorted(filters)).encode()).hexdigest()[:8]
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"edgepack-{host[:32]}-{digest}"


def load_config(path: str | Path, **broker_overrides: Any) -> BridgeConfig:
    """Read a bridge configuration from TOML (``.toml``) or JSON::

        [broker]
        url = "mqtt://127.0.0.1:1883"      # or host/port; username, password, client_id,
        protocol = "5"                      # keepalive, ca_file, cert_file, key_file
        [[subscribe]]
        topic = "cameras/+/frame"
        publish = "cameras/{1}/detections"
        qos = 0                             # codec, policy, queue_size, model, result_qos
        [bridge]
        homeassistant = true                # status_topic, error_topic, max_payload_bytes,
                                            # network_thread, phases,
                                            # switch_interval_ms
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MqttError(f"cannot read MQTT config {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".toml":
            import tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except ValueError as exc:
        raise MqttError(f"MQTT config {path} is not valid {path.suffix.lstrip('.') or 'JSON'}: "
                        f"{exc}") from None
    return config_from_mapping(data, str(path), **broker_overrides)


def config_from_mapping(data: Mapping[str, Any], where: str = "config",
                        **broker_overrides: Any) -> BridgeConfig:
    """Build a `BridgeConfig` from plain data (see `load_config` for the keys)."""
    if not isinstance(data, Mapping):
        raise MqttError(f"{where}: the top level must be a table/object")
    unknown = set(data) - {"broker", "subscribe", "bridge"}
    if unknown:
        raise MqttError(f"{where}: unknown section(s) {sorted(unknown)}; "
                        "use broker, subscribe, bridge")
    broker = dict(data.get("broker") or {})
    tls_keys = {"ca_file", "cert_file", "key_file", "insecure"}
    tls = {k: broker.pop(k) for k in list(broker) if k in tls_keys}
    url = broker.pop("url", None)
    try:
        if tls:
            broker["tls"] = TlsConfig(**tls)
        broker.update({k: v for k, v in broker_overrides.items() if v is not None})
        broker_config = BrokerConfig.from_url(url, **broker) if url else BrokerConfig(**broker)
        subscriptions = tuple(Subscription(**dict(s)) for s in data.get("subscribe") or ())
        return BridgeConfig(broker_config, subscriptions, **dict(data.get("bridge") or {}))
    except TypeError as exc:    # an unknown or missing key in one of the tables
        raise MqttError(f"{where}: {exc}") from None
