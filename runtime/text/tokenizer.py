"""`Tokenizer`: a HF `tokenizer.json` (or a WordPiece `vocab.txt`) run in pure Python.

normalizer -> pre-tokenizer -> model -> post-processor, plus added/special tokens,
truncation and padding, with the same ids, type ids, attention masks and char offsets as
`tokenizers` (tested on real multilingual text). reference: hf-tokenizers 0.2x.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from ..errors import InputError, PipelineError
from . import models, normalizers, pretokenizers, processors
from .jsonfloat import serde_f64
from .processors import Encoding

TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second")
_JSON_STRATEGY = {"LongestFirst": "longest_first", "OnlyFirst": "only_first",
                  "OnlySecond": "only_second"}


@dataclass(frozen=True)
class Truncation:
    """Cut to `max_length` tokens, special tokens included (tokenizers' TruncationParams)."""

    max_length: int
    strategy: str = "longest_first"
    direction: str = "right"

    def __post_init__(self):
        if self.strategy not in TRUNCATION_STRATEGIES:
            raise PipelineError(f"truncation strategy must be one of {TRUNCATION_STRATEGIES}")
        if self.direction not in ("right", "left"):
            raise PipelineError("truncation direction must be 'right' or 'left'")


@dataclass(frozen=True)
class Padding:
    """`length=None`: pad a batch to its longest; an int: pad every text to it."""

    length: int | None = None
    pad_id: int = 0
    pad_type_id: int = 0
    pad_token: str = "[PAD]"
    direction: str = "right"
    multiple_of: int | None = None


@dataclass(frozen=True)
class AddedToken:
    id: int
    content: str
    special: bool = False
    single_word: bool = False
    lstrip: bool = False
    rstrip: bool = False
    normalized: bool = False


class _AddedVocabulary:
    """Finds added tokens in text: leftmost-longest, with lstrip/rstrip/single_word."""

    def __init__(self, tokens: Sequence[AddedToken]):
        self.by_content = {t.content: t for t in tokens}
        ordered = sorted(self.by_content, key=len, reverse=True)
        self.pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        # most texts hold none of the tokens' first chars ('[' '<'): no regex scan then
        self._firsts = frozenset(t[0] for t in ordered if t)

    def split(self, text: str) -> list[tuple[int, int, AddedToken | None]]:
        """(start, end, token-or-None) runs covering `text`."""
        if self.pattern is None or not text or self._firsts.isdisjoint(text):
            return [(0, len(text), None)]
        hits = []
        for m in self.pattern.finditer(text):
            token = self.by_content[m.group()]
            s, e = m.span()
            if token.single_word and ((s > 0 and _is_word(text[s - 1])) or
                                      (e < len(text) and _is_word(text[e]))):
                continue
            if token.lstrip:
                lo = hits[-1][1] if hits else 0
                while s > lo and text[s - 1].isspace():
                    s -= 1
            if token.rstrip:
                while e < len(text) and text[e].isspace():
                    e += 1
            if hits and s < hits[-1][1]:
                continue
            hits.append((s, e, token))
        if not hits:
            return [(0, len(text), None)]
        runs, last = [], 0
        for s, e, token in hits:
            if s > last:
                runs.append((last, s, None))
            runs.append((s, e, token))
            last = e
        if last < len(text):
            runs.append((last, len(text), None))
        return runs


def _is_word(c: str) -> bool:
    return c.isalnum() or c == "_"


class Tokenizer:
    """Encode text (or text pairs) into model inputs.

    Build with `Tokenizer.from_json(bytes_or_str)` or `Tokenizer.from_vocab_txt(...)`.
    `encode(text, pair=None)` -> Encoding; `encode_batch(texts)` pads to the batch.
    """

    def __init__(self, model: models.Model, normalizer=None, pre_tokenizer=None,
                 post_processor=None, added_tokens: Sequence[AddedToken] = (),
                 truncation: Truncation | None = None, padding: Padding | None = None):
        self.model = model
        self.normalizer = normalizer
        self.pre_tokenizer = pre_tokenizer
        self.post_processor = post_processor or processors.PostProcessor()
        self.added_tokens = tuple(added_tokens)
        raw = [t for t in self.added_tokens if not t.normalized]
        self._raw_added = _AddedVocabulary(raw)
        norm = []
        for t in self.added_tokens:
            if t.normalized:
                content = t.content
                if normalizer is not None:
                    content = normalizer.normalize(content, 0)[0]
                norm.append(AddedToken(t.id, content, t.special, t.single_word, t.lstrip,
                                       t.rstrip, True))
        self._norm_added = _AddedVocabulary(norm)
        self.truncation, self.padding = truncation, padding
        self._token_ids = {t.content: t.id for t in self.added_tokens}
        # byte-level BPE: results cached by the word before its byte mapping, with spans
        # in its chars, so a cached word costs one dict lookup (no per-byte offsets)
        raw_words = getattr(pre_tokenizer, "raw_words", None)
        self._split_words = raw_words or pre_tokenizer
        # (a closure, not a bound method of self: that made a reference cycle, so every
        # dropped Tokenizer and its 10,000-word cache waited for a full GC collection)
        self._byte_cache: dict[str, tuple[tuple, tuple, tuple]] = {}  # see models.frozen
        self._word_ids = _byte_level_words(model, self._byte_cache) if raw_words else \
            model.tokenize_cached
        # the cache `_word_ids` fills, looked up in `_sequence` itself (no call per hit)
        self._word_cache = self._byte_cache if raw_words else model._cache
        # pieces with identity offsets (byte-level, Metaspace): words and starts in two
        # lists, the prepended char's offsets by arithmetic
        self._identity_words = getattr(pre_tokenizer, "identity_words", None)

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_json(cls, data: bytes | str | Mapping[str, Any]) -> "Tokenizer":
        """Read a `tokenizer.json` (bytes or text; a parsed object only if it was parsed
        with `parse_float=serde_f64`, else Unigram scores may differ by one ulp)."""
        if isinstance(data, (bytes, bytearray)):
            data = data.decode("utf-8")
        if isinstance(data, str):
            try:
                data = json.loads(data, parse_float=serde_f64)
            except ValueError as e:
                raise PipelineError(f"tokenizer.json is not valid JSON: {e}") from e
        if not isinstance(data, Mapping) or "model" not in data:
            raise PipelineError("tokenizer.json has no 'model'; is it a HF tokenizers file?")
        if data.get("decoder") is None:
            pass  # decoding back to text is not needed on the device
        added = [AddedToken(int(t["id"]), t["content"], bool(t.get("special", False)),
                            bool(t.get("single_word", False)), bool(t.get("lstrip", False)),
                            bool(t.get("rstrip", False)), bool(t.get("normalized", False)))
                 for t in data.get("added_tokens") or ()]
        trunc = data.get("truncation")
        truncation = None
        if trunc:
            truncation = Truncation(int(trunc["max_length"]),
                                    _JSON_STRATEGY.get(trunc.get("strategy"), "longest_first"),
                                    str(trunc.get("direction", "Right")).lower())
        pad = data.get("padding")
        padding = None
        if pad:
            strategy = pad.get("strategy")
            length = strategy.get("Fixed") if isinstance(strategy, Mapping) else None
            padding = Padding(length, int(pad.get("pad_id", 0)), int(pad.get("pad_type_id", 0)),
                              pad.get("pad_token", "[PAD]"),
                              str(pad.get("direction", "Right")).lower(),
                              pad.get("pad_to_multiple_of"))
        return cls(models.build(data["model"]), normalizers.build(data.get("normalizer")),
                   pretokenizers.build(data.get("pre_tokenizer")),
                   processors.build(data.get("post_processor")), added, truncation, padding)

    @classmethod
    def from_vocab_txt(cls, data: bytes | str, lowercase: bool = True,
                       strip_accents: bool | None = None, unk_token="[UNK]", cls_token="[CLS]",
                       sep_token="[SEP]", pad_token="[PAD]", mask_token="[MASK]"
                       ) -> "Tokenizer":
        """A BERT WordPiece tokenizer from a plain `vocab.txt` (one token per line)."""
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        vocab: dict[str, int] = {}
        for line in text.split("\n"):
            token = line.rstrip("\r")
            if token and token not in vocab:
                vocab[token] = len(vocab)
        specials = [t for t in (pad_token, unk_token, cls_token, sep_token, mask_token)
                    if t in vocab]
        for needed in (cls_token, sep_token, unk_token):
            if needed not in vocab:
                raise PipelineError(f"vocab.txt has no {needed!r} token")
        processor = processors.Bert((sep_token, vocab[sep_token]), (cls_token, vocab[cls_token]))
        return cls(models.WordPiece(vocab, unk_token),
                   normalizers.BertNormalizer(True, True, strip_accents, lowercase),
                   pretokenizers.build({"type": "BertPreTokenizer"}), processor,
                   [AddedToken(vocab[t], t, special=True) for t in specials],
                   padding=Padding(pad_token=pad_token, pad_id=vocab.get(pad_token, 0)))

    def token_to_id(self, token: str) -> int | None:
        hit = self._token_ids.get(token)
        return hit if hit is not None else self.model.token_to_id(token)

    # -- encoding ------------------------------------------------------------------------
    def _sequence(self, text: str, type_id: int, keep: int | None = None) -> Encoding:
        """`keep`: only the first `keep` tokens will be kept (right truncation of a single
        text): once there are that many, the words after them are not tokenized. A word's
        tokens do not depend on the words after it (the whole text is still normalized and
        split into words), so the first `keep` tokens are those of the whole text: a long
        document cut to 128 tokens costs its first 128 tokens, not all of them."""
        ids: list[int] = []
        tokens: list[str] = []
        offsets: list[tuple[int, int]] = []
        normalizer, pre, tokenize = self.normalizer, self._split_words, self._word_ids
        cached = self._word_cache.get
        identity = self._identity_words
        for start, end, added in self._raw_added.split(text):
            if keep is not None and len(ids) >= keep:
                break
            if added is not None:
                ids.append(added.id)
                tokens.append(added.content)
                offsets.append((start, end))
                continue
            piece = (text[start:end], start)
            if normalizer is not None:
                piece = normalizer.normalize(*piece)
            for norm_piece, added2 in self._normalized_runs(piece):
                if added2 is not None:
                    ntext, noffs = norm_piece
                    ids.append(added2.id)
                    tokens.append(self.added_content(added2.id, ntext))
                    offsets.append(_span(noffs, 0, len(ntext)))
                    continue
                split = identity(*norm_piece) if identity is not None and keep is None \
                    and type(norm_piece[1]) is int else None
                if split is not None:
                    _add_identity_words(split, cached, tokenize, ids, tokens, offsets)
                    continue
                words = pre([norm_piece]) if pre is not None else [norm_piece]
                if keep is not None and len(words) > keep - len(ids):
                    words = _until_full(words, ids, keep)
                for word, offs in words:
                    if not word:
                        continue
                    w_ids, w_tokens, w_spans = cached(word) or tokenize(word)
                    ids += w_ids
                    tokens += w_tokens
                    if type(offs) is int:
                        if len(w_spans) == 1:  # most words: one token, no list built
                            s, e = w_spans[0]
                            offsets.append((offs + s, offs + e))
                        else:
                            offsets += [(offs + s, offs + e) for s, e in w_spans]
                    elif len(w_spans) == 1:  # e.g. each CJK char a word (BERT)
                        s, e = w_spans[0]
                        offsets.append((offs[s][0], offs[e - 1][1]))
                    else:
                        offsets += [(offs[s][0], offs[e - 1][1]) for s, e in w_spans]
        n = len(ids)
        # as tokenizers: special tokens written in the text are not in the special mask;
        # only those the post-processor adds are
        return Encoding(ids, [type_id] * n, tokens, offsets, [0] * n, [1] * n)

    def added_content(self, token_id: int, fallback: str) -> str:
        for t in self.added_tokens:
            if t.id == token_id:
                return t.content
        return fallback

    def _normalized_runs(self, piece):
        text, offs = piece
        if self._norm_added.pattern is None:
            return [(piece, None)]
        out = []
        for s, e, added in self._norm_added.split(text):
            out.append(((text[s:e], offs + s if isinstance(offs, int) else offs[s:e]), added))
        return out

    def encode(self, text: str, pair: str | None = None, add_special_tokens: bool = True,
               truncation: Truncation | None | bool = True,
               padding: Padding | None | bool = True) -> Encoding:
        """One text (or pair) -> Encoding. `truncation`/`padding` True: the tokenizer's own
        settings; None/False: off; or explicit settings."""
        if not isinstance(text, str) or (pair is not None and not isinstance(pair, str)):
            raise InputError(f"text to tokenize must be str, got {type(text).__name__}")
        trunc = self.truncation if truncation is True else (truncation or None)
        pad = self.padding if padding is True else (padding or None)
        a = self._sequence(text, 0, self._kept(trunc, pair, add_special_tokens))
        b = self._sequence(pair, 1) if pair is not None else None
        if trunc is not None:
            self._truncate(a, b, trunc, add_special_tokens)
        enc = self.post_processor.process(a, b, add_special_tokens)
        if pad is not None:
            pad_batch([enc], pad)
        return enc

    def encode_batch(self, texts: Sequence[str | tuple[str, str]],
                     add_special_tokens: bool = True,
                     truncation: Truncation | None | bool = True,
                     padding: Padding | None | bool = True) -> list[Encoding]:
        """Several texts (or (text, pair) tuples), padded together."""
        pad = self.padding if padding is True else (padding or None)
        out = []
        for item in texts:
            if isinstance(item, (tuple, list)):
                if len(item) != 2:
                    raise InputError("a text pair must be (text, pair)")
                out.append(self.encode(item[0], item[1], add_special_tokens, truncation, None))
            else:
                out.append(self.encode(item, None, add_special_tokens, truncation, None))
        if pad is not None:
            pad_batch(out, pad)
        return out

    def _kept(self, t: Truncation | None, pair: str | None, add_special: bool) -> int | None:
        """How many tokens of a single text `_truncate` will keep from its start (None:
        not known before tokenizing: no truncation, a pair, left truncation, or a limit
        `_truncate` refuses)."""
        if t is None or pair is not None or t.direction != "right" or \
                t.strategy == "only_second":
            return None
        limit = t.max_length - (self.post_processor.added(False) if add_special else 0)
        return limit if limit >= 1 else None

    def _truncate(self, a: Encoding, b: Encoding | None, t: Truncation, add_special: bool):
        added = self.post_processor.added(b is not None) if add_special else 0
        if t.max_length < added:
            raise InputError(f"truncation max_length {t.max_length} is shorter than the "
                             f"{added} special tokens this tokenizer adds")
        limit = t.max_length - added
        total = len(a) + (len(b) if b is not None else 0)
        if total <= limit:
            return
        if t.strategy == "longest_first":
            if b is None:
                a.truncate(limit, t.direction)
                return
            n1, n2 = len(a), len(b)
            swap = n1 > n2
            if swap:
                n1, n2 = n2, n1
            n2 = n1 if n1 > limit else max(n1, limit - n1)
            if n1 + n2 > limit:
                n1 = limit // 2
                n2 = n1 + limit % 2
            if swap:
                n1, n2 = n2, n1
            a.truncate(n1, t.direction)
            b.truncate(n2, t.direction)
            return
        target = a if t.strategy == "only_first" else b
        if target is None:
            raise InputError("truncation 'only_second' needs a text pair")
        remove = total - limit
        if len(target) <= remove:
            raise InputError(f"cannot truncate to {t.max_length} tokens with strategy "
                             f"{t.strategy!r}: that sequence is too short")
        target.truncate(len(target) - remove, t.direction)


def _until_full(words: list, ids: list, keep: int):
    """`words` while `ids` (filled by the caller as it goes) holds fewer than `keep` tokens:
    checked per word, so a word that gives no token (a char-level BPE without an unknown
    token drops unknown chars) does not end the text early."""
    for item in words:
        if len(ids) >= keep:
            return
        yield item


def _add_identity_words(split: tuple[list[str], list[int], bool], cached, tokenize,
                        ids: list, tokens: list, offsets: list) -> None:
    """`_sequence`'s word loop for a piece with identity offsets (`identity_words` of
    ByteLevel or Metaspace): the words' ids, tokens and char offsets appended."""
    words, starts, prepended = split
    if prepended:
        # the prepended char takes the first char's range: word char 0 -> (base, base +
        # 1), char i >= 1 -> (base + i - 1, base + i), as the offsets `raw_words` lists
        word, base = words[0], starts[0] + 1
        w_ids, w_tokens, w_spans = cached(word) or tokenize(word)
        ids += w_ids
        tokens += w_tokens
        for s, e in w_spans:
            offsets.append((base + s - 1 if s else base, base + e - 1 if e > 1 else base + 1))
        words, starts = words[1:], starts[1:]
    for word, base in zip(words, starts):
        w_ids, w_tokens, w_spans = cached(word) or tokenize(word)
        ids += w_ids
        tokens += w_tokens
        if len(w_spans) == 1:  # most words: one token
            s, e = w_spans[0]
            offsets.append((base + s, base + e))
        else:  # (a plain loop: a comprehension is a call, dearer for 2-3 tokens)
            for s, e in w_spans:
                offsets.append((base + s, base + e))


def _byte_level_words(model: models.Model, cache: dict):
    """`word -> (ids, tokens, char spans in word)` for one pre-byte-mapping word that
    `_sequence` did not find in `cache`; cached there (where there is room, as
    tokenizers: a full cache takes no more)."""
    byte_level = getattr(model, "byte_level", None)

    def word_ids(word: str) -> tuple[tuple, tuple, tuple]:
        hit = byte_level(word) if byte_level is not None else None
        if hit is None:  # not a byte-level BPE model: tokenize the mapped chars
            mapped, rel = pretokenizers.byte_word(word)
            tokens = model.tokenize(mapped)
            if rel is None:
                spans = [(t[2], t[3]) for t in tokens]
            else:
                spans = [(rel[t[2]], rel[t[3] - 1] + 1) for t in tokens]
            hit = models.frozen([t[0] for t in tokens], [t[1] for t in tokens], spans)
        # (a byte-level BPE returns tuples already: see `models.frozen`)
        if len(cache) < models.CACHE_LIMIT:
            cache[word] = hit
        return hit
    return word_ids


def _span(offs, i, j):
    if isinstance(offs, int):
        return (offs + i, offs + j)
    return (offs[i][0], offs[j - 1][1])


def pad_batch(encodings: list[Encoding], pad: Padding) -> None:
    """Pad every encoding to the fixed length or to the longest, in place."""
    if not encodings:
        return
    length = pad.length if pad.length is not None else max(len(e) for e in encodings)
    if pad.multiple_of and length % pad.multiple_of:
        length += pad.multiple_of - length % pad.multiple_of
    for e in encodings:
        e.pad(length, pad.pad_id, pad.pad_type_id, pad.pad_token, pad.direction)
