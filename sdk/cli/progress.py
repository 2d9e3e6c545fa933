"""Progress of long CLI steps on stderr: a spinner with the elapsed time on a terminal, one
line per step otherwise (logs, CI, a quickstart capturing the output)."""
from __future__ import annotations

import itertools
import sys
import threading
import time
from typing import IO

import click

FRAMES = "|/-\\"


class StageProgress:
    """`start(name)` begins a step (ending the previous one); `close()` ends the last.

    On a terminal the step's line is redrawn every 0.2 s as `name ... | 3s` by a daemon
    thread and finished as `name: 3.1 s`; elsewhere `name ...` is printed once when the
    step starts, so a reader sees what is running without a stream of redraws.
    """

    def __init__(self, stream: IO[str] | None = None, tty: bool | None = None) -> None:
        # sys.stderr itself: click's get_text_stream re-wraps the buffer, which fails
        # ("Illegal seek") on some redirections.
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty() if tty is None else tty
        self._name: str | None = None
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, name: str) -> None:
        self.close()
        self._name, self._started = name, time.monotonic()
        if not self._tty:
            click.echo(f"{name} ...", file=self._stream)
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._spin, name="edgepack-progress",
                                        daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        for frame in itertools.cycle(FRAMES):
            with self._lock:
                elapsed = time.monotonic() - self._started
                self._stream.write(f"\r{self._name} ... {frame} {elapsed:.0f}s")
                self._stream.flush()
            if self._stop.wait(0.2):
                return

    def pause(self) -> None:
        """Stop redrawing (another widget, e.g. a progress bar, takes the line)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=1.0)
            self._thread = None
            with self._lock:
                self._stream.write("\r\x1b[K")
                self._stream.flush()

    def close(self) -> None:
        if self._name is None:
            return
        elapsed = time.monotonic() - self._started
        if self._tty:
            self.pause()
            click.echo(f"{self._name}: {elapsed:.1f} s", file=self._stream)
        self._name = None
