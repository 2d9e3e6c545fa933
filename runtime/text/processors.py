"""Post-processors of `tokenizer.json`: special tokens, type ids, byte-level offset trimming.

An `Encoding` is plain parallel lists (ids, type ids, tokens, offsets, special-token mask,
attention mask). reference: hf-tokenizers (processors/*.rs), tokenizers 0.2x.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import PipelineError
from .unicode import WHITESPACE


class Encoding:
    """One tokenized text (or pair), as tokenizers' `Encoding` (char offsets)."""

    __slots__ = ("ids", "type_ids", "tokens", "offsets", "special_tokens_mask",
                 "attention_mask")

    def __init__(self, ids, type_ids, tokens, offsets, special=None, attention=None):
        self.ids, self.type_ids, self.tokens, self.offsets = ids, type_ids, tokens, offsets
        self.special_tokens_mask = special if special is not None else [0] * len(ids)
        self.attention_mask = attention if attention is not None else [1] * len(ids)

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def concat(parts: list["Encoding"]) -> "Encoding":
        out = Encoding([], [], [], [], [], [])
        for p in parts:
            out.ids += p.ids
            out.type_ids += p.type_ids
            out.tokens += p.tokens
            out.offsets += p.offsets
            out.special_tokens_mask += p.special_tokens_mask
            out.attention_mask += p.attention_mask
        return out

    def truncate(self, length: int, direction: str = "right") -> None:
        if length >= len(self.ids):
            return
        cut = slice(0, length) if direction == "right" else slice(len(self.ids) - length, None)
        for name in self.__slots__:
            setattr(self, name, getattr(self, name)[cut])

    def pad(self, length: int, pad_id: int, pad_type_id: int, pad_token: str,
            direction: str = "right") -> None:
        n = length - len(self.ids)
        if n <= 0:
            return
        pads = {"ids": [pad_id] * n, "type_ids": [pad_type_id] * n, "tokens": [pad_token] * n,
                "offsets": [(0, 0)] * n, "special_tokens_mask": [1] * n,
                "attention_mask": [0] * n}
        for name, extra in pads.items():
            value = getattr(self, name)
            setattr(self, name, value + extra if direction == "right" else extra + value)


def _special_part(ids, tokens, type_id: int) -> tuple:
    """A run of special tokens as `_assemble` takes it (built once per processor)."""
    n = len(ids)
    return (list(ids), list(tokens), [(0, 0)] * n, [1] * n, [1] * n, type_id)


def _sequence_part(enc: Encoding, type_id: int) -> tuple:
    return (enc.ids, enc.tokens, enc.offsets, enc.special_tokens_mask, enc.attention_mask,
            type_id)


def _assemble(parts) -> Encoding:
    """One Encoding from (ids, tokens, offsets, special mask, attention mask, type id)
    parts, each list extended once (no Encoding per part: the post-processing of a
    sentence took ~9 us of a ~50 us encode with them)."""
    ids, type_ids, tokens, offsets, special, attention = [], [], [], [], [], []
    for p_ids, p_tokens, p_offsets, p_special, p_attention, type_id in parts:
        ids += p_ids
        type_ids += [type_id] * len(p_ids)
        tokens += p_tokens
        offsets += p_offsets
        special += p_special
        attention += p_attention
    return Encoding(ids, type_ids, tokens, offsets, special, attention)


def _wrapper(plan) -> tuple | None:
    """A single-sequence plan of `_assemble` parts that is special parts around one $A,
    as (head, tail, $A's type id), head and tail each the `_assemble` of their parts;
    None for any other plan."""
    seq = [k for k, p in enumerate(plan) if len(p) != 6]
    if len(seq) != 1 or plan[seq[0]][0] != "A":
        return None
    k = seq[0]
    return _assemble(plan[:k]), _assemble(plan[k + 1:]), plan[k][1]


def _wrap(enc: Encoding, wrapper: tuple) -> Encoding:
    """`_assemble` of a single sequence between special tokens: one concatenation per
    field (the parts loop cost a fifth of a cached byte-level sentence)."""
    head, tail, type_id = wrapper
    return Encoding(head.ids + enc.ids + tail.ids,
                    head.type_ids + [type_id] * len(enc.ids) + tail.type_ids,
                    head.tokens + enc.tokens + tail.tokens,
                    head.offsets + enc.offsets + tail.offsets,
                    head.special_tokens_mask + enc.special_tokens_mask
                    + tail.special_tokens_mask,
                    head.attention_mask + enc.attention_mask + tail.attention_mask)


