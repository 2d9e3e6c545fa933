"""In-order PUBACKs for QoS 1 inputs, sent once each input's answer has been delivered.

MQTT requires PUBACKs in the order the PUBLISH packets arrived (MQTT 3.1.1 §4.6, MQTT 5
§4.6), and the bridge acknowledges an input only when the broker has its result (or error
message): until then the broker still owns it and redelivers it after a reconnect.

`AckBook` is driven by two threads without waking any third one: the worker `add`s an
input once its answer is handed to paho (with that publish's `MQTTMessageInfo`), and paho's
network thread reports each delivered publish in `on_publish` (PUBACK of a QoS 1 result,
socket write of a QoS 0 one). Whichever thread completes the oldest pending input sends the
PUBACKs that are due, in arrival order, right there.

paho calls ``on_publish`` just *before* it marks the `MQTTMessageInfo` as published (both
under its own lock), so a delivery can be reported for a publish the worker has not added
yet; such mids are remembered in a short window (`RECENT`) that `add` consults. Mids are
16-bit and reused only after 65,535 publishes, far beyond the window, so a remembered mid
never matches a later publish.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, Callable

#: How many delivered-but-not-yet-added publish mids are remembered (see the docstring).
RECENT = 256


class _Pending:
    __slots__ = ("mid", "qos", "generation", "done")

    def __init__(self, mid: int, qos: int, generation: int, done: bool):
        self.mid, self.qos, self.generation, self.done = mid, qos, generation, done


def _published(info: Any) -> bool:
    """`info.is_published()`, False where paho raises: a publish made while the connection
    was dropping (rc NO_CONN) is resent after the reconnect, and this connection's pending
    acks are forgotten then anyway (`new_connection`)."""
    try:
        return bool(info.is_published())
    except (RuntimeError, ValueError):
        return False


class AckBook:
    """QoS 1 inputs awaiting their PUBACK, oldest first. `send_ack(mid, qos)` sends one
    (paho's ``client.ack``); it is called with the book's lock held, so acks go out in
    order even when both threads complete inputs at once."""

    def __init__(self, send_ack: Callable[[int, int], Any]):
        self._send_ack = send_ack
        self._lock = threading.Lock()
        self._order: deque[_Pending] = deque()
        self._by_result: dict[int, _Pending] = {}
        self._recent: OrderedDict[int, None] = OrderedDict()
        self._generation = 0
        self.sent = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._order)

    def add(self, mid: int, qos: int, generation: int, info: Any | None) -> None:
        """Input `mid` (received on connection `generation`) is answered by the publish
        `info` (None: nothing to wait for, e.g. a dropped message, which counts as handled).
        Inputs of an older connection are never acknowledged: the broker redelivers them."""
        with self._lock:
            if generation != self._generation:
                return
            done = info is None or _published(info)
            if not done and info.mid in self._recent:     # delivered before it was added
                del self._recent[info.mid]
                done = True
            entry = _Pending(mid, qos, generation, done)
            if not done:
                self._by_result[info.mid] = entry
            self._order.append(entry)
            self._flush()

    def delivered(self, result_mid: int) -> bool:
        """paho delivered publish `result_mid` (network thread, from ``on_publish``).
        True when that sent PUBACKs."""
        with self._lock:
            entry = self._by_result.pop(result_mid, None)
            if entry is None:
                self._recent[result_mid] = None
                self._recent.move_to_end(result_mid)
                while len(self._recent) > RECENT:
                    self._recent.popitem(last=False)
                return False
            entry.done = True
            before = self.sent
            self._flush()
            return self.sent != before

    def new_connection(self, generation: int) -> None:
        """Forget what was pending on the previous connection (the broker redelivers it)."""
        with self._lock:
            self._generation = generation
            self._order.clear()
            self._by_result.clear()
            self._recent.clear()

    def _flush(self) -> None:
        order = self._order
        while order and order[0].done:
            entry = order.popleft()
            self._send_ack(entry.mid, entry.qos)
            self.sent += 1
