"""Pre-tokenizers of `tokenizer.json`: split a piece into words (pieces), keeping offsets.

reference: hf-tokenizers (pre_tokenizers/*.rs, tokenizer/pattern.rs and the split
behaviours of normalizer.rs).
"""
from __future__ import annotations

import functools
import re
from itertools import accumulate, chain
from operator import itemgetter
from typing import Any, Callable, Mapping

from ..errors import PipelineError
from . import unicode as uc
from .aligned import Piece, first_offset, prepend, slice_piece

BEHAVIOURS = ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")


def find_matches(pattern: re.Pattern, text: str, invert: bool = False
                 ) -> list[tuple[int, int, bool]]:
    """The text cut into (start, end, is_match) runs (empty matches ignored)."""
    out = []
    last = 0
    for m in pattern.finditer(text):
        s, e = m.span()
        if s == e:
            continue
        if s > last:
            out.append((last, s, invert))
        out.append((s, e, not invert))
        last = e
    if last < len(text):
        out.append((last, len(text), invert))
    return out


def apply_behaviour(runs: list[tuple[int, int, bool]], behaviour: str) -> list[tuple[int, int]]:
    """Char ranges to keep, merging the delimiter runs as `behaviour` says."""
    if behaviour == "Isolated":
        return [(s, e) for s, e, _ in runs]
    if behaviour == "Removed":
        return [(s, e) for s, e, m in runs if not m]
    acc: list[list[int]] = []
    previous = False
    if behaviour == "MergedWithPrevious":
        for s, e, m in runs:
            if m and not previous and acc:
                acc[-1][1] = e
            else:
                acc.append([s, e])
            previous = m
    elif behaviour == "MergedWithNext":
        for s, e, m in reversed(runs):
            if m and not previous and acc:
                acc[-1][0] = s
            else:
                acc.append([s, e])
            previous = m
        acc.reverse()
    elif behaviour == "Contiguous":
        for s, e, m in runs:
            if m == previous and acc:
                acc[-1][1] = e
            else:
                acc.append([s, e])
            previous = m
    return [(s, e) for s, e in acc]


class PreTokenizer:
    """Base: `split(text, offs) -> [pieces]`; `__call__(pieces)` flat-maps it."""

    def split(self, text: str, offs) -> list[Piece]:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, pieces: list[Piece]) -> list[Piece]:
        out = []
        for text, offs in pieces:
            out.extend(self.split(text, offs))
        return out


class RegexSplit(PreTokenizer):
    """Split on a compiled pattern with a split behaviour (Split, Punctuation, Digits...)."""

    def __init__(self, pattern: re.Pattern, behaviour: str, invert: bool = False):
        self.pattern, self.behaviour, self.invert = pattern, behaviour, invert

    def split(self, text, offs):
        if not text:
            return []
        bounds = apply_behaviour(find_matches(self.pattern, text, self.invert), self.behaviour)
        if len(bounds) == 1 and bounds[0] == (0, len(text)):
            return [(text, offs)]
        return [slice_piece(text, offs, s, e) for s, e in bounds if e > s]


class FindAll(PreTokenizer):
    """Keep the regex's matches only (whitespace between them removed): fast BERT/Whitespace.

    `pattern`: the regex over all of Unicode; `bmp`: the same with its classes cut to the
    BMP, used on text without astral chars (identical matches there, several times faster
    in `re`: see `unicode.BMP`)."""

    def __init__(self, pattern: re.Pattern, bmp: re.Pattern | None = None):
        # the chars between matches are whitespace (every pattern here matches any other
        # char), so one findall of (whitespace run, match) pairs and running sums of their
        # lengths give each word's start (no Match object per word)
        ws = uc.whitespace()
        self._pairs = re.compile(f"([{ws}]*)({pattern.pattern})").findall
        self._bmp_pairs = re.compile(f"([{ws}]*)({bmp.pattern})").findall if bmp else self._pairs

    def split(self, text, offs):
        pairs = (self._bmp_pairs if uc.narrow(text) else self._pairs)(text)
        if isinstance(offs, int):
            starts = list(accumulate(map(len, chain.from_iterable(pairs)), initial=offs))
            return list(zip(map(itemgetter(1), pairs), starts[1::2]))
        # per-char offsets (e.g. BERT's spaced-out CJK): each word takes its slice
        bounds = list(accumulate(map(len, chain.from_iterable(pairs)), initial=0))
        return [(w, offs[s:e]) for (_, w), s, e in zip(pairs, bounds[1::2], bounds[2::2])]


@functools.lru_cache(maxsize=None)
def _bert_pattern(limit: int = uc.ALL) -> re.Pattern:
    p, ws = uc.punctuation(limit), uc.whitespace()
    return re.compile(f"[{p}]|[^{ws}{p}]+")


@functools.lru_cache(maxsize=None)
def _whitespace_pattern(limit: int = uc.ALL) -> re.Pattern:
    w, ws = uc.word(limit), uc.whitespace()
    return re.compile(f"[{w}]+|[^{w}{ws}]+")


