"""The bounded in-flight queue of one subscription, with its back-pressure policy.

- ``drop-oldest``: a full queue drops its oldest message to take the new one (camera frames:
  answer the newest, never build a backlog). The caller gets the dropped item back (to count
  it, and to acknowledge it if it was QoS 1).
- ``block``: a full queue makes `put` wait for room. With QoS 1 the broker's in-flight
  window (MQTT 5 Receive Maximum, set to the queue size) normally keeps it from filling at
  all; if it does fill, waiting in the network thread is TCP back-pressure on the broker,
  which holds the rest: nothing acknowledged is ever dropped.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable


class MessageQueue:
    """Thread-safe bounded FIFO; `high_water` is the deepest it has been."""

    def __init__(self, size: int, policy: str):
        if policy not in ("drop-oldest", "block"):
            raise ValueError(f"unknown queue policy {policy!r}")
        self.size = size
        self.policy = policy
        self._items: deque[Any] = deque()
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self.high_water = 0
        self.dropped = 0
        self._closed = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def put(self, item: Any, stopping: Callable[[], bool] = lambda: False) -> Any:
        """Add `item`; returns the item dropped to make room (drop-oldest), else None.

        With ``block``, waits in short steps until there is room or `stopping()` is true
        (then the item is refused and returned, as if dropped, so it is never lost silently).
        """
        with self._lock:
            dropped = None
            if len(self._items) >= self.size:
                if self.policy == "drop-oldest":
                    dropped = self._items.popleft()
                    self.dropped += 1
                else:
                    while len(self._items) >= self.size:
                        if self._closed or stopping():
                            return item
                        self._not_full.wait(0.1)
            self._items.append(item)
            self.high_water = max(self.high_water, len(self._items))
            self._not_empty.notify()
            return dropped

    def get(self, timeout: float) -> Any:
        """The oldest item, or None after `timeout` seconds with nothing queued (at once
        once `drain()` has closed the queue)."""
        with self._lock:
            if not self._items:
                if self._closed:
                    return None
                self._not_empty.wait(timeout)
                if not self._items:
                    return None
            return self._pop()

    def get_nowait(self) -> Any:
        """The oldest item, or None when empty (never waits)."""
        with self._lock:
            return self._pop() if self._items else None

    def _pop(self) -> Any:
        # holding the lock, with an item queued: take the oldest, wake a blocked put()
        item = self._items.popleft()
        self._not_full.notify()
        return item

    def full(self) -> bool:
        with self._lock:
            return len(self._items) >= self.size

    def drain(self) -> list[Any]:
        """Remove and return everything queued (on shutdown)."""
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._closed = True
            self._not_full.notify_all()
            self._not_empty.notify_all()
            return items
