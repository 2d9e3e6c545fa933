"""Optional fast path: HF `tokenizers` (Rust) when installed AND proven identical here.

The pure-Python tokenizer is the reference on the device. When the `tokenizers` wheel is
installed and the bundle's encode step asks for it (`"fast": true`), the Rust tokenizer is
built from the same tokenizer.json and must reproduce the pure-Python encodings (ids, type
ids, attention mask, offsets) on a fixed multilingual probe set plus the first texts it
sees; any difference, or a missing wheel, keeps the pure-Python path (logged once).
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from .processors import Encoding
from .tokenizer import Padding, Tokenizer, Truncation

log = logging.getLogger(__name__)

PROBES = ("Hello, world! This is a test.", "  leading and trailing spaces  ",
          "Übertretung Spaß haben.", "La vejez es la pérdida de la curiosidad",
          "Истинные ученые подобны колосьям в поле.", "候蛩凄断，人语西风岸。",
          "numbers 1234567 and symbols @#$%^&*()", "tabs\tand\nnewlines", "",
          "ĲǅǄ ﬁ ½ ①  İstanbul ΣΑΣ", "emoji 😀👍🏽 e\u0301 a\u0308")


def _fields(e) -> tuple:
    return (list(e.ids), list(e.type_ids), list(e.attention_mask),
            [tuple(o) for o in e.offsets])


def fast_encoder(json_text: str, reference: Tokenizer, truncation: Truncation | None,
                 padding: Padding | None, add_special_tokens: bool = True
                 ) -> Callable[[Sequence], list[Encoding]] | None:
    """A batch encoder backed by `tokenizers`, or None when unavailable or not identical."""
    try:
        import tokenizers
    except ImportError:
        log.info("fast tokenizer requested but 'tokenizers' is not installed "
                 "(pip install 'edgepack[text]'); using the pure-Python tokenizer")
        return None
    try:
        rust = tokenizers.Tokenizer.from_str(json_text)
        rust.no_truncation()
        rust.no_padding()
        if truncation is not None:
            rust.enable_truncation(truncation.max_length, strategy=truncation.strategy,
                                   direction=truncation.direction)
    except Exception as e:  # a file the Rust side reads differently: stay pure
        log.warning("fast tokenizer unusable (%s); using the pure-Python tokenizer", e)
        return None

    def encode(texts):
        encs = rust.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        out = [Encoding(list(e.ids), list(e.type_ids), list(e.tokens),
                        [tuple(o) for o in e.offsets], list(e.special_tokens_mask),
                        list(e.attention_mask)) for e in encs]
        if padding is not None:
            from .tokenizer import pad_batch
            pad_batch(out, padding)
        return out

    probes = list(PROBES)
    mine = reference.encode_batch(probes, add_special_tokens, truncation or None, padding or None)
    if [_fields(e) for e in encode(probes)] != [_fields(e) for e in mine]:
        log.warning("fast tokenizer differs from the pure-Python one on the probe texts; "
                    "using the pure-Python tokenizer")
        return None
    return encode
