"""The MQTT bridge: subscribe, queue, predict on worker threads, publish, acknowledge.

Threads, with several subscriptions: paho's network thread runs the callbacks and only ever
queues the raw message (never decodes or runs a model: a frame dropped by a full
drop-oldest queue costs paho's parsing and a deque append, nothing more); one worker per
subscription decodes, leases a model, predicts and publishes in arrival order.

With one subscription and ``network_thread=False`` there is one thread: it drives paho's
network loop itself (`_pump`: read everything that has arrived, write, keep-alive) between
two answers, with no paho thread. Two Python threads hand the GIL over every time either
one comes back from a system call, an image decode or an inference, and each hand-over
wakes a sleeping thread; one thread never waits for that, but it gets one thread's share of
a busy host and cannot receive while a model runs. Measured on the tiny benchmark model
on a loaded 2-core host, the two threads answered more (QoS 0 ratio 0.47-0.76 against
0.25-0.29 in one thread, docs/mqtt.md), so they stay the default. The `block` policy keeps
its meaning in one thread: with the queue full, the oldest message is answered before the
new one is queued (in the network callback), so reading pauses meanwhile. The PUBACK of each QoS 1 input goes out
only once its result (or error message) has itself been delivered to the broker, in
arrival order (`acks.AckBook`): sent by whichever of the worker and the network thread
completes it, so no thread is woken per message just to acknowledge.
A message received on a connection that has since dropped is not acknowledged on the new
one: the broker redelivers it (persistent session), so nothing is lost, and at most the
messages in flight at the moment of a drop are answered twice (results carry the input's
message id, ``dup`` flag and correlation data for de-duplication).
"""
from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import Any, Callable

from .acks import AckBook
from .answering import Answering
from .config import BridgeConfig
from .connection import Connection, make_client, result_properties
from .discovery import discovery_config, discovery_topic
from .errors import MqttError
from .lanes import Lane
from .models import ModelSource, RepositoryModels, SingleModel, check_models
from .phases import PhaseBook
from .receiving import Receiving
from .results import encode
from .streams import StreamCache

log = logging.getLogger(__name__)
#: How long start() waits for the broker to acknowledge the subscriptions.
SUBSCRIBE_TIMEOUT_S = 10.0


