"""Unigram's lean path (`_lists`, what encode uses) and its general one (`_tokenize`)
give the same tokens, unknown chars (fused or not) included, and match tokenizers."""
from __future__ import annotations

import json
import random

import pytest

from edgepack.runtime.text import Tokenizer
from tests.text import corpus
from tests.text.trained import fields


def _general(model, word):
    out = model._tokenize(word)
    return [t[0] for t in out], [t[1] for t in out], [(t[2], t[3]) for t in out]


@pytest.mark.parametrize("fuse", [True, False])
def test_lean_and_general_paths_agree_on_unknown_chars(trained_json, fuse):
    model = Tokenizer.from_json(trained_json("unigram")).model
    model.fuse_unk = fuse
    rng = random.Random(4)
    words = ["\u2581" + "".join(rng.choice("ab\u4e2d\u6587\u2603\u2604\U0001F600x\u2581")
                                for _ in range(rng.randint(1, 14))) for _ in range(2000)]
    for lang in corpus.PACKAGES:
        words += ["\u2581" + w for t in corpus.sample(lang, 40, seed=9) for w in t.split()]
    assert [model._lists(w) for w in words] == [_general(model, w) for w in words]
    with_unk = [w for w in words if model.unk_id in model._lists(w)[0]]
    assert len(with_unk) > 500  # the unknown-run branch really ran


def test_unknown_chars_in_sentences_match_tokenizers(trained_json):
    from tokenizers import Tokenizer as HF
    js = trained_json("unigram")
    hf, ours = HF.from_str(js), Tokenizer.from_json(js)
    rng = random.Random(6)
    texts = [t + " " + "".join(rng.choice("\u2603\u2604\U0001F600\u4e2d") for _ in range(4))
             + "x" + t[:5] for t in corpus.sample("zh", 150, seed=12)]
    assert [fields(ours.encode(t)) for t in texts] == [fields(hf.encode(t)) for t in texts]


def _hand_made_unigram(pieces):
    return json.dumps({
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "post_processor": None, "decoder": None,
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581",
                          "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": False,
                  "vocab": [["<unk>", 0.0]] + [list(p) for p in pieces]}})


def test_scores_add_up_in_the_order_tokenizers_adds_them():
    """Planted: 'cd' scores exactly 'c' + 'd', so whether it wins is decided by rounding:
    after the piece '\u2581x' the path sum (B + c) + d rounds above B + (c + d) and
    tokenizers takes 'c', 'd'. A lattice that summed in any other order (a word solved in
    parts, each from 0.0, as a cache of word pieces would) keeps 'cd' on this tie."""
    from tokenizers import Tokenizer as HF
    # short decimals, so the JSON round trip keeps them exact (`serde_f64`)
    c, d, prefix, both = -8.579775, -14.148088, -6.336859, -22.727863
    assert c + d == both and (prefix + c) + d > prefix + both  # the planted rounding
    js = _hand_made_unigram([("\u2581x", prefix), ("c", c), ("d", d), ("cd", both),
                             ("\u2581", -20.0), ("x", -20.0)])
    ours = Tokenizer.from_json(js)
    assert ours.model._lists("cd")[1] == ["cd"]  # the tie from 0.0 keeps the first piece
    want = HF.from_str(js).encode("xcd")
    assert want.tokens == ["\u2581x", "c", "d"]
    assert fields(ours.encode("xcd")) == fields(want)


@pytest.mark.parametrize("scheme", ["always", "first", "never"])
@pytest.mark.parametrize("split", [True, False])
def test_metaspace_offsets_by_arithmetic_match_tokenizers(trained_json, scheme, split):
    """Metaspace's `identity_words` (the prepended char's offsets computed, not listed)
    against tokenizers, for every prepend scheme, with and without the split: leading,
    repeated and trailing spaces, text that starts with the replacement char, pairs (the
    second text starts past 0, where "first" does not prepend)."""
    from tokenizers import Tokenizer as HF
    spec = json.loads(trained_json("unigram"))
    spec["pre_tokenizer"].update(prepend_scheme=scheme, split=split)
    js = json.dumps(spec)
    hf, ours = HF.from_str(js), Tokenizer.from_json(js)
    assert (ours._identity_words("a b", 0) is not None) == split  # the path under test
    texts = [t for lang in ("zh", "en", "ru") for t in corpus.sample(lang, 60, seed=21)]
    texts += [" 中文", "  two  spaces ", "\u2581already", "x", "中", "a\u2581b c", ""]
    for text in texts:
        assert fields(ours.encode(text)) == fields(hf.encode(text)), text
    for a, b in zip(texts[::2], texts[1::2]):
        assert fields(ours.encode(a, b)) == fields(hf.encode(a, b)), (a, b)
