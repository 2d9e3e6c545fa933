"""Normalizers of `tokenizer.json`, one small class per type; each maps a piece to a piece.

A piece is `(text, offs)` (see `aligned`). Every class reproduces the `tokenizers` 0.2x
normalizer of the same name, including how each change moves offsets.
reference: hf-tokenizers (normalizers/*.rs).
"""
from __future__ import annotations

import re
import unicodedata
from itertools import chain, repeat
from typing import Any, Callable, Mapping

from ..errors import PipelineError
from . import unicode as uc
from .aligned import Piece, filter_chars, materialize, prepend, transform


class Normalizer:
    """Base: `normalize(text, offs) -> (text, offs)`."""

    def normalize(self, text: str, offs) -> Piece:  # pragma: no cover - interface
        raise NotImplementedError


class Sequence(Normalizer):
    def __init__(self, parts: list[Normalizer]):
        self.parts = parts

    def normalize(self, text, offs):
        for part in self.parts:
            text, offs = part.normalize(text, offs)
        return text, offs


class Lowercase(Normalizer):
    """Per-char `char::to_lowercase` (no final-sigma rule, unlike `str.lower`)."""

    def normalize(self, text, offs):
        low = text.lower()
        if len(low) == len(text) and "\u03a3" not in text:
            return low, offs
        dest = []
        for c in text:
            for i, lc in enumerate(c.lower() if c != "\u03a3" else "\u03c3"):
                dest.append((lc, 1 if i else 0))
        return transform(text, offs, dest)


_MEMO: dict[str, dict[str, str]] = {}
_TABLES: dict[str, dict[int, str]] = {}  # the same per form, keyed by code point (translate)
_ODD: dict[str, set[str]] = {}  # per form, the chars that do not map to exactly one
_PLAIN: dict[str, dict[int, None]] = {}  # per form, code point -> None: chars that do


def unicode_normalize(form: str, text: str, offs) -> Piece:
    """NFD/NFKD/NFC/NFKC with per-char changes, as `unicode-normalization-alignments`.

    Decompositions are char by char (first char replaces, the rest are inserted);
    compositions work on clusters (a starter and the marks after it).
    """
    if unicodedata.is_normalized(form, text):
        return text, offs
    # Fast path: char by char (what the alignment rules give for one-char clusters),
    # valid whenever it equals normalizing the whole text (no composition across chars).
    memo = _MEMO.setdefault(form, {})
    table, odd = _TABLES.setdefault(form, {}), _ODD.setdefault(form, set())
    # the chars not yet known to map to exactly one char, by one C-level translate that
    # drops the known ones (a set of the text's chars made a str object per char)
    plain = _PLAIN.setdefault(form, {})
    rest = text.translate(plain)
    if rest:
        for c in set(rest).difference(memo):
            n = memo[c] = table[ord(c)] = unicodedata.normalize(form, c)
            if len(n) != 1:
                odd.add(c)
            else:
                plain[ord(c)] = None
    out = text.translate(table)  # C-level, as joining memo[c] per char
    if out == unicodedata.normalize(form, text):
        if not rest or odd.isdisjoint(rest):  # every char maps to one: offsets unchanged
            return out, offs
        parts = [memo[c] for c in text]
        new = []
        for a, part in zip(materialize(offs, len(text)), parts):
            new.extend([a] * len(part))
        return out, new
    dest: list[tuple[str, int]] = []
    if form in ("NFD", "NFKD"):
        for c in text:
            d = unicodedata.normalize(form, c)
            dest.extend((ch, 1 if i else 0) for i, ch in enumerate(d))
        result = "".join(ch for ch, _ in dest)
        if result != unicodedata.normalize(form, text):  # marks reordered across chars
            return _whole(form, text, offs)
        return transform(text, offs, dest)
    clusters = []
    for c in text:
        if clusters and unicodedata.combining(c):
            clusters[-1] += c
        else:
            clusters.append(c)
    for cluster in clusters:
        n = unicodedata.normalize(form, cluster)
        m, k = len(cluster), len(n)
        if k <= m:
            dest.extend((ch, 0) for ch in n[:-1])
            if k:
                dest.append((n[-1], -(m - k)))
        else:
            dest.extend((ch, 0) for ch in n[:m])
            dest.extend((ch, 1) for ch in n[m:])
    result = "".join(ch for ch, _ in dest)
    if result != unicodedata.normalize(form, text):
        return _whole(form, text, offs)
    return transform(text, offs, dest)


