"""Byte-level BPE's two merge loops give the same tokens: the scan (words up to
`bpe.SCAN_LIMIT` symbols) and the heap (longer words, or merge tables where two merges
make one token), and both equal HF `tokenizers`."""
from __future__ import annotations

import random

import pytest

from edgepack.runtime.text import Tokenizer, bpe
from tests.text import corpus
from tests.text.trained import fields


def _words(rng: random.Random) -> list[str]:
    """Real words of every language, plus made-up ones the merges handle unusually:
    runs of one char (overlapping pairs), long words either side of the scan limit."""
    out = []
    for lang in corpus.PACKAGES:
        for text in corpus.sample(lang, 60, seed=21):
            out += [" " + w for w in text.split()]
    letters = "aeiost\u00e9\u0436\u043e\u4e2d\u6587 "
    for n in (1, 2, 3, 7, 15, 16, 17, 30, 47, 48, 49, 60, 120):
        out.append("".join(rng.choice(letters) for _ in range(n)))
        out.append("a" * n)
        out.append("ab" * n)
    return out


def test_scan_and_heap_merge_alike_and_match_tokenizers(trained_json, monkeypatch):
    from tokenizers import Tokenizer as HF
    js = trained_json("bpe")
    model = Tokenizer.from_json(js).model
    assert model._scan_ok  # a trained table: one merge per token
    words = _words(random.Random(3))
    table = model._byte_ids
    scanned, heaped = [], []
    for word in words:
        data = word.encode("utf-8")
        monkeypatch.setattr(bpe, "SCAN_LIMIT", 10 ** 6)
        scanned.append(model._merge_ids([table[b] for b in data]))
        monkeypatch.setattr(bpe, "SCAN_LIMIT", 0)
        heaped.append(model._merge_ids([table[b] for b in data]))
    assert scanned == heaped
    assert sum(len(w.encode("utf-8")) - len(ids) for w, ids in zip(words, scanned)) > 1000
    monkeypatch.undo()
    hf, ours = HF.from_str(js), Tokenizer.from_json(js)
    texts = ["".join(words[i:i + 5]) for i in range(0, len(words), 5)]
    bad = [t for t in texts if fields(hf.encode(t)) != fields(ours.encode(t))]
    assert bad == []


def _duplicate_merges_tokenizer():
    """A byte-level BPE whose merges make 'abc' twice (from 'a'+'bc' and 'ab'+'c')."""
    tokenizers = pytest.importorskip("tokenizers")
    from edgepack.runtime.text.pretokenizers import BYTE_CHARS
    vocab = {c: i for i, c in enumerate(BYTE_CHARS[b] for b in range(256))}
    for token in ("ab", "bc", "abc", "cd", "abcd", "da"):
        vocab[token] = len(vocab)
    merges = [("b", "c"), ("a", "b"), ("d", "a"), ("a", "bc"), ("ab", "c"), ("c", "d"),
              ("abc", "d")]
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    rng = random.Random(5)
    texts = [" ".join("".join(rng.choice("abcd") for _ in range(rng.randint(1, 12)))
                      for _ in range(6)) for _ in range(300)]
    return hf, texts


def test_a_table_where_two_merges_make_one_token_takes_the_heap_and_matches():
    hf, texts = _duplicate_merges_tokenizer()
    ours = Tokenizer.from_json(hf.to_str())
    assert ours.model._byte_ids is not None and ours.model._scan_ok is False
    assert [fields(ours.encode(t)) for t in texts] == [fields(hf.encode(t)) for t in texts]


def test_chars_merged_ahead_give_the_same_tokens_as_raw_bytes(trained_json):
    js = trained_json("bpe")
    ahead, raw = Tokenizer.from_json(js).model, Tokenizer.from_json(js).model
    assert ahead._premerge  # a trained table: each merge ranks after its parts' merges
    raw._premerge = False
    rng = random.Random(8)
    words = _words(rng)
    alphabet = sorted({c for w in words for c in w if not c.isascii()})
    words += [" " + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 20)))
              for _ in range(500)]
    assert [ahead.byte_level(w) for w in words] == [raw.byte_level(w) for w in words]
    # some chars have a merged form, and some of those are kept raw next to some bytes
    memo = ahead._char_memo
    merged = [c for c, entry in memo.items() if entry[0] is not entry[1]]
    assert 10 < len(merged) < len(memo)
    assert any(entry[4] or entry[5] for entry in memo.values())


def test_the_neighbour_check_is_what_makes_merging_ahead_exact(trained_json):
    js = trained_json("bpe")
    careless, raw = Tokenizer.from_json(js).model, Tokenizer.from_json(js).model
    raw._premerge = False
    careless._lowest_after, careless._lowest_before = {}, {}  # no neighbour objects
    words = [" " + w for lang in ("de", "ru", "zh")
             for t in corpus.sample(lang, 200, seed=13) for w in t.split()]
    assert sum(careless.byte_level(w) != raw.byte_level(w) for w in words) > 50