def _cls_sep_wrapper(cls: tuple, sep: tuple) -> tuple:
    """`_wrapper` of "<cls> $A <sep>", all type id 0 (`cls`, `sep`: (id, token))."""
    return _wrapper([_special_part([cls[0]], [cls[1]], 0), ("A", 0),
                     _special_part([sep[0]], [sep[1]], 0)])


class PostProcessor:
    """Base: `process(a, b, add_special_tokens)`; `added(is_pair)` counts its special tokens."""

    def added(self, is_pair: bool) -> int:
        return 0

    def process(self, a: Encoding, b: Encoding | None, add_special_tokens: bool) -> Encoding:
        return Encoding.concat([a, b]) if b is not None else a


def default_process(a: Encoding, b: Encoding | None) -> Encoding:
    return Encoding.concat([a, b]) if b is not None else a


class Template(PostProcessor):
    """TemplateProcessing: e.g. single "[CLS] $A [SEP]", pair "[CLS] $A [SEP] $B:1 [SEP]:1"."""

    def __init__(self, single: list, pair: list, special_tokens: Mapping[str, Any]):
        self.single, self.pair = single, pair
        self.special = {name: (list(t["ids"]), list(t["tokens"]))
                        for name, t in special_tokens.items()}
        for piece in single + pair:
            if "SpecialToken" in piece and piece["SpecialToken"]["id"] not in self.special:
                raise PipelineError(f"template uses special token "
                                    f"{piece['SpecialToken']['id']!r} with no ids")
        self._single_plan, self._pair_plan = self._plan(single), self._plan(pair)
        self._single_wrap = _wrapper(self._single_plan)

    def added(self, is_pair):
        return sum(len(self.special[p["SpecialToken"]["id"]][0])
                   for p in (self.pair if is_pair else self.single) if "SpecialToken" in p)

    def _plan(self, pieces: list) -> list:
        """Each template piece as a ready special-token part or ("A"|"B", type id)."""
        plan = []
        for piece in pieces:
            if "SpecialToken" in piece:
                t = piece["SpecialToken"]
                ids, tokens = self.special[t["id"]]
                plan.append(_special_part(ids, tokens, t["type_id"]))
            else:
                plan.append((piece["Sequence"]["id"], piece["Sequence"]["type_id"]))
        return plan

    def process(self, a, b, add_special_tokens):
        if not add_special_tokens:
            return default_process(a, b)
        if b is None and self._single_wrap is not None:
            return _wrap(a, self._single_wrap)
        plan = self._single_plan if b is None else self._pair_plan
        return _assemble([p if len(p) == 6 else _sequence_part(a if p[0] == "A" else b, p[1])
                          for p in plan])


class Bert(PostProcessor):
    def __init__(self, sep, cls):
        self.sep, self.cls = (sep[1], sep[0]), (cls[1], cls[0])
        self._single_wrap = _cls_sep_wrapper(self.cls, self.sep)

    def added(self, is_pair):
        return 3 if is_pair else 2

    def process(self, a, b, add_special_tokens):
        if not add_special_tokens:
            return default_process(a, b)
        if b is None:
            return _wrap(a, self._single_wrap)
        (sep_id, sep), (cls_id, cls) = self.sep, self.cls
        parts = [_special_part([cls_id], [cls], 0), _sequence_part(a, 0),
                 _special_part([sep_id], [sep], 0)]
        if b is not None:
            parts += [_sequence_part(b, 1), _special_part([sep_id], [sep], 1)]
        return _assemble(parts)


_TRIM = "\u0120" + WHITESPACE


_TRIMS: dict[str, tuple[int, int]] = {}
# the two commonest counts as shared objects, told apart by identity in the loop
_NO_TRIM, _LEAD_ONE = (0, 0), (1, 0)


def _trim_counts(token: str) -> tuple[int, int]:
    hit = _TRIMS.get(token)
    if hit is None:
        lead = len(token) - len(token.lstrip(_TRIM))
        trail = len(token) - len(token.rstrip(_TRIM))
        if len(_TRIMS) > 50000:
            _TRIMS.clear()
        hit = (lead, trail)
        hit = _TRIMS[token] = _NO_TRIM if hit == _NO_TRIM else _LEAD_ONE if hit == _LEAD_ONE \
            else hit
    return hit