class MqttBridge(Receiving, Answering):
    """Serve models to MQTT subscribers. `models` is a loaded `Model`, a serve
    `ModelManager`, or any `ModelSource`; `metrics` a serve `Metrics` registry (shared
    with HTTP when run inside `edgepack serve`)."""

    def __init__(self, config: BridgeConfig, models: Any, metrics: Any | None = None):
        self.config = config
        self.models: ModelSource = _as_source(models)
        if metrics is None:
            from ..serve.metrics import Metrics
            metrics = Metrics()
        self.metrics = metrics
        self.lanes = [Lane(s) for s in config.subscriptions]
        # One subscription without a network thread: its worker runs the network loop too.
        self.inline = len(self.lanes) == 1 and not config.network_thread
        self._net_lock = threading.Lock()
        self._pumping = False
        self._stop = threading.Event()
        self._generation = 0
        # Set once the broker acknowledged this connection's subscriptions: start() returns
        # only then, or a message published right after start() could find no subscriber.
        self._subscribed = threading.Event()
        self._subscribe_mid: int | None = None
        self._session_present = False
        self._acks = AckBook(self._send_ack)
        # Notified whenever a counter moves: wait_until() waits on it (tests, apps).
        self._progress = threading.Condition()
        self._waiters = 0
        self._lane_of: dict[str, Lane | None] = {}
        self._raw_topics: dict[bytes, tuple[str | None, Lane | None]] = {}
        self._status_lock = threading.Lock()
        self._announced: dict[str, str] = {}
        self._discovered: set[str] = set()
        self._threads: list[threading.Thread] = []
        # MQTT 5 Receive Maximum: half the smallest QoS 1 queue. Mosquitto 2.0.11 does not
        # hold to it once acks flow (measured: with 5, each PUBACK let up to 5 more out, 17
        # unacknowledged after 3 acks), so a window of the whole queue kept it full and the
        # network thread blocked in put(), its reads and writes stalled: half the queue gave
        # 1.3-1.8x the QoS 1 messages/s (3 interleaved pairs on a loaded 2-core host). The
        # queue's `block` policy is what bounds memory either way.
        qos1 = [s.queue_size for s in config.subscriptions if s.qos > 0]
        self._receive_maximum = max(1, min(qos1) // 2) if qos1 else 20
        self._client: Any = None
        self._lean_publish: Callable[[str, bytes, Any], bool] | None = None
        self._result_properties: Callable[[bytes | None], Any] | None = None
        self._streams = StreamCache()
        self._connection: Connection | None = None
        self.started = False
        self._reconnects = 0
        # Diagnostic mode: per-step timers in every thread (phases.py); None: no timing.
        self._phases: PhaseBook | None = PhaseBook() if config.phases else None
        self._switch_interval: float | None = None     # Python's, to put back at stop()

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> "MqttBridge":
        """Connect (raises `MqttError` with the broker's reason), subscribe, start workers."""
        check_models(self.models, [s.model for s in self.config.subscriptions])
        if self.config.switch_interval_ms is not None and self._switch_interval is None:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(self.config.switch_interval_ms / 1000.0)
        offline = encode({"state": "offline", "client_id": self.config.client_id})
        self._client = make_client(self.config.broker, self.config.status_topic, offline,
                                   self._receive_maximum)
        client = self._client
        self._lean_publish = getattr(client, "publish_qos0", None)
        if self.config.broker.protocol == "5":
            self._result_properties = result_properties("application/json")
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        if hasattr(client, "raw_publish"):     # lean.LeanClient: no MQTTMessage per message
            client.raw_publish = self._on_raw_publish
        client.on_subscribe = self._on_subscribe
        if any(lane.sub.qos > 0 for lane in self.lanes):
            # Only then: with on_publish set, paho builds a PUBACK Properties object for
            # every QoS 0 publish it writes (~20 us each).
            client.on_publish = self._on_publish
        self._connection = Connection(client, self.config.broker, self._receive_maximum,
                                      on_reconnect=self._count_reconnect,
                                      threaded=not self.inline, lock=self._net_lock)
        work = self._work_inline if self.inline else self._work
        for lane in self.lanes:
            lane.thread = threading.Thread(target=work, args=(lane,), daemon=True,
                                           name=f"edgepack-mqtt-{lane.sub.topic}")
            lane.thread.start()
        self._threads = [lane.thread for lane in self.lanes if lane.thread]
        try:
            self._connection.open()
            if not self._subscribed.wait(SUBSCRIBE_TIMEOUT_S):
                raise MqttError(
                    f"the broker at {self.config.broker.host}:{self.config.broker.port} did "
                    f"not acknowledge the subscriptions within {SUBSCRIBE_TIMEOUT_S:g} s")
        except MqttError:
            self._halt_threads()
            self._restore_switch_interval()
            raise
        self.started = True
        return self

    def stop(self) -> None:
        """Finish the message in hand, publish the offline status, disconnect. Messages
        still queued are not acknowledged: the broker delivers QoS 1 ones again later."""
        if self._connection is None:
            return
        self._stop.set()
        for lane in self.lanes:
            left = lane.queue.drain()
            if left:
                log.info("%d message(s) on %s not answered at shutdown", len(left),
                         lane.sub.topic)
        for thread in self._threads:
            thread.join(timeout=self.config.drain_timeout)

        def final_status() -> None:
            info = self._client.publish(self.config.status_topic, encode(
                {"state": "offline", "client_id": self.config.client_id}), qos=1, retain=True)
            info.wait_for_publish(timeout=min(10.0, self.config.drain_timeout))
        self._connection.close(final_status)
        self._streams.close()
        self._reconnects = self._connection.reconnects
        self._connection = None
        self.started = False
        self._restore_switch_interval()

    def _restore_switch_interval(self) -> None:
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None

    def _halt_threads(self) -> None:
        self._stop.set()
        for lane in self.lanes:
            lane.queue.drain()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> "MqttBridge":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """Counters per subscription, plus reconnects, QoS 1 acknowledgements sent and
        pending, and whether connected now."""
        conn = self._connection
        stats = {"connected": bool(conn and conn.connected.is_set()),
                 "reconnects": conn.reconnects if conn else self._reconnects,
                 "acknowledged": self._acks.sent, "ack_pending": len(self._acks),
                 "subscriptions": [lane.stats() for lane in self.lanes]}
        if self._phases is not None:
            stats["phases"] = self._phases.report()
        return stats

    def wait_until(self, predicate: Callable[[dict[str, Any]], bool],
                   timeout: float) -> dict[str, Any]:
        """Wait (at most `timeout` s) until `predicate(self.stats())` holds; returns the last
        stats either way. Woken by every counter change, not by polling."""
        deadline = time.monotonic() + timeout
        with self._progress:
            self._waiters += 1
            try:
                while True:
                    stats = self.stats()
                    left = deadline - time.monotonic()
                    if predicate(stats) or left <= 0:
                        return stats
                    self._progress.wait(left)
            finally:
                self._waiters -= 1

    def _moved(self) -> None:
        # Per message (dropped ones too): skip the lock while nobody waits. A waiter counts
        # itself under the lock before reading the stats, so no change is missed.
        if self._waiters:
            with self._progress:
                self._progress.notify_all()

    @property
    def connected(self) -> threading.Event:
        if self._connection is None:
            raise MqttError("the bridge is not started")
        return self._connection.connected

    # --- status and discovery ------------------------------------------------------------
    def _publish_status(self) -> None:
        with self._status_lock:
            served = self.models.describe()
            self._announced = dict(served)
            doc = {"state": "online", "client_id": self.config.client_id,
                   "models": [{"name": n, "version": v} for n, v in served],
                   "subscriptions": [{"topic": lane.sub.topic, "publish": lane.sub.publish,
                                      "qos": lane.sub.qos} for lane in self.lanes]}
            self._client.publish(self.config.status_topic, encode(doc), qos=1, retain=True)

    def _discover(self, lane: Lane, state_topic: str, name: str | None = None,
                  version: str | None = None) -> None:
        if name is None:
            served = dict(self.models.describe())
            name = lane.sub.model or next(iter(served), "model")
            version = served.get(name, "")
        self._discovered.add(state_topic)
        config = discovery_config(self.config.client_id, state_topic, self.config.status_topic,
                                  name, version or "")
        self._client.publish(discovery_topic(self.config.discovery_prefix,
                                             self.config.client_id, state_topic),
                             json.dumps(config).encode(), qos=1, retain=True)

    def _count_reconnect(self) -> None:
        self.metrics.inc("edgepack_mqtt_reconnects_total", ())


def _as_source(models: Any) -> ModelSource:
    if hasattr(models, "lease") and hasattr(models, "describe"):
        return models
    if hasattr(models, "lease") and hasattr(models, "snapshot"):
        return RepositoryModels(models)
    if hasattr(models, "predict") and hasattr(models, "inputs"):
        return SingleModel(models)
    raise MqttError("the bridge needs a loaded Model, a serve ModelManager or a ModelSource")


