"""The bridge's answer side: one worker thread per subscription takes the oldest queued
message, decodes it, leases a model, predicts, publishes the result (or one error-topic
message) and hands its QoS 1 acknowledgement to the `AckBook`. An inline bridge's one
thread also drives paho's network loop here (`_pump`) between two answers."""
from __future__ import annotations

import base64
import logging
import select
import time
from typing import Any

from ..errors import EdgepackError
from .errors import PayloadError
from .lanes import Lane, Received
from .results import encode, error_document, predict_raw, result_bytes

log = logging.getLogger("edgepack.runtime.mqtt.bridge")


class Answering:
    """`MqttBridge`'s workers (a mixin: the state is the bridge's, see its ``__init__``)."""

    def _work(self, lane: Lane) -> None:
        laps = self._phases.laps() if self._phases is not None else None
        while not self._stop.is_set():
            item = lane.queue.get(timeout=1.0)     # drain() at stop wakes it at once
            if laps is not None:
                laps.mark("queue wait" if item is not None else "idle")
            if item is not None:
                self._handle(lane, item)

    def _work_inline(self, lane: Lane) -> None:
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

    def _handle(self, lane: Lane, item: Received) -> None:
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

    def _answer(self, lane: Lane, item: Received) -> None:
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


def _text(data: bytes) -> str:
    """Correlation data as text when it is UTF-8, else base64."""
    try:
        return bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(bytes(data)).decode("ascii")
