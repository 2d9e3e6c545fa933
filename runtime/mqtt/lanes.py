"""What the two sides of the bridge share per subscription: a received message as the
network thread queues it (`Received`), and a subscription's queue, worker and counters
(`Lane`)."""
from __future__ import annotations

import threading
from typing import Any

from .config import Subscription
from .queues import MessageQueue

#: Topic -> lane lookups remembered (a thousand cameras fit; beyond, matched each time).
LANE_CACHE = 4096


class Received:
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


class Lane:
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

