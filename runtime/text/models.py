"""Tokenizer models: WordPiece, byte-level BPE, Unigram. Each turns one pre-tokenized word
into [(id, token, start, end)] with char offsets inside the word, and caches per word.
One module each (wordpiece, bpe, unigram; the shared base in model_base); this one builds
the model a tokenizer.json names.

reference: hf-tokenizers (models/wordpiece, models/bpe, models/unigram), tokenizers 0.2x.
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import PipelineError
from .bpe import BPE
from .model_base import CACHE_LIMIT, Model, Token, frozen
from .unigram import Unigram
from .wordpiece import WordPiece

__all__ = ["BPE", "CACHE_LIMIT", "Model", "Token", "Unigram", "WordPiece", "build", "frozen"]


def build(spec: Mapping[str, Any], where: str = "tokenizer.json model") -> Model:
    """The model a `tokenizer.json` "model" object describes."""
    kind = spec.get("type")
    if kind is None:  # old files: guess from the fields
        kind = "BPE" if "merges" in spec else "Unigram" if isinstance(spec.get("vocab"), list) \
            else "WordPiece"
    if kind == "WordPiece":
        return WordPiece(spec["vocab"], spec.get("unk_token", "[UNK]"),
                         spec.get("continuing_subword_prefix", "##"),
                         spec.get("max_input_chars_per_word", 100))
    if kind == "BPE":
        return BPE(spec["vocab"], spec.get("merges", []), spec.get("unk_token"),
                   spec.get("continuing_subword_prefix"), spec.get("end_of_word_suffix"),
                   bool(spec.get("fuse_unk", False)), bool(spec.get("byte_fallback", False)),
                   bool(spec.get("ignore_merges", False)), spec.get("dropout"))
    if kind == "Unigram":
        return Unigram(spec["vocab"], spec.get("unk_id"), bool(spec.get("byte_fallback", False)))
    raise PipelineError(f"{where}: model type {kind!r} is not supported "
                        "(supported: BPE, Unigram, WordPiece)")
