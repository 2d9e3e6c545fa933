"""Windows over items arriving in chunks of any size (`Windower`): the buffer behind
`model.stream()` and stream stages."""
from __future__ import annotations

import numpy as np

from .errors import InputError


class Windower:
    """Buffers items (samples, or frames of any shape) along axis 0; yields each complete
    window of `context + window` items, windows `hop` items apart, with zeros before the
    first item. Optional per-item (start_s, end_s) times travel with the items."""

    def __init__(self, window: int, hop: int, context: int = 0):
        self.window, self.hop, self.context = window, hop, context
        self._span = context + window
        self.reset()

    def reset(self) -> None:
        self._buf: np.ndarray | None = None
        self._times: np.ndarray | None = None
        self._first = -self.context      # absolute index of _buf[0]
        self._len = 0                    # items held in _buf
        self._next = 0                   # index of the next window
        self.items_seen = 0
        self.stale = False               # windows were assembled outside (skip())

    def exact(self, n: int) -> bool:
        """True when `n` new items make exactly the next window and nothing is pending
        (hop == window): the caller may assemble that window itself and call skip()."""
        return n == self.window == self.hop and self.items_seen == self._next * self.hop

    def skip(self, n: int) -> int:
        """Count a window the caller assembled from `n` new items; its index."""
        index = self._next
        self._next += 1
        self.items_seen += n
        self.stale = True
        return index

    def seed(self, history: np.ndarray) -> None:
        """After skip(): refill the buffer with the `context` items before the next window
        (the tail of the last window), so push() goes on as if it had seen every item."""
        self._buf = np.zeros((4 * self._span,) + history.shape[1:], history.dtype)
        self._buf[:self.context] = history
        self._first = self._next * self.hop - self.context
        self._len = self.context
        self.stale = False

    def push(self, items: np.ndarray, times: np.ndarray | None = None
             ) -> list[tuple[int, np.ndarray, np.ndarray | None]]:
        """Add items; return [(window index, items, times or None)] for complete windows.

        Windows are views into the buffer. New items are only ever written after every
        returned window, and the buffer is compacted into a *new* array, so a returned
        window stays valid until the caller lets it go.
        """
        n = len(items)
        buf = self._buf
        if buf is None:
            buf = self._start(items, times)
        elif items.shape[1:] != buf.shape[1:]:
            raise InputError(f"stream items changed shape: {items.shape[1:]} after "
                             f"{buf.shape[1:]}")
        end = self._len + n
        if end > len(buf):
            buf = self._compact(n)
            end = self._len + n
        buf[self._len:end] = items
        if self._times is not None:
            self._times[self._len:end] = times
        self._len = end
        self.items_seen += n
        span, hop = self._span, self.hop
        lo = self._next * hop - self.context - self._first
        if lo + span > end:
            return []
        out = []
        times_buf, context = self._times, self.context
        while lo + span <= end:
            out.append((self._next, buf[lo:lo + span],
                        None if times_buf is None else times_buf[lo + context:lo + span]))
            self._next += 1
            lo += hop
        return out

    def _start(self, items: np.ndarray, times) -> np.ndarray:
        self._buf = np.zeros((4 * self._span + len(items),) + items.shape[1:], items.dtype)
        self._len = self.context  # zeros before the first item
        if times is not None:
            self._times = np.zeros((len(self._buf), 2))
        return self._buf

    def _compact(self, incoming: int) -> np.ndarray:
        # leading items no window needs any more
        drop = max(0, min(self._next * self.hop - self.context - self._first, self._len))
        live = self._len - drop
        size = max(2 * live + incoming, 4 * self._span)
        buf = np.zeros((size,) + self._buf.shape[1:], self._buf.dtype)
        buf[:live] = self._buf[drop:self._len]
        if self._times is not None:
            times = np.zeros((size, 2))
            times[:live] = self._times[drop:self._len]
            self._times = times
        self._buf, self._first, self._len = buf, self._first + drop, live
        return buf