def _whole(form: str, text: str, offs) -> Piece:
    """Fallback when per-char normalization differs: every char spans the whole text."""
    out = unicodedata.normalize(form, text)
    old = materialize(offs, len(text))
    whole = (old[0][0], old[-1][1]) if old else (0, 0)
    return out, [whole] * len(out)


class UnicodeNormalizer(Normalizer):
    def __init__(self, form: str):
        self.form = form

    def normalize(self, text, offs):
        return unicode_normalize(self.form, text, offs)


class StripAccents(Normalizer):
    """Remove non-spacing marks (\\p{Mn}); meant to follow NFD/NFKD."""

    def __init__(self):
        self._marks = re.compile("[" + uc.marks_nonspacing() + "]")

    def normalize(self, text, offs):
        if text.isascii() or not self._marks.search(text):
            return text, offs
        return filter_chars(text, offs, lambda c: unicodedata.category(c) != "Mn")


class Strip(Normalizer):
    def __init__(self, left: bool = True, right: bool = True):
        self.left, self.right = left, right

    def normalize(self, text, offs):
        i, j = 0, len(text)
        ws = uc.WHITESPACE_SET
        if self.left:
            while i < j and text[i] in ws:
                i += 1
        if self.right:
            while j > i and text[j - 1] in ws:
                j -= 1
        if (i, j) == (0, len(text)):
            return text, offs
        return text[i:j], (offs + i if isinstance(offs, int) else offs[i:j])


class Prepend(Normalizer):
    def __init__(self, content: str):
        self.content = content

    def normalize(self, text, offs):
        return prepend(text, offs, self.content)


class Replace(Normalizer):
    """Replace every match of a string or regex; new chars take the last matched char's range."""

    def __init__(self, pattern: re.Pattern, content: str, literal: str | None = None):
        self.pattern, self.content = pattern, content
        self.literal = literal  # a String pattern: `in` rules out a match ~10x faster

    def normalize(self, text, offs):
        if self.literal is not None and self.literal not in text:
            return text, offs
        matches = [m.span() for m in self.pattern.finditer(text) if m.end() > m.start()]
        if not matches:
            return text, offs
        if len(self.content) == 1 and all(e - s == 1 for s, e in matches):
            chars = list(text)
            for s, _ in matches:
                chars[s] = self.content
            return "".join(chars), offs
        old = materialize(offs, len(text))
        out, new, last = [], [], 0
        for s, e in matches:
            out.append(text[last:s])
            new.extend(old[last:s])
            out.append(self.content)
            new.extend([old[e - 1]] * len(self.content))
            last = e
        out.append(text[last:])
        new.extend(old[last:])
        return "".join(out), new


