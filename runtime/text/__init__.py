"""Text on the device: a pure-Python HF-compatible tokenizer and the text encode/decode steps.

    from edgepack.runtime.text import Tokenizer
    tok = Tokenizer.from_json(open("tokenizer.json", "rb").read())
    enc = tok.encode("Hello world", pair=None)   # ids, type_ids, attention_mask, offsets

reference: hf-tokenizers 0.2x (identical ids, type ids, masks and char offsets on the
fortunes corpus in six languages; tests/text).
"""
from .processors import Encoding
from .tokenizer import AddedToken, Padding, Tokenizer, Truncation

__all__ = ["Tokenizer", "Encoding", "Padding", "Truncation", "AddedToken"]
