"""Progress reporting without threading a callback through every converter.

The library only calls `report(stage, done, total)`; a front end (the CLI's progress bar)
installs a callback for the duration of one conversion with `reporting(callback)`. A
context variable, not a global, so concurrent conversions do not see each other's bars.
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Callable, Iterator

Callback = Callable[[str, int, int], None]
_callback: contextvars.ContextVar[Callback | None] = contextvars.ContextVar(
    "edgepack_progress", default=None)


def report(stage: str, done: int, total: int) -> None:
    """Tell the installed callback (if any) that `done` of `total` units of `stage` are done."""
    callback = _callback.get()
    if callback is not None:
        callback(stage, done, total)


@contextlib.contextmanager
def reporting(callback: Callback | None) -> Iterator[None]:
    token = _callback.set(callback)
    try:
        yield
    finally:
        _callback.reset(token)
