"""The paho-mqtt client of the bridge: options, TLS, last will, connect, and reconnecting
with exponential backoff and jitter.

paho's own reconnect loop waits without jitter (a fleet of boards behind one broker that
restarts would all come back in the same instant), so it is switched off
(``reconnect_on_failure=False``): when the network thread ends after a connection loss, a
supervisor thread waits ``base/2 + U(0, base/2)`` with ``base = min(max, min * 2**attempt)``,
reconnects and starts the network thread again. Subscriptions are renewed in `on_connect`.
"""
from __future__ import annotations

import logging
import random
import socket
import ssl
import struct
import threading
from typing import Any, Callable

from .config import BrokerConfig
from .errors import MqttError, require_paho
from .lean import client_class, mqtt_varint

log = logging.getLogger(__name__)


def backoff_delay(attempt: int, minimum: float, maximum: float,
                  rng: random.Random = random.Random()) -> float:
    """Seconds to wait before reconnect attempt `attempt` (0-based): exponential, capped,
    with 'equal jitter' so it is never shorter than half the exponential step."""
    base = min(maximum, minimum * (2 ** min(attempt, 30)))
    return base / 2 + rng.uniform(0, base / 2)


def make_client(broker: BrokerConfig, will_topic: str, will_payload: bytes,
                receive_maximum: int) -> Any:
    """A configured paho `Client` (not connected): manual acks, persistent session; with
    the cheaper receive path of `lean.client_class` where the paho version allows it."""
    mqtt = require_paho()
    from paho.mqtt.enums import CallbackAPIVersion
    v5 = broker.protocol == "5"
    client = client_class()(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=broker.client_id or "",
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        # A persistent session: QoS 1 messages not yet acknowledged, and those that arrive
        # while the bridge is away, are delivered again after a reconnect.
        clean_session=None if v5 else False,
        reconnect_on_failure=False,
        manual_ack=True)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls is not None:
        try:
            client.tls_set(ca_certs=broker.tls.ca_file, certfile=broker.tls.cert_file,
                           keyfile=broker.tls.key_file, cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise MqttError(f"cannot use the TLS files: {exc}") from None
        if broker.tls.insecure:
            client.tls_insecure_set(True)
    client.will_set(will_topic, will_payload, qos=1, retain=True)
    client.max_inflight_messages_set(max(20, receive_maximum))
    client.max_queued_messages_set(0)    # results wait in paho while disconnected
    client.enable_logger(logging.getLogger("edgepack.runtime.mqtt.paho"))
    client.on_socket_open = _no_delay
    return client


def _no_delay(_client: Any, _userdata: Any, sock: Any) -> None:
    """PUBACKs and results are small writes: with Nagle's algorithm on, each one waits for
    the broker's (delayed, up to 40 ms) ACK of the previous one, which caps a QoS 1 stream
    at a few hundred messages/s whatever the model's speed. paho leaves the option off."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):   # not a TCP socket (a test's socketpair, a proxy)
        pass


def connect_properties(broker: BrokerConfig, receive_maximum: int) -> Any:
    """MQTT 5 CONNECT properties: session expiry, and the Receive Maximum the bridge asks
    for (half its smallest QoS 1 queue, see MqttBridge) so the broker keeps fewer
    unacknowledged messages out than fit."""
    if broker.protocol != "5":
        return None
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = broker.session_expiry
    props.ReceiveMaximum = max(1, min(receive_maximum, 65535))
    return props


def result_properties(content_type: str = "application/json") -> Callable[[bytes | None], Any]:
    """A function giving the MQTT 5 PUBLISH properties of one result: `content_type`, plus
    the input's correlation data when it has some.

    paho builds a `Properties` object from scratch in Python (two 27-entry tables per
    instance) and packs it again on every publish: about 45 us per result on an otherwise
    idle Xeon (140 us under load), a tenth of a 0.4 ms model's budget. The objects made here
    carry their wire form, packed once (the same bytes paho's `pack()` writes: properties in
    paho's order, Content Type 0x03 before Correlation Data 0x09).
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    class PackedProperties(Properties):
        """Read-only PUBLISH properties whose wire form is computed once."""

        def __init__(self, packed: bytes, text: str):   # no Properties.__init__: the cost
            object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
            object.__setattr__(self, "_packed", packed)
            object.__setattr__(self, "_text", text)

        def pack(self) -> bytes:
            return self._packed

        def __str__(self) -> str:
            return self._text

        __repr__ = __str__

    encoded = content_type.encode("utf-8")
    content = b"\x03" + struct.pack("!H", len(encoded)) + encoded
    plain = PackedProperties(mqtt_varint(len(content)) + content,
                             f"[ContentType : {content_type}]")

    def properties(correlation: bytes | None) -> Any:
        if correlation is None:
            return plain
        data = bytes(correlation)[:65535]
        body = content + b"\x09" + struct.pack("!H", len(data)) + data
        return PackedProperties(mqtt_varint(len(body)) + body,
                                f"[ContentType : {content_type}, CorrelationData : {data!r}]")
    return properties


class Connection:
    """Connects, reports CONNACK outcomes, and keeps reconnecting until `close()`.

    `threaded`: paho's network thread runs the connection (``loop_start``). Otherwise the
    caller drives paho's loop itself (`loop_read`/`loop_write`/`loop_misc`, see
    `MqttBridge`); it does so holding `lock`, which connecting and reconnecting hold too, so
    the socket is never replaced under a read."""

    def __init__(self, client: Any, broker: BrokerConfig, receive_maximum: int,
                 on_reconnect: Callable[[], None] = lambda: None, threaded: bool = True,
                 lock: Any = None):
        self.client = client
        self.threaded = threaded
        self.lock = lock if lock is not None else threading.Lock()
        self.broker = broker
        self.receive_maximum = receive_maximum
        self.on_reconnect = on_reconnect
        self.connected = threading.Event()
        self._lost = threading.Event()
        self._connack = threading.Event()
        self._connack_error: str | None = None
        self._stop = threading.Event()
        self._supervisor: threading.Thread | None = None
        self.reconnects = 0

    # --- called from the bridge's paho callbacks -----------------------------------------
    def connack(self, failure: str | None) -> None:
        self._connack_error = failure
        if failure is None:
            self.connected.set()
        self._connack.set()

    def lost(self) -> None:
        self.connected.clear()
        self._lost.set()

    # --- connecting ----------------------------------------------------------------------
    def _attempt(self, first: bool) -> None:
        """One connection attempt, waited for until CONNACK; raises MqttError on failure."""
        broker = self.broker
        where = f"{broker.host}:{broker.port}"
        self._connack.clear()
        self._connack_error = None
        self._lost.clear()
        props = connect_properties(broker, self.receive_maximum)
        try:
            with self.lock:
                if first:
                    kwargs = ({"clean_start": False, "properties": props}
                              if props is not None else {})
                    self.client.connect(broker.host, broker.port, broker.keepalive, **kwargs)
                else:
                    self.client.reconnect()
        except ssl.SSLError as exc:
            raise MqttError(f"TLS handshake with {where} failed: {exc.reason or exc}; check "
                            "the CA file (--ca-file) and the broker's certificate") from None
        except (OSError, ValueError) as exc:
            raise MqttError(f"cannot connect to the MQTT broker at {where}: "
                            f"{getattr(exc, 'strerror', None) or exc}; is it running?") from None
        if self.threaded:
            self.client.loop_start()
        if not self._connack.wait(broker.connect_timeout):
            self._stop_loop()
            raise MqttError(f"the broker at {where} did not answer the connection within "
                            f"{broker.connect_timeout:g} s")
        if self._connack_error is not None:
            self._stop_loop()
            raise MqttError(f"the broker at {where} refused the connection: "
                            f"{self._connack_error}; check --username/--password and the "
                            "broker's ACL")

    def _stop_loop(self) -> None:
        if self.threaded:
            self.client.loop_stop()
        else:       # the caller must not read this socket any more: close it
            with self.lock:
                close = getattr(self.client, "_sock_close", None)
                if close is not None:
                    close()

    def open(self) -> None:
        """First connection (raises MqttError), then supervise in a daemon thread."""
        self._attempt(first=True)
        self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                            name="edgepack-mqtt-reconnect")
        self._supervisor.start()

    def _supervise(self) -> None:
        while not self._stop.is_set():
            if not self._lost.wait(0.25) or self._stop.is_set():
                continue
            if self.threaded:
                self.client.loop_stop()    # the network thread has ended; join it
            attempt = 0
            while not self._stop.is_set():
                delay = backoff_delay(attempt, self.broker.reconnect_min,
                                      self.broker.reconnect_max)
                log.warning("connection to the MQTT broker lost; reconnecting in %.2f s "
                            "(attempt %d)", delay, attempt + 1)
                if self._stop.wait(delay):
                    return
                try:
                    self._attempt(first=False)
                except MqttError as exc:
                    log.warning("%s", exc)
                    attempt += 1
                    continue
                except Exception:   # a paho bug must not end reconnecting
                    log.exception("reconnecting failed unexpectedly")
                    attempt += 1
                    continue
                self.reconnects += 1
                log.warning("reconnected to the MQTT broker at %s:%d", self.broker.host,
                            self.broker.port)
                self.on_reconnect()
                break

    def close(self, before_disconnect: Callable[[], None] = lambda: None) -> None:
        """Stop reconnecting, run `before_disconnect` (final status), disconnect."""
        self._stop.set()
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None
        if not self.threaded and self.connected.is_set():
            # The caller has stopped driving the loop: paho's thread sees the final status
            # out and the disconnect through.
            self.client.loop_start()
        if self.connected.is_set():
            try:
                before_disconnect()
            except Exception:  # shutting down: report, do not raise
                log.exception("publishing the final status failed")
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self.connected.clear()