class BertNormalizer(Normalizer):
    """clean_text, handle_chinese_chars, strip_accents (None: follow lowercase), lowercase."""

    def __init__(self, clean_text=True, handle_chinese_chars=True, strip_accents=None,
                 lowercase=True):
        self.clean_text = clean_text
        self.handle_chinese_chars = handle_chinese_chars
        self.strip_accents = lowercase if strip_accents is None else strip_accents
        self.lowercase = Lowercase() if lowercase else None
        self._cjk = re.compile("[" + uc.cjk() + "]")
        self._ascii_control = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
        # \t \n \r count as whitespace, not control, in BERT's clean-text
        self._spaces = {ord(c): " " for c in uc.WHITESPACE}
        self._memo: dict[str, str] = {}
        self._table: dict[int, str] = {}  # the memo keyed by code point (str.translate)
        self._odd: set[str] = set()

    def _map(self, c: str) -> str:
        """What one original char becomes (every output char keeps its range)."""
        if self.clean_text:
            if c in "\t\n\r":
                return " "
            if c == "\x00" or c == "\ufffd" or unicodedata.category(c)[0] == "C":
                return ""
            if c in uc.WHITESPACE_SET:
                return " "
        s = c
        if self.handle_chinese_chars and self._cjk.fullmatch(c):
            s = " " + c + " "
        if self.strip_accents:
            s = "".join(x for x in unicodedata.normalize("NFD", s)
                        if unicodedata.category(x) != "Mn")
        if self.lowercase:
            s = "".join("\u03c3" if x == "\u03a3" else x.lower() for x in s)
        return s

    def normalize(self, text, offs):
        # Each stage maps one char to chars that all keep its range, so the stages fuse
        # into one per-char table (NFD's reordering of marks across chars is the only
        # difference, and stripping removes those marks).
        if text.isascii() and not self._ascii_control.search(text):
            text = text.translate(self._spaces)
            return (text.lower(), offs) if self.lowercase else (text, offs)
        memo = self._memo
        for c in set(text).difference(memo):
            m = memo[c] = self._table[ord(c)] = self._map(c)
            if len(m) != 1:
                self._odd.add(c)
        out = text.translate(self._table)
        if self._odd.isdisjoint(text):
            return out, offs
        # every output char of a char keeps its range: each range repeated as many times
        # as its char's output is long (C-level, no Python loop per char)
        old = materialize(offs, len(text))
        return out, list(chain.from_iterable(map(repeat, old, map(len, map(memo.__getitem__,
                                                                           text)))))


def _pattern(spec: Mapping[str, Any], where: str) -> re.Pattern:
    if "String" in spec:
        return re.compile(re.escape(spec["String"]))
    if "Regex" in spec:
        try:
            return re.compile(spec["Regex"])
        except re.error as e:
            raise PipelineError(f"{where}: regex {spec['Regex']!r} is not supported: {e}") from e
    raise PipelineError(f"{where}: pattern must have 'String' or 'Regex', got {dict(spec)}")


def build(spec: Mapping[str, Any] | None, where: str = "tokenizer.json normalizer"
          ) -> Normalizer | None:
    """The normalizer described by a `tokenizer.json` "normalizer" object (None: none)."""
    if spec is None:
        return None
    kind = spec.get("type")
    makers: dict[str, Callable[[], Normalizer]] = {
        "Sequence": lambda: Sequence([n for n in (build(s, where) for s in spec["normalizers"])
                                      if n is not None]),
        "Lowercase": Lowercase,
        "NFD": lambda: UnicodeNormalizer("NFD"), "NFKD": lambda: UnicodeNormalizer("NFKD"),
        "NFC": lambda: UnicodeNormalizer("NFC"), "NFKC": lambda: UnicodeNormalizer("NFKC"),
        "StripAccents": StripAccents,
        "Strip": lambda: Strip(spec.get("strip_left", True), spec.get("strip_right", True)),
        "Prepend": lambda: Prepend(spec["prepend"]),
        "Replace": lambda: Replace(_pattern(spec["pattern"], where), spec["content"],
                                   spec["pattern"].get("String") or None),
        "BertNormalizer": lambda: BertNormalizer(
            spec.get("clean_text", True), spec.get("handle_chinese_chars", True),
            spec.get("strip_accents"), spec.get("lowercase", True)),
    }
    maker = makers.get(kind)
    if maker is None:
        raise PipelineError(f"{where}: normalizer type {kind!r} is not supported (supported: "
                            f"{sorted(makers)})")
    return maker()