@functools.lru_cache(maxsize=None)
def _byte_level_pattern(limit: int = uc.ALL) -> re.Pattern:
    L, N, S = uc.letters(limit), uc.numbers(limit), uc.whitespace()
    return re.compile(
        f"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+|[{S}]+(?![^{S}])|[{S}]+")


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable char table."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + \
        list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_CHARS = bytes_to_unicode()
_ASCII_BYTES = {b: c for b, c in BYTE_CHARS.items() if b < 128 and chr(b) != c}


class ByteLevel(PreTokenizer):
    """Optional prefix space, GPT-2 regex split, then every UTF-8 byte -> one char."""

    def __init__(self, add_prefix_space=True, use_regex=True):
        self.add_prefix_space, self.use_regex = add_prefix_space, use_regex
        self._split = RegexSplit(_byte_level_pattern(), "Isolated") if use_regex else None
        self._findall_all = _byte_level_pattern().findall
        self._findall_bmp = _byte_level_pattern(uc.BMP).findall

    def __call__(self, pieces):
        return [byte_map(t, o) for t, o in self.raw_words(pieces)]

    def raw_words(self, pieces: list[Piece]) -> list[Piece]:
        """The words before the byte mapping (what `Tokenizer` caches its results by:
        `byte_word` maps one, and its offsets never need materializing per byte)."""
        out = []
        for text, offs in pieces:
            if self.use_regex and isinstance(offs, int) and text:
                out.extend(_identity_pieces(self.identity_words(text, offs), offs))
                continue
            if self.add_prefix_space and text and not text.startswith(" "):
                text, offs = prepend(text, offs, " ")
            out.extend(self._split.split(text, offs) if self._split else [(text, offs)])
        return out

    def identity_words(self, text: str, base: int) -> tuple[list[str], list[int], bool] | None:
        """The hot path, a piece with identity offsets from `base`: its words before the
        byte mapping, their starts, and whether a space was prepended (the first word's
        start is then `base - 1`, and that space takes the first char's range); None when
        the regex is off or the piece empty (`raw_words` then). The GPT-2 regex matches
        every char (its last branches take any whitespace, letter, number or other run),
        so the Isolated split is just its matches, contiguous: one C-level findall and
        running sums of their lengths give the words and starts (no Match object, no
        tuple per word)."""
        if not self.use_regex or not text:
            return None
        findall = self._findall_bmp if uc.narrow(text) else self._findall_all
        if not self.add_prefix_space or text.startswith(" "):
            words = findall(text)
            return words, list(accumulate(map(len, words), initial=base)), False
        words = findall(" " + text)
        return words, list(accumulate(map(len, words), initial=base - 1)), True

    def split(self, text, offs):
        return self([(text, offs)])


_BYTE_TRANSLATE: dict[int, str] = {}
_BYTE_WORDS: dict[str, tuple[str, list[int]]] = {}


def byte_word(text: str) -> tuple[str, list[int] | None]:
    """A word's byte-mapped text and, per mapped char, the index of the char it came from
    (None when every char is one byte: the identity)."""
    if text.isascii():
        return text.translate(_ASCII_BYTES), None
    table = _BYTE_TRANSLATE
    for c in set(text):
        if ord(c) not in table:
            table[ord(c)] = "".join(BYTE_CHARS[b] for b in c.encode("utf-8"))
    rel = []
    for i, c in enumerate(text):
        if c < "\x80":
            rel.append(i)
        else:
            rel += [i] * len(table[ord(c)])
    return text.translate(table), rel


def byte_map(text: str, offs) -> Piece:
    """Each UTF-8 byte -> its printable char; all bytes of a char keep the char's range."""
    if text.isascii():
        return text.translate(_ASCII_BYTES), offs
    hit = _BYTE_WORDS.get(text)
    if hit is None:
        if len(_BYTE_WORDS) > 20000:
            _BYTE_WORDS.clear()
        hit = _BYTE_WORDS[text] = byte_word(text)   # not ASCII: rel is a list
    out, rel = hit
    if isinstance(offs, int):
        return out, [(offs + i, offs + i + 1) for i in rel]
    return out, [offs[i] for i in rel]


def _identity_pieces(split: tuple[list[str], list[int], bool], base: int) -> list[Piece]:
    """`identity_words`' result (ByteLevel, Metaspace) as pieces: (word, start), except a
    first word with a prepended char, whose offsets are listed per char because that char
    takes the first char's range (NormalizedString::prepend)."""
    words, starts, prepended = split
    out = list(zip(words, starts))
    if prepended:
        out[0] = (words[0], [(base, base + 1)] + [(base + i, base + i + 1)
                                                  for i in range(len(words[0]) - 1)])
    return out