def trim_offsets(enc: Encoding, add_prefix_space: bool) -> None:
    """ByteLevel's trim: offsets exclude the leading/trailing spaces a token carries."""
    offsets = enc.offsets
    trims = _TRIMS
    for i, token in enumerate(enc.tokens):
        counts = trims.get(token) or _trim_counts(token)
        if counts is _NO_TRIM:
            continue
        start, end = offsets[i]
        if counts is _LEAD_ONE:  # most word tokens: 'Ġword'
            if not (add_prefix_space and (i == 0 or start == 0)):
                offsets[i] = (start + 1 if start < end else end, end)
            continue
        lead, trail = counts
        if lead:
            if (i == 0 or start == 0) and add_prefix_space and lead == 1:
                lead = 0
            start = min(start + lead, end)
        if trail and end >= trail:
            end = max(end - trail, start)
        offsets[i] = (start, end)


class Roberta(PostProcessor):
    def __init__(self, sep, cls, trim=True, add_prefix_space=True):
        self.sep, self.cls = (sep[1], sep[0]), (cls[1], cls[0])
        self._single_wrap = _cls_sep_wrapper(self.cls, self.sep)
        self.trim, self.add_prefix_space = trim, add_prefix_space

    def added(self, is_pair):
        return 4 if is_pair else 2

    def process(self, a, b, add_special_tokens):
        if self.trim:
            for e in (a, b):
                if e is not None:
                    trim_offsets(e, self.add_prefix_space)
        if not add_special_tokens:
            return default_process(a, b)
        if b is None:
            return _wrap(a, self._single_wrap)
        (sep_id, sep), (cls_id, cls) = self.sep, self.cls
        sep_part = _special_part([sep_id], [sep], 0)
        parts = [_special_part([cls_id], [cls], 0), _sequence_part(a, 0), sep_part]
        if b is not None:
            parts += [sep_part, _sequence_part(b, 0), sep_part]
        return _assemble(parts)


class ByteLevelTrim(PostProcessor):
    def __init__(self, trim=True, add_prefix_space=True):
        self.trim, self.add_prefix_space = trim, add_prefix_space

    def process(self, a, b, add_special_tokens):
        if self.trim:
            for e in (a, b):
                if e is not None:
                    trim_offsets(e, self.add_prefix_space)
        return default_process(a, b)


class SequenceProcessor(PostProcessor):
    def __init__(self, parts: list[PostProcessor]):
        self.parts = parts

    def added(self, is_pair):
        return sum(p.added(is_pair) for p in self.parts)

    def process(self, a, b, add_special_tokens):
        # tokenizers runs each processor on the list of encodings; only the last one that
        # adds special tokens merges the pair
        for p in self.parts[:-1]:
            if isinstance(p, ByteLevelTrim) and p.trim:
                for e in (a, b):
                    if e is not None:
                        trim_offsets(e, p.add_prefix_space)
            elif not isinstance(p, ByteLevelTrim):
                raise PipelineError("a Sequence post-processor may only put ByteLevel before "
                                    "its last processor")
        return self.parts[-1].process(a, b, add_special_tokens) if self.parts else \
            default_process(a, b)


def build(spec: Mapping[str, Any] | None, where: str = "tokenizer.json post_processor"
          ) -> PostProcessor:
    if spec is None:
        return PostProcessor()
    kind = spec.get("type")
    if kind == "TemplateProcessing":
        return Template(spec["single"], spec["pair"], spec.get("special_tokens", {}))
    if kind == "BertProcessing":
        return Bert(spec["sep"], spec["cls"])
    if kind == "RobertaProcessing":
        return Roberta(spec["sep"], spec["cls"], spec.get("trim_offsets", True),
                       spec.get("add_prefix_space", True))
    if kind == "ByteLevel":
        return ByteLevelTrim(spec.get("trim_offsets", True), spec.get("add_prefix_space", True))
    if kind == "Sequence":
        return SequenceProcessor([build(s, where) for s in spec["processors"]])
    raise PipelineError(f"{where}: post-processor type {kind!r} is not supported (supported: "
                        "BertProcessing, ByteLevel, RobertaProcessing, Sequence, "
                        "TemplateProcessing)")
