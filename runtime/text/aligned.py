"""Text with its map back to the original string: the unit every tokenizer stage works on.

HF `tokenizers` keeps, for every byte of the normalized text, the (start, end) range of
the original it came from, and reports token offsets through that map. Here the unit is
the character (Python strings), which gives the same offsets as `tokenizers`' char
offsets (what its Python binding returns). A piece of text is `(text, offs)` where `offs`
is either an int `base` (identity: char i came from original char base + i, the common
case, kept cheap) or a list of (start, end) original ranges, one per char.

`transform` reproduces `NormalizedString::transform_range` of tokenizers 0.2x: each new
char comes with a change, 0 (replaces the next old char), +1 (inserted: takes the range of
the old char before it) or -n (replaces the next old char and removes n more).
reference: hf-tokenizers (tokenizer/normalizer.rs).
"""
from __future__ import annotations

from typing import Iterable, Union

Offsets = Union[int, list]
Piece = tuple  # (text: str, offs: Offsets)


def materialize(offs: Offsets, n: int) -> list:
    """The per-char (start, end) list of `offs` for a text of `n` chars."""
    if isinstance(offs, int):  # zip of two ranges: the tuples made in C
        return list(zip(range(offs, offs + n), range(offs + 1, offs + n + 1)))
    return offs


def transform(text: str, offs: Offsets, dest: Iterable[tuple[str, int]],
              initial: int = 0) -> Piece:
    """Apply (char, change) pairs to `text` (see the module docstring)."""
    old = materialize(offs, len(text))
    pos = initial
    chars = []
    new = []
    for c, change in dest:
        if change > 0:
            a = old[pos - 1] if pos > 0 else (0, 0)
        else:
            a = old[pos]
            pos += 1 - change
        chars.append(c)
        new.append(a)
    return "".join(chars), new


def slice_piece(text: str, offs: Offsets, i: int, j: int) -> Piece:
    """Chars [i, j) of a piece, with their offsets."""
    if isinstance(offs, int):
        return text[i:j], offs + i
    return text[i:j], offs[i:j]


def span(offs: Offsets, i: int, j: int) -> tuple[int, int]:
    """The original (start, end) of chars [i, j) of a piece (j > i)."""
    if isinstance(offs, int):
        return offs + i, offs + j
    return offs[i][0], offs[j - 1][1]


def first_offset(text: str, offs: Offsets) -> int | None:
    """Where the piece starts in the original (None for an empty piece)."""
    if not text:
        return None
    return offs if isinstance(offs, int) else offs[0][0]


def prepend(text: str, offs: Offsets, prefix: str) -> Piece:
    """`NormalizedString::prepend`: the prefix takes the range of the first char."""
    if not text:
        return text, offs
    first = span(offs, 0, 1)
    rest = materialize(offs, len(text))
    return prefix + text, [first] * len(prefix) + list(rest)


def append(text: str, offs: Offsets, suffix: str) -> Piece:
    """`NormalizedString::append`: the suffix takes the range of the last char."""
    if not text:
        return text, offs
    last = span(offs, len(text) - 1, len(text))
    rest = materialize(offs, len(text))
    return text + suffix, list(rest) + [last] * len(suffix)


def filter_chars(text: str, offs: Offsets, keep) -> Piece:
    """`NormalizedString::filter`: removed chars vanish, kept chars keep their range."""
    old = materialize(offs, len(text))
    chars = []
    new = []
    for c, a in zip(text, old):
        if keep(c):
            chars.append(c)
            new.append(a)
    return "".join(chars), new


def map_chars(text: str, offs: Offsets, table: dict) -> Piece:
    """Replace chars one for one (alignment unchanged)."""
    return text.translate(table), offs


def split_on(text: str, offs: Offsets, bounds: list[tuple[int, int]]) -> list[Piece]:
    """The pieces at char ranges `bounds` (empty ranges dropped)."""
    return [slice_piece(text, offs, i, j) for i, j in bounds if j > i]
