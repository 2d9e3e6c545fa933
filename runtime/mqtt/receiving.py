"""The bridge's network side: paho's callbacks, run by its network thread (or by the one
thread of an inline bridge), never blocking: connect and subscribe, take every received
PUBLISH onto its lane's queue (dropped frames cost a deque append, nothing is decoded
here), acknowledge, count."""
from __future__ import annotations

import logging
import time
from typing import Any

from .lanes import LANE_CACHE, Lane, Received

log = logging.getLogger("edgepack.runtime.mqtt.bridge")


class Receiving:
    """`MqttBridge`'s paho callbacks (a mixin: the state is the bridge's, see its
    ``__init__``)."""

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

    def _raw_topic(self, topic: bytes) -> tuple[str | None, Lane | None]:
        try:
            name = topic.decode("utf-8")
        except UnicodeDecodeError:
            return None, None
        entry = (name, self._lane_for(name))
        if len(self._raw_topics) < LANE_CACHE:
            self._raw_topics[topic] = entry
        return entry

    def _take(self, lane: Lane | None, topic: str, payload: bytes, qos: int, mid: int,
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
        item = Received(topic, payload, qos, mid, dup, self._generation,
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

    def _lane_for(self, topic: str) -> Lane | None:
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

