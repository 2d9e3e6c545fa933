"""Per-connection deadlines and the connection table that keeps room for well-behaved clients.

Slow loris: a client that sends one header line every few seconds never trips a per-recv
timeout, and 64 of them used to hold every connection slot, so everyone else got 503s.
Two defences, both here:

- `DeadlineReader` wraps the socket under the handler's buffered `rfile`: every recv waits at
  most until the current phase's deadline (idle keep-alive wait, then request head, then
  body), so a trickled head or body ends at its deadline however slowly bytes arrive.
- `ConnectionTable` knows each connection's phase. When every slot is taken, the connection
  that has waited longest without a complete request head (idle or still sending its head)
  is shut down to make room; connections whose request is being read or served are never
  touched.
"""
from __future__ import annotations

import io
import socket
import threading
import time
from typing import Any

#: Phases of a connection. Only IDLE and HEAD connections may be dropped to make room.
IDLE, HEAD, BUSY = "idle", "head", "busy"


class DeadlineReader(io.RawIOBase):
    """Raw socket reader whose every recv ends by the current deadline (TimeoutError)."""

    def __init__(self, sock: socket.socket, owner: "Connection"):
        super().__init__()
        self._sock = sock
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._owner.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no complete request {self._owner.phase} within its deadline")
        self._sock.settimeout(remaining)
        count = self._sock.recv_into(buffer)
        if count:
            self._owner.got_bytes()
        return count


class Connection:
    """Phase and deadline of one client connection (one handler thread)."""

    def __init__(self, sock: socket.socket, idle_timeout: float, head_timeout: float):
        self.sock = sock
        self.idle_timeout = idle_timeout
        self.head_timeout = head_timeout
        self.phase = IDLE
        self.since = time.monotonic()
        self.deadline = self.since + idle_timeout
        self.dropped = False

    def wait_for_request(self) -> None:
        """Between requests: wait up to the keep-alive timeout for the next first byte."""
        self.phase, self.since = IDLE, time.monotonic()
        self.deadline = self.since + self.idle_timeout

    def got_bytes(self) -> None:
        # The head's clock starts with its first byte, not when the idle wait began.
        if self.phase == IDLE:
            self.phase, self.since = HEAD, time.monotonic()
            self.deadline = self.since + self.head_timeout

    def serving(self, body_timeout: float) -> None:
        """The head is complete: the body must arrive within `body_timeout` s."""
        self.phase, self.since = BUSY, time.monotonic()
        self.deadline = self.since + body_timeout

    def drop(self) -> None:
        """Shut the socket down: the handler's blocked recv returns and its thread ends."""
        self.dropped = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class ConnectionTable:
    """The live connections of one server, for making room when the slots are full."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[Connection] = set()

    def add(self, conn: Connection) -> None:
        with self._lock:
            self._live.add(conn)

    def remove(self, conn: Connection) -> None:
        with self._lock:
            self._live.discard(conn)

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)

    def drop_one_waiting(self) -> bool:
        """Drop the connection that has waited longest without a complete request head.

        Returns False when every connection is reading a body or being served.
        """
        with self._lock:
            waiting = [c for c in self._live if c.phase in (IDLE, HEAD) and not c.dropped]
            if not waiting:
                return False
            # Trickling heads first (they hold a slot doing nothing useful), oldest first;
            # then idle keep-alive connections, oldest first.
            victim = min(waiting, key=lambda c: (c.phase != HEAD, c.since))
            self._live.discard(victim)
        victim.drop()
        return True
