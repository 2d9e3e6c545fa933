"""Tokenizers of each model type, trained here with HF `tokenizers` on the fortunes corpus."""
from __future__ import annotations

import functools

from tests.text import corpus


def training_text(per_language: int = 4000) -> list[str]:
    out = []
    for lang in corpus.PACKAGES:
        out.extend(corpus.sample(lang, per_language, seed=1))
    return out


@functools.lru_cache(maxsize=None)
def trained(kind: str, vocab_size: int | None = None) -> str:
    """The tokenizer.json text of a freshly trained `kind` tokenizer (wordpiece|bpe|unigram)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    # Unigram training is EM over all substrings: far slower, so it gets less text
    text = training_text(1200 if kind == "unigram" else 4000)
    vocab_size = vocab_size or (8000 if kind == "unigram" else 3000)
    if kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.train_from_iterator(text, trainers.WordPieceTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False))
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        tok.decoder = decoders.WordPiece()
    elif kind == "bpe":
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.train_from_iterator(text, trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
        tok.post_processor = processors.RobertaProcessing(
            ("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")),
            trim_offsets=True, add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
    elif kind == "unigram":
        specials = ["<pad>", "<unk>", "<s>", "</s>"]
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(),
                                               normalizers.Replace("``", '"')])
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.train_from_iterator(text, trainers.UnigramTrainer(
            vocab_size=vocab_size, special_tokens=specials, unk_token="<unk>",
            show_progress=False))
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B:1 </s>:1",
            special_tokens=[("</s>", tok.token_to_id("</s>"))])
        tok.decoder = decoders.Metaspace()
    else:
        raise ValueError(kind)
    return tok.to_str()


def fields(enc) -> tuple:
    """What must be identical between the two implementations."""
    return (list(enc.ids), list(enc.type_ids), list(enc.attention_mask),
            [tuple(o) for o in enc.offsets], list(enc.special_tokens_mask))
