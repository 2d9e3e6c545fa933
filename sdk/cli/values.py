"""Option values several commands parse alike: sizes in bytes and HEIGHT,WIDTH pairs.

One grammar each, so `--max-body 64M` (serve) and `--max-payload 64MiB` (mqtt) accept the
same spellings, and `--resize` / `--letterbox` / `--center-crop` the same pairs.
"""
from __future__ import annotations

import re

import click

from edgepack.runtime.errors import InputError

_BYTES = re.compile(r"(\d+)\s*([kmg]?)(?:i?b)?", re.IGNORECASE)


def byte_size(text: str) -> int:
    """'512' / '512K' / '64M' / '1G' (also '64MB', '64MiB'; powers of 1024) -> bytes."""
    match = _BYTES.fullmatch(text.strip())
    if match is None:
        # a usage error (exit 2) wherever the command is invoked from, like click's own
        raise click.BadParameter(f"{text!r} is not a size: use bytes or e.g. 512K, 64M, 1G")
    return int(match.group(1)) * 1024 ** " kmg".index((match.group(2) or " ").lower())


def height_width(text: str | None, flag: str) -> tuple[int, int] | None:
    """'H,W', 'HxW' or 'N' (square) -> (H, W) of positive integers; None passes through."""
    if text is None:
        return None
    parts = text.lower().replace("x", ",").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise InputError(f"{flag} {text!r} must be HEIGHT,WIDTH or N") from None
    if len(values) not in (1, 2) or min(values) < 1:
        raise InputError(f"{flag} {text!r} must be HEIGHT,WIDTH or N with positive integers")
    return (values[0], values[0]) if len(values) == 1 else (values[0], values[1])
