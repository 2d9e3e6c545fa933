"""Text encode/decode steps: `tokenize`, then `pool`, `l2_normalize`, `text_labels`,
`token_spans` (DESIGN §7; result shapes in docs/text.md).

    "encode": [{"op": "tokenize", "asset": "tokenizer", "max_length": 128}]
    "decode": [{"op": "pool", "mode": "mean"}, {"op": "l2_normalize"}]       -> {"embedding"}
    "decode": [{"op": "text_labels", "top_k": 3}]                            -> {"labels"}
    "decode": [{"op": "token_spans"}]                                        -> {"spans"}

`tokenize` leaves the texts, token offsets and special-token mask in
`trace.notes["tokenize"]` for `token_spans`.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..errors import InputError
from ..ops import register_decode, register_encode
from .tokenizer import Padding, Tokenizer, Truncation

log = logging.getLogger(__name__)

FIELDS = ("ids", "attention_mask", "type_ids", "special_tokens_mask")
_DEFAULT_FIELD = {"input_ids": "ids", "attention_mask": "attention_mask",
                  "token_type_ids": "type_ids", "ids": "ids", "mask": "attention_mask"}


def load_tokenizer(data: bytes, fmt: str = "auto", lowercase: bool = True) -> Tokenizer:
    """A Tokenizer from tokenizer.json bytes or a vocab.txt (fmt auto: by the first byte)."""
    if fmt == "vocab.txt" or (fmt == "auto" and not data.lstrip()[:1] == b"{"):
        return Tokenizer.from_vocab_txt(data, lowercase=lowercase)
    return Tokenizer.from_json(data)


def as_texts(raw: Any) -> tuple[list, bool]:
    """str | bytes | (a, b) | list of those | numpy str/bytes/object array -> (texts, single)."""
    if isinstance(raw, np.ndarray):
        if raw.dtype.kind not in "USO":
            raise InputError(f"text input must be strings, got a {raw.dtype} array")
        raw = raw.reshape(-1).tolist()
        single = False
    elif isinstance(raw, (str, bytes, bytearray)) or (
            isinstance(raw, tuple) and len(raw) == 2 and all(isinstance(x, str) for x in raw)):
        raw, single = [raw], True
    elif isinstance(raw, (list, tuple)):
        single = False
    else:
        raise InputError(f"text input must be a str, a list of str or (text, pair) tuples, "
                         f"got {type(raw).__name__}")
    texts = []
    for item in raw:
        if isinstance(item, (bytes, bytearray)):
            try:
                item = bytes(item).decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"text bytes are not UTF-8: {e}") from e
        if isinstance(item, (list, tuple)) and len(item) == 2 and \
                all(isinstance(x, str) for x in item):
            item = tuple(item)
        elif not isinstance(item, str):
            raise InputError(f"each text must be a str (or a (text, pair) tuple), got "
                             f"{type(item).__name__}")
        texts.append(item)
    if not texts:
        raise InputError("no text to tokenize: pass at least one string")
    return texts, single


@register_encode("tokenize")
def _tokenize(p, ctx):
    """reference: hf-tokenizers (identical ids, masks, type ids and offsets; tests/text)."""
    asset = p.string("asset", "tokenizer")
    fmt = p.choice("format", ("auto", "tokenizer.json", "vocab.txt"), "auto")
    lowercase = bool(p.get("lowercase", True))
    data = ctx.asset(asset, p.where)
    tokenizer = load_tokenizer(data, fmt, lowercase)
    names = [s.name for s in ctx.inputs]
    mapping = p.get("inputs")
    if mapping is None:
        unknown = [n for n in names if n not in _DEFAULT_FIELD]
        if unknown:
            raise p.fail(f"model inputs {unknown} are not token ids/mask/type ids; map them "
                         f"with 'inputs': {{name: one of {list(FIELDS)}}}")
        mapping = {n: _DEFAULT_FIELD[n] for n in names}
    if not isinstance(mapping, dict) or any(v not in FIELDS for v in mapping.values()) or \
            set(mapping) - set(names):
        raise p.fail(f"'inputs' must map model inputs {names} to one of {list(FIELDS)}")
    seq_dims = {s.shape[1] for s in ctx.inputs if s.name in mapping and len(s.shape) > 1}
    static = [d for d in seq_dims if d != -1]
    max_length = p.get("max_length", static[0] if static else None)
    if max_length is not None and (isinstance(max_length, bool) or
                                   not isinstance(max_length, int) or max_length < 2):
        raise p.fail(f"'max_length' must be an integer >= 2, got {max_length!r}")
    padding_mode = p.choice("padding", ("longest", "max_length"),
                            "max_length" if static else "longest")
    if padding_mode == "max_length" and max_length is None:
        raise p.fail("padding 'max_length' needs 'max_length'")
    if static and (padding_mode != "max_length" or max_length != static[0]):
        raise p.fail(f"the model's sequence length is fixed at {static[0]}: use "
                     f"'padding': 'max_length', 'max_length': {static[0]}")
    truncation = None
    if p.get("truncation", True) and max_length is not None:
        truncation = Truncation(max_length, p.choice(
            "strategy", ("longest_first", "only_first", "only_second"), "longest_first"))
    pad_token = tokenizer.padding.pad_token if tokenizer.padding else None
    pad_token = p.get("pad_token", pad_token)
    pad_id = tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
    if pad_id is None:
        pad_id = tokenizer.padding.pad_id if tokenizer.padding else 0
    padding = Padding(max_length if padding_mode == "max_length" else None, pad_id, 0,
                      pad_token or "[PAD]")
    add_special = bool(p.get("add_special_tokens", True))
    encode_batch = None
    if p.get("fast", False):
        from .fast import fast_encoder
        encode_batch = fast_encoder(data.decode("utf-8"), tokenizer, truncation, padding,
                                    add_special)
    if encode_batch is None:
        def encode_batch(texts):
            return tokenizer.encode_batch(texts, add_special, truncation, padding)
    dtypes = {s.name: (np.dtype(s.dtype) if s.dtype != "string" else np.dtype(np.int64))
              for s in ctx.inputs}

    def encode(raw, trace):
        texts, _ = as_texts(raw)
        encodings = encode_batch(texts)
        trace.notes["tokenize"] = {
            "texts": [t if isinstance(t, str) else t[0] for t in texts],
            "offsets": [e.offsets for e in encodings],
            "special": [e.special_tokens_mask for e in encodings],
            "type_ids": [e.type_ids for e in encodings],
            "tokens": [e.tokens for e in encodings]}
        return {name: np.asarray([getattr(e, field) for e in encodings],
                                 dtype=dtypes.get(name, np.int64))
                for name, field in mapping.items()}
    encode.tokenizer = tokenizer
    return encode


def _output(p, ctx) -> str:
    names = [s.name for s in ctx.outputs]
    name = p.get("output", names[0] if names else None)
    if name not in names:
        raise p.fail(f"'output' must be one of the model outputs {names}, got {name!r}")
    return name


@register_decode("pool")
def _pool(p, ctx):
    """Token states -> one vector per text. mean: over the attention mask (as
    sentence-transformers: sum(h*m)/max(sum(m), 1e-9)); cls: the first token; max: the
    largest value over unmasked tokens; none: the output already is one vector per text."""
    name = _output(p, ctx)
    mode = p.choice("mode", ("mean", "cls", "max", "none"), "mean")
    mask_name = p.get("mask", "attention_mask")

    def pool(outputs, trace):
        h = np.asarray(outputs[name], dtype=np.float32)
        if mode == "none" or h.ndim == 2:
            vec = h.reshape(h.shape[0], -1)
        elif mode == "cls":
            vec = h[:, 0]
        else:
            feeds = trace.feeds or {}
            m = feeds.get(mask_name)
            m = np.ones(h.shape[:2], np.float32) if m is None else \
                np.asarray(m, np.float32)[:, :h.shape[1]]
            if mode == "mean":
                vec = (h * m[..., None]).sum(1) / np.maximum(m.sum(1, keepdims=True), 1e-9)
            else:
                vec = np.where(m[..., None] > 0, h, -np.inf).max(1)
        return {"embedding": vec.astype(np.float32).tolist()}
    return pool


@register_decode("l2_normalize")
def _l2(p, ctx):
    """x / max(||x||, 1e-12) per vector (torch.nn.functional.normalize)."""
    key = p.string("key", "embedding")

    def normalize(result, trace):
        v = np.asarray(result[key], dtype=np.float32)
        v = v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)
        return {**result, key: v.tolist()}
    return normalize


def _activate(x: np.ndarray, activation: str) -> np.ndarray:
    x = x.astype(np.float64)
    if activation == "softmax":
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    return x


@register_decode("text_labels")
def _text_labels(p, ctx):
    """Sequence classification logits -> {"labels": [[{"index", "label", "score"}...]]}."""
    name = _output(p, ctx)
    activation = p.choice("activation", ("softmax", "sigmoid", "none"), "softmax")
    top_k = p.integer("top_k", 5, minimum=1)
    labels = list(ctx.labels) if ctx.labels else None

    def decode(outputs, trace):
        scores = _activate(np.asarray(outputs[name]).reshape(len(outputs[name]), -1),
                           activation)
        out = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:top_k]
            out.append([{"index": int(i), "label": labels[i] if labels and i < len(labels)
                         else str(int(i)), "score": float(row[i])} for i in order])
        return {"labels": out}
    return decode


@register_decode("token_spans")
def _token_spans(p, ctx):
    """Per-token labels -> character spans of the original text.

    Tokens are labelled by argmax; special tokens and `ignore` labels ("O") end a span.
    With BIO/IOB2 labels ("B-PER", "I-PER") a B- starts a new span and an I- continues
    one of the same type; plain labels merge consecutive tokens with the same label.
    Span score: mean of its tokens' probabilities (HF pipeline aggregation "simple")."""
    name = _output(p, ctx)
    activation = p.choice("activation", ("softmax", "sigmoid", "none"), "softmax")
    ignore = p.get("ignore", ["O"])
    if not isinstance(ignore, list) or not all(isinstance(x, str) for x in ignore):
        raise p.fail("'ignore' must be a list of labels")
    labels = list(ctx.labels) if ctx.labels else None

    def decode(outputs, trace):
        notes = trace.notes.get("tokenize")
        if notes is None:
            raise InputError("token_spans needs the 'tokenize' encode step (token offsets)")
        probs = _activate(np.asarray(outputs[name]), activation)
        result = []
        for row, text, offsets, special in zip(probs, notes["texts"], notes["offsets"],
                                               notes["special"]):
            spans: list[dict] = []
            current = None
            for t in range(min(len(offsets), len(row))):
                start, end = offsets[t]
                k = int(np.argmax(row[t]))
                label = labels[k] if labels and k < len(labels) else str(k)
                if special[t] or end <= start or label in ignore:
                    current = None
                    continue
                tag, kind = (label[:1], label[2:]) if label[:2] in ("B-", "I-") else ("", label)
                if current is not None and current["label"] == kind and tag != "B":
                    current["end"] = end
                    current["_scores"].append(float(row[t][k]))
                    continue
                current = {"start": start, "end": end, "label": kind,
                           "_scores": [float(row[t][k])]}
                spans.append(current)
            for s in spans:
                scores = s.pop("_scores")
                s["text"] = text[s["start"]:s["end"]]
                s["score"] = float(np.mean(scores))
            result.append([{k: s[k] for k in ("start", "end", "text", "label", "score")}
                           for s in spans])
        return {"spans": result}
    return decode


def parse_text_body(body: bytes, content_type: str = "") -> Any:
    """An HTTP body for a text bundle -> what `predict` takes (for serve's /predict).

    application/json: a string, a list of strings, or {"text": string-or-list};
    text/plain (or no type): the UTF-8 body is one text. Raises InputError otherwise.
    """
    import json
    ctype = (content_type or "").split(";")[0].strip().lower()
    try:
        text = bytes(body).decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"the request body is not UTF-8 text: {e}") from e
    if ctype == "application/json":
        try:
            value = json.loads(text)
        except ValueError as e:
            raise InputError(f"the JSON body does not parse: {e}") from e
        if isinstance(value, dict):
            value = value.get("text")
        texts, single = as_texts(value if isinstance(value, list) else
                                 value if isinstance(value, str) else 0)
        return texts[0] if single else texts
    if ctype in ("", "text/plain"):
        return text
    raise InputError(f"content type {ctype!r} is not text; send application/json or "
                     "text/plain")
