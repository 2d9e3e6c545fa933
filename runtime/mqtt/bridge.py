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

import base64
import json
import logging
import select
import sys
import threading
import time
from typing import Any, Callable

from ..errors import EdgepackError
from .acks import AckBook
from .config import BridgeConfig, Subscription
from .connection import Connection, make_client, result_properties
from .discovery import discovery_config, discovery_topic
from .errors import MqttError, PayloadError
from .models import ModelSource, RepositoryModels, SingleModel, check_models
from .phases import PhaseBook
from .queues import MessageQueue
from .streams import StreamCache
from .results import encode, error_document, predict_raw, result_bytes

log = logging.getLogger(__name__)
#: How long start() waits for the broker to acknowledge the subscriptions.
SUBSCRIBE_TIMEOUT_S = 10.0


#: Topic -> lane lookups remembered (a thousand cameras fit; beyond, matched each time).
LANE_CACHE = 4096


class _Message:
    """One received message as the network thread queues it: paho's fields, unparsed (the
    worker reads the MQTT 5 properties only for the messages it answers)."""

    __slots__ = ("topic", "payload", "qos", "mid", "dup", "generation", "received",
                 "properties", "reject")

    def __init__(self, topic: str, payload: bytes | None, qos: int, mid: int, dup: bool,
                 generation: int, received: float, properties: Any = None,
                 reject: str | None = None):
        self.topic, self.payload, self.qos, self.mid, self.dup = topic, payload, qos, mid, dup
        self.generation, self.received, self.properties = generation, received, properties
        self.reject = reject        # refused in the network thread (e.g. too large)

    def _property(self, name: str) -> Any:
        props = self.properties
        if props is None:
            return None
        value = getattr(props, "value", None)     # lean.LazyProperties: no paho unpack
        return value(name) if value is not None else getattr(props, name, None)

    @property
    def correlation(self) -> bytes | None:
        return self._property("CorrelationData")

    @property
    def response_topic(self) -> str | None:
        return self._property("ResponseTopic")

    @property
    def content_type(self) -> str | None:
        return self._property("ContentType")


class _Lane:
    """One subscription's queue, worker thread and counters."""

    def __init__(self, sub: Subscription):
        self.sub = sub
        self.map = sub.topic_map
        self.queue = MessageQueue(sub.queue_size, sub.effective_policy)
        self.labels = (("subscription", sub.topic),)
        self.received = self.answered = self.errors = self.skipped = 0
        self.thread: threading.Thread | None = None
        self._result_topics: dict[str, str] = {}

    def result_topic(self, topic: str) -> str:
        """The publish topic of a message received on `topic` (remembered: a template
        substitution per answer cost ~4 us)."""
        try:
            return self._result_topics[topic]
        except KeyError:
            result = self.map.publish_topic(topic)
            if len(self._result_topics) < LANE_CACHE:
                self._result_topics[topic] = result
            return result

    def stats(self) -> dict[str, Any]:
        return {"topic": self.sub.topic, "received": self.received, "answered": self.answered,
                "errors": self.errors, "dropped": self.queue.dropped,
                "skipped": self.skipped, "queue_size": self.queue.size,
                "high_water": self.queue.high_water, "policy": self.queue.policy}


