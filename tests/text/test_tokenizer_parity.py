"""The pure-Python tokenizer against HF `tokenizers` on real text in six languages.

Tokenizers of each model type (WordPiece, byte-level BPE, Unigram) are trained in the
test with `tokenizers` on the fortunes corpora; every field that reaches a model or a
decoder (ids, type ids, attention mask, char offsets, special-token mask) must be equal.
"""
from __future__ import annotations

import pytest

from edgepack.runtime.errors import InputError
from edgepack.runtime.text import Padding, Tokenizer, Truncation
from edgepack.runtime.text.fast import PROBES
from tests.text import corpus
from tests.text.conftest import KINDS
from tests.text.trained import fields


def _mismatches(hf, ours, texts, **kw):
    bad = []
    for text in texts:
        expected = fields(hf.encode(text, **kw))
        got = fields(ours.encode(text, **kw))
        if expected != got:
            bad.append(text)
    return bad


def _pair(kind, trained_json):
    from tokenizers import Tokenizer as HF
    js = trained_json(kind)
    return HF.from_str(js), Tokenizer.from_json(js)


@pytest.mark.parametrize("kind", KINDS)
def test_parity_sample_every_language(kind, trained_json):
    hf, ours = _pair(kind, trained_json)
    for lang in corpus.PACKAGES:
        texts = corpus.sample(lang, 300, seed=7) + corpus.entries(lang, 40, seed=7)
        bad = _mismatches(hf, ours, texts)
        assert bad == [], f"{kind}/{lang}: {len(bad)} mismatches, first {bad[0]!r}"


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_parity_5000_sentences_per_language(kind, trained_json):
    hf, ours = _pair(kind, trained_json)
    for lang in corpus.PACKAGES:
        texts = corpus.sample(lang, 5000) + corpus.entries(lang, 200)
        assert len(texts) == 5200
        bad = _mismatches(hf, ours, texts)
        assert bad == [], f"{kind}/{lang}: {len(bad)} of 5200 differ, first {bad[0]!r}"


@pytest.mark.parametrize("kind", KINDS)
def test_unicode_edge_cases_and_no_special_tokens(kind, trained_json):
    hf, ours = _pair(kind, trained_json)
    texts = list(PROBES) + ["\x00\x07 ctrl \ufeff zero\u200bwidth", "ǅ Σ σς", "a" * 150,
                            "   ", "[CLS] literal specials [SEP] <s> </s>"]
    assert _mismatches(hf, ours, texts) == []
    assert _mismatches(hf, ours, texts, add_special_tokens=False) == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("strategy", ["longest_first", "only_first", "only_second"])
@pytest.mark.parametrize("direction", ["right", "left"])
def test_pairs_truncation_and_padding(kind, strategy, direction, trained_json):
    hf, ours = _pair(kind, trained_json)
    a = corpus.sample("en", 60, seed=3) + corpus.sample("de", 60, seed=3)
    b = corpus.sample("ru", 60, seed=4) + corpus.sample("zh", 60, seed=4)
    if strategy == "longest_first":  # short pairs too, so both branches of the rule run
        b = [t[:12] for t in b[:40]] + b[40:]
    long = [e for e in corpus.entries("it", 400, seed=5) if len(e) > 200][:120]
    if strategy == "only_first":  # tokenizers refuses when the cut side is too short
        a, b = long, [t[:8] for t in b]
    elif strategy == "only_second":
        a, b = [t[:8] for t in a], long
    pad_token = {"wordpiece": "[PAD]", "bpe": "<pad>", "unigram": "<pad>"}[kind]
    pad_id = hf.token_to_id(pad_token)
    hf.enable_truncation(24, strategy=strategy, direction=direction)
    trunc = Truncation(24, strategy, direction)
    for length in (None, 32):
        hf.enable_padding(pad_id=pad_id, pad_token=pad_token, length=length,
                          direction=direction)
        pad = Padding(length, pad_id, 0, pad_token, direction)
        pairs = list(zip(a, b))
        expected = [fields(e) for e in hf.encode_batch(pairs)]
        got = [fields(e) for e in ours.encode_batch(pairs, truncation=trunc, padding=pad)]
        assert got == expected
        assert all(len(g[0]) == (length or max(len(x[0]) for x in got)) for g in got)
    single = [fields(e) for e in hf.encode_batch(a)] if strategy != "only_second" else None
    if single is not None:
        assert [fields(e) for e in ours.encode_batch(a, truncation=trunc, padding=pad)] == single


@pytest.mark.parametrize("kind", KINDS)
def test_long_documents_cut_on_the_right_equal_tokenizers_and_skip_the_rest(kind,
                                                                          trained_json):
    """A single text cut on the right is tokenized only up to its kept tokens (the words
    after them never reach the model), with the same fields as tokenizers' whole-text
    tokenization and cut: documents of many sentences, special tokens written inside,
    each language, cut to 16 and 128, with and without added special tokens."""
    from tokenizers import Tokenizer as HF
    js = trained_json(kind)
    hf = HF.from_str(js)
    special = {"wordpiece": "[SEP]", "bpe": "</s>", "unigram": "</s>"}[kind]
    docs = []
    for lang in corpus.PACKAGES:
        sentences = corpus.sample(lang, 400, seed=11)
        docs += [" ".join(sentences[i:i + 40]) for i in range(0, 400, 40)]
        docs.append(f" {special} ".join(sentences[:30]))
    for length in (16, 128):
        for add in (True, False):
            hf.enable_truncation(length)
            ours = Tokenizer.from_json(js)
            for doc in docs:
                expected = fields(hf.encode(doc, add_special_tokens=add))
                assert fields(ours.encode(doc, add_special_tokens=add,
                                          truncation=Truncation(length))) == expected, doc[:80]
    # the words past the cut were not tokenized: a document of words seen nowhere else
    # leaves its first ~16 words in the word cache, not all 2,000
    ours = Tokenizer.from_json(js)
    unseen = " ".join(f"zq{i}x" for i in range(2000))
    ours.encode(unseen, truncation=Truncation(16))
    assert len(ours._word_cache) < 100
    ours.encode(unseen, truncation=None)
    assert len(ours._word_cache) >= 2000


def test_truncation_errors_are_input_errors(trained_json):
    _, ours = _pair("wordpiece", trained_json)
    with pytest.raises(InputError, match="shorter than the 2 special tokens"):
        ours.encode("hello world", truncation=Truncation(1))
    with pytest.raises(InputError, match="'only_second' needs a text pair"):
        ours.encode("hello world " * 20, truncation=Truncation(8, "only_second"))


def test_vocab_txt_wordpiece_matches_bert_wordpiece(trained_json, tmp_path):
    from tokenizers import BertWordPieceTokenizer
    import json
    vocab = json.loads(trained_json("wordpiece"))["model"]["vocab"]
    lines = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    hf = BertWordPieceTokenizer(str(path), lowercase=True)
    ours = Tokenizer.from_vocab_txt(path.read_bytes())
    texts = [t for lang in corpus.PACKAGES for t in corpus.sample(lang, 150, seed=11)]
    assert _mismatches(hf, ours, texts) == []
    assert _mismatches(hf, ours, [("first part", "second part")[0]]) == []
    pairs = list(zip(texts[:50], texts[50:100]))
    assert [fields(e) for e in hf.encode_batch(pairs)] == \
        [fields(e) for e in ours.encode_batch(pairs, padding=None)]
