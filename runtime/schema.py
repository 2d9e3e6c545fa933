"""The one validation layer for manifest.json: typed field checkers that name the JSON path.

Every manifest field goes through these (manifest.py, specs.py): a wrong type, a value out of
range or an unknown name is a `ManifestError` saying `manifest.json: <path> must be ...,
got <value>`, never a TypeError/ValueError from deeper code. `check_document` bounds the whole
document first (nesting depth, every integer within 64 bits), so free-form fields (source,
validation, step parameters) cannot carry values numpy or the engines choke on.
"""
from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping

from .errors import ManifestError

INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
#: A declared dimension and a declared tensor's element count are at most this (2**31):
#: anything bigger cannot be fed on a device, and verify would try to allocate it.
MAX_DIM = MAX_ELEMENTS = 1 << 31
MAX_RANK = 16
MAX_DEPTH = 64
#: Integers longer than this are refused while parsing (Python's own limit is 4300 digits,
#: and its ValueError is not ours).
MAX_INT_DIGITS = 100
_SHOW = 60


def show(value: Any) -> str:
    """A short repr of a (possibly huge) JSON value for an error message."""
    text = repr(value)
    return text if len(text) <= _SHOW else text[:_SHOW - 1] + "…"


def fail(where: str, wanted: str, value: Any = ...) -> ManifestError:
    got = "" if value is ... else f", got {show(value)}"
    return ManifestError(f"manifest.json: {where} must be {wanted}{got}")


# --- parsing ---------------------------------------------------------------------------------
class _TooLong(Exception):
    pass


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise _TooLong(len(text.lstrip("-")))
    return int(text)


def loads(text: str) -> Any:
    """json.loads with integers bounded in length; raises ManifestError only."""
    try:
        return json.loads(text, parse_int=_parse_int)
    except _TooLong as e:
        raise ManifestError(
            f"manifest.json holds an integer of {e.args[0]} digits; integers in a manifest "
            "fit in 64 bits") from None
    except (ValueError, RecursionError) as e:   # JSONDecodeError is a ValueError
        raise ManifestError(f"manifest.json is not valid JSON: {e}") from e


def check_document(data: Any) -> None:
    """Bound the whole document: nesting depth and 64-bit integers, with the path of the first
    offender. Iterative, so a deep document cannot exhaust the stack here."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ManifestError(f"manifest.json: {where or 'the document'} is nested more than "
                                f"{MAX_DEPTH} levels deep")
        if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
            continue
        if isinstance(value, int):
            if not INT64_MIN <= value <= INT64_MAX:
                raise fail(where or "the document", "an integer that fits in 64 bits", value)
        elif isinstance(value, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k), depth + 1)
                         for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value))


# --- typed field checkers -------------------------------------------------------------------
def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def obj(value: Any, where: str, *, nullable: bool = False) -> dict | None:
    if value is None and nullable:
        return None
    if not isinstance(value, dict):
        raise fail(where, "an object" + (" or null" if nullable else ""), value)
    return value


def array(value: Any, where: str, *, nonempty: bool = False, max_len: int | None = None) -> list:
    if not isinstance(value, list) or (nonempty and not value):
        raise fail(where, "a non-empty list" if nonempty else "a list", value)
    if max_len is not None and len(value) > max_len:
        raise fail(where, f"a list of at most {max_len} items", f"{len(value)} items")
    return value


def string(value: Any, where: str, *, nonempty: bool = True, nullable: bool = False,
           choices: Iterable[str] | None = None) -> str | None:
    if value is None and nullable:
        return None
    options = sorted(choices) if choices is not None else None
    if options is not None and (not isinstance(value, str) or value not in options):
        raise fail(where, f"one of {options}" + (" or null" if nullable else ""), value)
    if not isinstance(value, str) or (nonempty and not value):
        raise fail(where, ("a non-empty string" if nonempty else "a string")
                   + (" or null" if nullable else ""), value)
    return value


def integer(value: Any, where: str, *, lo: int = INT64_MIN, hi: int = INT64_MAX,
            nullable: bool = False) -> int | None:
    if value is None and nullable:
        return None
    if not is_int(value) or not lo <= value <= hi:
        raise fail(where, f"an integer in [{lo}, {hi}]" if (lo, hi) != (INT64_MIN, INT64_MAX)
                   else "an integer", value)
    return value


def number(value: Any, where: str, *, lo: float = -math.inf, hi: float = math.inf,
           positive: bool = False) -> float:
    """A finite number (int or float) in [lo, hi]; `positive`: also > 0."""
    if not is_number(value):
        raise fail(where, "a finite number", value)
    real = float(value)   # ints here are 64-bit (check_document), so this cannot overflow
    if not math.isfinite(real) or not lo <= real <= hi or (positive and real <= 0):
        bound = "a finite number" + (" > 0" if positive else "")
        if (lo, hi) != (-math.inf, math.inf):
            bound += f" in [{lo:g}, {hi:g}]"
        raise fail(where, bound, value)
    return real


def shape(value: Any, where: str, *, dynamic: bool = True) -> tuple[int, ...]:
    """A tensor shape: at most MAX_RANK dims, each > 0 (or -1 = dynamic when `dynamic`), and at
    most MAX_ELEMENTS elements counting a dynamic dim as 1."""
    wanted = "a list of integers > 0" + (" or -1 (dynamic)" if dynamic else "")
    if not isinstance(value, list) or len(value) > MAX_RANK or not all(
            is_int(d) and (0 < d <= MAX_DIM or (dynamic and d == -1)) for d in value):
        raise fail(where, f"{wanted}, at most {MAX_RANK} of them, each at most {MAX_DIM}", value)
    elements = math.prod(d for d in value if d > 0)
    if elements > MAX_ELEMENTS:
        raise fail(where, f"a shape of at most {MAX_ELEMENTS} elements",
                   f"{show(value)} ({elements} elements)")
    return tuple(value)


def mapping_of(value: Any, where: str, check) -> dict:
    """An object whose every value passes `check(value, where_of_it)`; returns it unchanged."""
    value = obj(value, where)
    for key, item in value.items():
        check(item, f"{where}[{key!r}]")
    return value


def steps(value: Any, where: str) -> list:
    """A list of steps `{"op": name, ...parameters}` (parameters are checked by each op)."""
    value = array(value, where)
    for i, step in enumerate(value):
        if not isinstance(step, dict) or not isinstance(step.get("op"), str) or not step["op"]:
            raise fail(f"{where}[{i}]", "a step like {'op': 'softmax'}", step)
    return value


def require_keys(value: Mapping, where: str, keys: Iterable[str]) -> None:
    missing = [k for k in keys if k not in value]
    if missing:
        raise ManifestError(f"manifest.json: {where} lacks {missing}")
