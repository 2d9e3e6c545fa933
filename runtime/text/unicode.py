"""Character classes the tokenizers need, with Rust's definitions (not Python's).

`tokenizers` decides whitespace, punctuation, letters and digits with Rust's Unicode
tables: `char::is_whitespace` is the White_Space property (Python's `str.isspace` also
counts U+001C..U+001F), BERT's punctuation is ASCII punctuation plus categories P*, and
the byte-level regex uses \\p{L} / \\p{N}, which `re` does not know. The classes are built
once, on first use, from `unicodedata` (one pass over the code points, ~0.2 s), and kept as
regex character-class bodies.
"""
from __future__ import annotations

import functools
import itertools
import re
import unicodedata

#: The White_Space property (what Rust's char::is_whitespace tests).
WHITESPACE = ("\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
              "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
WHITESPACE_SET = frozenset(WHITESPACE)
ASCII_PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

#: CJK ideograph blocks BERT surrounds with spaces (reference: hf-tokenizers bert.rs).
CJK_RANGES = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
              (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _escape(c: str) -> str:
    return "\\" + c if c in "\\]^-[" else c


def _ranges_to_class(ranges: list[tuple[int, int]]) -> str:
    out = []
    for a, b in ranges:
        out.append(_escape(chr(a)) if a == b else f"{_escape(chr(a))}-{_escape(chr(b))}")
    return "".join(out)


@functools.lru_cache(maxsize=None)
def _category_ranges() -> dict[str, list[tuple[int, int]]]:
    """Code point ranges per general category (Lu, Mn, Nd ...), one pass."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    categories = map(unicodedata.category, map(chr, range(0x110000)))
    pos = 0
    for key, run in itertools.groupby(categories):
        n = sum(1 for _ in run)
        ranges.setdefault(key, []).append((pos, pos + n - 1))
        pos += n
    return ranges


#: Code point limits a class can be cut to. `re` matches a class of BMP chars with one
#: bitmap lookup, but tests the ranges above U+FFFF one by one (hundreds for \p{L}) on
#: every miss: a class cut to the BMP, used on text with no astral char, matches the same
#: chars 4-8x faster (the byte-level regex: 11 -> 2.7 us a fortune).
BMP = 0x10000
ALL = 0x110000


def _class(*keys: str, limit: int = ALL) -> str:
    table = _category_ranges()
    parts = []
    for key in keys:
        if len(key) == 1:  # a major letter covers its refined keys too
            parts.extend(r for k, rs in table.items() if k[0] == key for r in rs)
        else:
            parts.extend(table.get(key, ()))
    return _ranges_to_class([(a, min(b, limit - 1)) for a, b in sorted(parts) if a < limit])


_ASTRAL = re.compile("[\U00010000-\U0010FFFF]").search


def narrow(text: str) -> bool:
    """True when `text` has no char above U+FFFF (the BMP-cut classes then match alike).
    One regex search in C (`max(text)` made a str per char: 3.3 us for a Russian
    sentence, against 0.6 us)."""
    return text.isascii() or _ASTRAL(text) is None


@functools.lru_cache(maxsize=None)
def letters(limit: int = ALL) -> str:
    """\\p{L}"""
    return _class("L", limit=limit)


@functools.lru_cache(maxsize=None)
def numbers(limit: int = ALL) -> str:
    """\\p{N}"""
    return _class("N", limit=limit)


@functools.lru_cache(maxsize=None)
def punctuation(limit: int = ALL) -> str:
    """BERT punctuation: ASCII punctuation and \\p{P}."""
    return _class("P", limit=limit) + "".join(_escape(c) for c in ASCII_PUNCTUATION)


@functools.lru_cache(maxsize=None)
def other(limit: int = ALL) -> str:
    """\\p{C} (Cc, Cf, Cs, Co, Cn): what BERT's clean-text removes, minus \\t\\n\\r."""
    return _class("C", limit=limit)


@functools.lru_cache(maxsize=None)
def marks_nonspacing(limit: int = ALL) -> str:
    """\\p{Mn}"""
    return _class("Mn", limit=limit)


@functools.lru_cache(maxsize=None)
def word(limit: int = ALL) -> str:
    """Rust regex's Unicode \\w: letters, marks, Nd, Nl, Pc, joiners."""
    return _class("L", "M", "Nd", "Nl", "Pc", limit=limit) + "\u200c\u200d"


def whitespace() -> str:
    return "".join(_escape(c) if c not in "\t\n\x0b\x0c\r" else
                   {"\t": "\\t", "\n": "\\n", "\x0b": "\\x0b", "\x0c": "\\x0c", "\r": "\\r"}[c]
                   for c in WHITESPACE)


def cjk() -> str:
    return _ranges_to_class(list(CJK_RANGES))


def is_punctuation(c: str) -> bool:
    return c in ASCII_PUNCTUATION or unicodedata.category(c)[0] == "P"