class MqttBridge:
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
        self.lanes = [_Lane(s) for s in config.subscriptions]
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
        self._lane_of: dict[str, _Lane | None] = {}
        self._raw_topics: dict[bytes, tuple[str | None, _Lane | None]] = {}
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

    # --- paho callbacks: network thread, never block --------------------------------------
    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            self._connection.connack(str(reason))
            return
        self._generation += 1
        self._acks.new_connection(self._generation)
        self._session_present = bool(getattr(flags, "session_present", False))
        self._subscribed.clear()
        _, self._subscribe_mid = client.subscribe(
            [(lane.sub.topic, lane.sub.qos) for lane in self.lanes])
        self.metrics.set_gauge("edgepack_mqtt_connected", (), 1)
        self._publish_status()
        if self.config.homeassistant:
            for lane in self.lanes:
                if lane.map.is_static:
                    self._discover(lane, lane.sub.publish)
        log.info("connected to %s:%d (session present: %s); subscribed to %s",
                 self.config.broker.host, self.config.broker.port, self._session_present,
                 ", ".join(lane.sub.topic for lane in self.lanes))
        self._connection.connack(None)

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        if mid != self._subscribe_mid:
            return
        refused = [str(r) for r in reasons or () if getattr(r, "is_failure", False)]
        if refused:
            log.error("the broker refused subscription(s): %s", ", ".join(refused))
        self._subscribed.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.metrics.set_gauge("edgepack_mqtt_connected", (), 0)
        if self._connection is not None:
            self._connection.lost()
        if not self._stop.is_set():
            log.warning("disconnected from the MQTT broker: %s", reason)

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        # Runs for every message, dropped ones included: no decoding, no property parsing
        # beyond paho's, one deque append.
        try:
            topic = msg.topic
        except UnicodeDecodeError:      # paho raises on a non-UTF-8 topic
            return
        self._take(self._lane_for(topic), topic, msg.payload, msg.qos, msg.mid, msg.dup,
                   getattr(msg, "properties", None))

    def _on_raw_publish(self, topic: bytes, payload: bytes, qos: int, mid: int, dup: bool,
                        properties: Any) -> None:
        """`LeanClient.raw_publish`: `_on_message` without paho's message object, the
        topic's text and lane looked up by its bytes."""
        try:
            name, lane = self._raw_topics[topic]
        except KeyError:
            name, lane = self._raw_topic(topic)
        if name is not None:        # else not UTF-8: ignored, as in _on_message
            self._take(lane, name, payload, qos, mid, dup, properties)

    def _raw_topic(self, topic: bytes) -> tuple[str | None, _Lane | None]:
        try:
            name = topic.decode("utf-8")
        except UnicodeDecodeError:
            return None, None
        entry = (name, self._lane_for(name))
        if len(self._raw_topics) < LANE_CACHE:
            self._raw_topics[topic] = entry
        return entry

    def _take(self, lane: _Lane | None, topic: str, payload: bytes, qos: int, mid: int,
              dup: bool, properties: Any) -> None:
        """Queue one received message on its lane (network thread, never blocks except
        on a full `block` queue)."""
        laps = self._phases.laps() if self._phases is not None else None
        if laps is not None:
            laps.mark("network (paho, outside on_message)")
        if lane is None:
            if qos > 0:     # not ours (overlapping filters): handled, acked in order
                self._acks.add(mid, qos, self._generation, None)
            return
        item = _Message(topic, payload, qos, mid, dup, self._generation,
                        time.perf_counter(), properties)
        if len(payload) > self.config.max_payload_bytes:
            item.reject = (f"payload of {len(payload)} bytes is over the limit of "
                           f"{self.config.max_payload_bytes} bytes (--max-payload)")
            item.payload = None       # do not keep megabytes queued just to refuse them
        lane.received += 1
        self.metrics.inc("edgepack_mqtt_messages_received_total", lane.labels)
        if self.inline and lane.queue.policy == "block" and lane.queue.full():
            # The thread that would make room is this one: answer the oldest now (its
            # result and PUBACK are queued in paho and written after this callback).
            oldest = lane.queue.get_nowait()
            if oldest is not None:
                self._handle(lane, oldest)
        dropped = lane.queue.put(item, self._stop.is_set)
        if dropped is item:
            # A full `block` queue refused it because the bridge is stopping: not answered,
            # so not acknowledged either (the broker delivers it again).
            return
        if dropped is not None:
            self.metrics.inc("edgepack_mqtt_messages_dropped_total", lane.labels)
            if dropped.qos > 0:      # drop-oldest chosen for QoS 1: dropped means handled
                self._acks.add(dropped.mid, dropped.qos, dropped.generation, None)
            self._moved()
        if laps is not None:
            laps.mark("on_message")

    def _lane_for(self, topic: str) -> _Lane | None:
        try:
            return self._lane_of[topic]
        except KeyError:
            pass
        lane = next((lane for lane in self.lanes if lane.map.match(topic) is not None), None)
        if len(self._lane_of) < LANE_CACHE:
            self._lane_of[topic] = lane
        return lane

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        if self._acks.delivered(mid):
            self._moved()       # "acknowledged" moved

    def _send_ack(self, mid: int, qos: int) -> None:
        self._client.ack(mid, qos)

    # --- workers -------------------------------------------------------------------------
    def _work(self, lane: _Lane) -> None:
        laps = self._phases.laps() if self._phases is not None else None
        while not self._stop.is_set():
            item = lane.queue.get(timeout=1.0)     # drain() at stop wakes it at once
            if laps is not None:
                laps.mark("queue wait" if item is not None else "idle")
            if item is not None:
                self._handle(lane, item)

    def _work_inline(self, lane: _Lane) -> None:
        """The one thread of a one-subscription bridge: network, then the oldest message."""
        queue = lane.queue
        laps = self._phases.laps() if self._phases is not None else None
        while not self._stop.is_set():
            # What arrived meanwhile first (newer frames, acks), with nothing held outside
            # the queue: a full `block` queue answers its oldest in the callback, in order.
            # With nothing queued, wait for traffic (0.25 s at most, to see _stop).
            self._pump(0.0 if len(queue) else 0.25)
            if laps is not None:
                laps.mark("network (pump)")
            item = queue.get_nowait()
            if item is not None:
                self._handle(lane, item)

    def _pump(self, timeout: float) -> None:
        """One pass of paho's network loop in this thread: wait up to `timeout` s for the
        socket (not when bytes are already buffered), read all that has arrived (the
        callbacks queue it), write what is pending, keep-alive. Not re-entrant: a call from
        inside a callback returns at once."""
        if self._pumping:
            return
        client = self._client
        sock = client.socket()
        if sock is None:                    # not connected: the supervisor reconnects
            self._stop.wait(min(timeout, 0.01) or 0.001)
            return
        if timeout > 0:
            pending = getattr(sock, "pending", None)
            if pending is None or not pending():
                try:
                    select.select([sock], [sock] if client.want_write() else [], [], timeout)
                except (OSError, ValueError, TypeError):
                    return                  # closed under us (a reconnect): next pass
        with self._net_lock:
            if client.socket() is not sock:
                return
            self._pumping = True
            try:
                client.loop_read()
                if client.want_write():
                    client.loop_write()
                client.loop_misc()
            finally:
                self._pumping = False

    def _handle(self, lane: _Lane, item: _Message) -> None:
        if item.qos > 0 and item.generation != self._generation and self._session_present:
            lane.skipped += 1   # the broker redelivers it on this session: answer that
            self._moved()
            return
        try:
            self._answer(lane, item)
        except Exception:  # a bug must not end the lane
            log.exception("answering a message on %s failed", item.topic)
        self._moved()
        if self._phases is not None:
            self._phases.laps().mark("ack + counters")

    def _answer(self, lane: _Lane, item: _Message) -> None:
        mark = self._phases.laps().mark if self._phases is not None else None
        if mark is not None:
            mark("handle")
        meta: dict[str, Any] = {"topic": item.topic, "mid": item.mid}
        if item.dup:
            meta["dup"] = True
        correlation = item.correlation
        if correlation is not None:
            meta["correlation"] = _text(correlation)
        name = version = None
        ok = False
        try:
            if item.reject is not None:
                raise PayloadError(item.reject)
            with self.models.lease(lane.sub.model) as leased:
                name, version = leased.model_name, leased.version
                start = time.perf_counter()
                if mark is not None:
                    mark("properties + lease")
                result, extras = predict_raw(
                    leased.model, item.payload or b"", codec=lane.sub.codec,
                    content_type=item.content_type, base64_field=self.config.base64_field,
                    max_payload_bytes=self.config.max_payload_bytes,
                    streams=self._streams, stream_key=item.topic, mark=mark)
                latency = time.perf_counter() - start
            meta["queued_ms"] = round((start - item.received) * 1000.0, 3)
            # result_document's bytes in one C-encoder pass (no jsonable walk of the result)
            body = result_bytes(name, version, result, latency * 1000.0,
                                {**extras, **meta} if extras else meta)
            ok = True
            if mark is not None:
                mark("result document")
        except EdgepackError as exc:
            doc = error_document(str(getattr(exc, "message", exc)), meta, name, version)
            body = encode(doc)
        except Exception as exc:  # a model or decoder bug: report it, keep serving
            log.exception("unexpected failure on %s", item.topic)
            doc = error_document(f"internal error: {type(exc).__name__}: {exc}", meta,
                                 name, version)
            body = encode(doc)
        if ok:
            topic = item.response_topic or lane.result_topic(item.topic)
            qos = lane.sub.effective_result_qos
            self.metrics.observe((("model", name), ("version", version),
                                  ("transport", "mqtt")), latency)
            if self._announced.get(name) != version:
                self._publish_status()
            if self.config.homeassistant and topic not in self._discovered:
                self._discover(lane, topic, name, version)
        else:
            topic, qos = self.config.error_topic, max(item.qos, lane.sub.effective_result_qos)
            lane.errors += 1
            self.metrics.inc("edgepack_mqtt_message_errors_total", lane.labels)
            log.info("message on %s refused: %s", item.topic, doc["error"])
        if mark is not None:
            mark("metrics + topic")
        info = self._publish(topic, body, qos, correlation, untracked=item.qos == 0)
        if mark is not None:
            mark("publish")
        if info is None:
            return
        if ok:
            lane.answered += 1
            self.metrics.inc("edgepack_mqtt_messages_published_total", lane.labels)
        if item.qos > 0:
            self._acks.add(item.mid, item.qos, item.generation, info)

    def _publish(self, topic: str, payload: bytes, qos: int, correlation: bytes | None,
                 retain: bool = False, untracked: bool = False) -> Any:
        """Publish once connected (waits in short steps; None if the bridge is stopping).
        `untracked`: nothing waits for this message's delivery (no QoS 1 input to
        acknowledge), so a QoS 0 one goes by `LeanClient.publish_qos0` where there is one
        (True instead of a `MQTTMessageInfo`)."""
        while not self._connection.connected.is_set():
            if self._stop.is_set():
                return None
            if self.inline and not self._pumping:
                self._pump(0.05)        # this thread reads the CONNACK of a reconnect
            else:
                self._connection.connected.wait(0.25)
        make = self._result_properties
        properties = make(correlation) if make is not None else None
        if untracked and qos == 0 and not retain and self._lean_publish is not None:
            self._lean_publish(topic, payload, properties)
            return True
        return self._client.publish(topic, payload, qos=qos, retain=retain,
                                    properties=properties)

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

    def _discover(self, lane: _Lane, state_topic: str, name: str | None = None,
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


def _text(data: bytes) -> str:
    """Correlation data as text when it is UTF-8, else base64."""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(data)).decode("ascii")
