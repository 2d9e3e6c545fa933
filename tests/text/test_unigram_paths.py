"""Unigram's lean path (`_lists`, what encode uses) and its general one (`_tokenize`)
give the same tokens, unknown chars (fused or not) included, and match tokenizers."""
from __future__ import annotations

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