class Metaspace(PreTokenizer):
    """' ' -> replacement, prepend it (always / first piece / never), split before it."""

    def __init__(self, replacement="\u2581", prepend_scheme="always", split=True):
        self.replacement, self.prepend_scheme, self.split_ = replacement, prepend_scheme, split
        self._split = RegexSplit(re.compile(re.escape(replacement)), "MergedWithNext")
        # identity offsets, one-char replacement: the words (each replacement char starts
        # one, merged with what follows) are contiguous matches of one findall
        r = re.escape(replacement)
        self._findall = re.compile(f"{r}[^{r}]*|[^{r}]+").findall \
            if split and len(replacement) == 1 else None

    def identity_words(self, text: str, base: int) -> tuple[list[str], list[int], bool] | None:
        """A piece with identity offsets from `base`: its words, their starts, and whether
        the replacement was prepended (the first word's start is then `base - 1`, and the
        prepended char takes the first char's range), as `ByteLevel.identity_words`, so
        `Tokenizer._sequence` maps token spans to offsets by arithmetic (no per-char list
        for the first word: for Chinese that word is most of the sentence). None when not
        splitting on a one-char replacement, or for an empty piece."""
        if self._findall is None or not text:
            return None
        r = self.replacement
        text = text.replace(" ", r)
        if text.startswith(r) or not (
                self.prepend_scheme == "always" or (self.prepend_scheme == "first" and base == 0)):
            words = self._findall(text)
            return words, list(accumulate(map(len, words), initial=base)), False
        words = self._findall(r + text)
        return words, list(accumulate(map(len, words), initial=base - 1)), True

    def split(self, text, offs):
        if not text:
            return []
        if self._findall is not None and isinstance(offs, int):
            return _identity_pieces(self.identity_words(text, offs), offs)
        text = text.replace(" ", self.replacement)
        if not text.startswith(self.replacement) and (
                self.prepend_scheme == "always" or
                (self.prepend_scheme == "first" and first_offset(text, offs) == 0)):
            text, offs = prepend(text, offs, self.replacement)
        return self._split.split(text, offs) if self.split_ else [(text, offs)]


class Sequence(PreTokenizer):
    def __init__(self, parts: list[PreTokenizer]):
        self.parts = parts

    def __call__(self, pieces):
        for part in self.parts:
            pieces = part(pieces)
        return pieces

    def split(self, text, offs):
        return self([(text, offs)])


def _split_pattern(spec: Mapping[str, Any], where: str) -> re.Pattern:
    if "String" in spec:
        return re.compile(re.escape(spec["String"]))
    if "Regex" in spec:
        regex = spec["Regex"].replace("\\p{L}", uc.letters()).replace("\\p{N}", uc.numbers())
        try:
            return re.compile(regex)
        except re.error as e:
            raise PipelineError(f"{where}: regex {spec['Regex']!r} is not supported: {e}") from e
    raise PipelineError(f"{where}: pattern must have 'String' or 'Regex'")


def _behaviour(value: Any, where: str) -> str:
    if value not in BEHAVIOURS:
        raise PipelineError(f"{where}: split behaviour must be one of {list(BEHAVIOURS)}, "
                            f"got {value!r}")
    return value


def _metaspace(spec: Mapping[str, Any]) -> Metaspace:
    scheme = spec.get("prepend_scheme")
    if scheme is None:  # tokenizers < 0.14 wrote add_prefix_space
        scheme = "always" if spec.get("add_prefix_space", True) else "never"
    return Metaspace(spec.get("replacement", "\u2581"), scheme, spec.get("split", True))


def build(spec: Mapping[str, Any] | None, where: str = "tokenizer.json pre_tokenizer"
          ) -> PreTokenizer | None:
    """The pre-tokenizer a `tokenizer.json` "pre_tokenizer" object describes."""
    if spec is None:
        return None
    kind = spec.get("type")
    ws = uc.whitespace()
    makers: dict[str, Callable[[], PreTokenizer]] = {
        "BertPreTokenizer": lambda: FindAll(_bert_pattern(), _bert_pattern(uc.BMP)),
        "Whitespace": lambda: FindAll(_whitespace_pattern(), _whitespace_pattern(uc.BMP)),
        "WhitespaceSplit": lambda: FindAll(re.compile(f"[^{ws}]+")),
        "ByteLevel": lambda: ByteLevel(spec.get("add_prefix_space", True),
                                       spec.get("use_regex", True)),
        "Metaspace": lambda: _metaspace(spec),
        "Punctuation": lambda: RegexSplit(re.compile(f"[{uc.punctuation()}]"),
                                          _behaviour(spec.get("behavior", "Isolated"), where)),
        "Digits": lambda: RegexSplit(
            re.compile(f"[{uc.numbers()}]" if spec.get("individual_digits") else
                       f"[{uc.numbers()}]+"), "Isolated"),
        "Split": lambda: RegexSplit(_split_pattern(spec["pattern"], where),
                                    _behaviour(spec.get("behavior"), where),
                                    bool(spec.get("invert", False))),
        "CharDelimiterSplit": lambda: RegexSplit(re.compile(re.escape(spec["delimiter"])),
                                                 "Removed"),
        "Sequence": lambda: Sequence([p for p in (build(s, where)
                                                  for s in spec["pretokenizers"]) if p]),
    }
    maker = makers.get(kind)
    if maker is None:
        raise PipelineError(f"{where}: pre-tokenizer type {kind!r} is not supported "
                            f"(supported: {sorted(makers)})")
    return maker()
