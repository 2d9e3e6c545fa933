"""Byte-level BPE's two merge loops give the same tokens: the scan (words up to
`bpe.SCAN_LIMIT` symbols) and the heap (longer words, or merge tables where two merges
make one token), and both equal HF `tokenizers`."""
from __future__ import annotations

import random

import pytest

from edgepack.runtime.text import Tokenizer, bpe, bpe_pairs
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
    assert ours.model._pairs is None  # two splits of one token: the merge loops
    assert [fields(ours.encode(t)) for t in texts] == [fields(hf.encode(t)) for t in texts]


def _adversarial(rng: random.Random) -> list[bytes]:
    """Byte strings the pair walk could get wrong: runs of one byte or char (ties of
    equal rank), alternations, words past the scan limit, and random bytes that are
    not UTF-8 at all (any byte is a token of a byte-level BPE)."""
    out = []
    for unit in (b"a", b" ", b".", b"=", b"ta", b"ab", b"\xd0\xb0", b"\xe4\xb8\x80", b"\xff"):
        out += [unit * n for n in range(1, 130)]
    pieces = [b"a", b"aa", b"e", b"t", b"ta", b"h", b" ", b".", b"\xd0", b"\xb0", b"\xe4",
              b"\xb8", b"\x80", b"s", b"n", b"ing"]
    out += [b"".join(rng.choice(pieces) for _ in range(rng.randint(1, 80)))
            for _ in range(3000)]
    out += [bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))) for _ in range(500)]
    return out


def test_pair_walk_equals_the_merge_loop(trained_json):
    """Token-pair compatibility + backtracking (`bpe_pairs`) gives the merge loop's
    tokens, on real words of every language and on adversarial bytes."""
    model = Tokenizer.from_json(trained_json("bpe")).model
    pairs = model._pairs
    assert pairs is not None and pairs.excluded == 0  # trained: every token its own BPE
    rng = random.Random(8)
    words = [w.encode("utf-8") for w in _words(rng)] + _adversarial(rng)
    table = model._byte_ids
    merged = [model._merge_ids([table[b] for b in data]) for data in words]
    assert [pairs.encode(data) for data in words] == merged
    # a second time: every pair from the memo
    assert [pairs.encode(data) for data in words] == merged
    assert 1000 < len(pairs._memo) <= bpe_pairs.PAIR_LIMIT


def test_ties_decide_pairs(trained_json, monkeypatch):
    """Equal ranks (one pair twice, as in 'aaa'): the leftmost merges first, so a pair
    left of a merge of the same rank wins. Without that rule the walk goes wrong."""
    model = Tokenizer.from_json(trained_json("bpe")).model
    pairs = model._pairs
    rows, rank, left, right = pairs._rows, pairs._rank, pairs._left, pairs._right

    def careless(a, b, limit=1 << 62):  # ties never win: '<' on both sides
        while True:
            r = rows[a].get(b)
            if r is not None and r < limit:
                return False
            if rank[a] > rank[b]:
                limit, a = rank[a], right[a]
            elif rank[b] >= 0:
                limit, b = rank[b], left[b]
            else:
                return True
    monkeypatch.setattr(pairs, "_compatible", careless)
    words = [b" " * n for n in range(2, 80)] + [b"." * n for n in range(2, 40)]
    table = model._byte_ids
    wrong = [d for d in words if pairs.encode(d) != model._merge_ids([table[b] for b in d])]
    assert len(wrong) > 10


def test_a_token_that_is_not_its_own_bpe_is_left_out():
    """'abc' is in the vocabulary, made by ('ab', 'c'), but BPE of 'abc' merges 'bc'
    first and stops at ['a', 'bc']: it can never be a result, so the walk skips it."""
    tokenizers = pytest.importorskip("tokenizers")
    from edgepack.runtime.text.pretokenizers import BYTE_CHARS
    vocab = {c: i for i, c in enumerate(BYTE_CHARS[b] for b in range(256))}
    for token in ("bc", "ab", "abc", "ca", "cab"):
        vocab[token] = len(vocab)
    merges = [("b", "c"), ("a", "b"), ("ab", "c"), ("c", "a"), ("c", "ab")]
    hf = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, merges))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    ours = Tokenizer.from_json(hf.to_str())
    assert ours.model._pairs is not None and ours.model._pairs.excluded == 1
    rng = random.Random(6)
    texts = [" ".join("".join(rng.choice("abc") for _ in range(rng.randint(1, 14)))
                      for _ in range(6)) for _ in range(300)]
    assert [fields(ours.encode(t)) for t in texts] == [fields(hf.encode(t)) for t in texts]


def test_identity_word_loop_equals_the_piece_loop_and_tokenizers(trained_json):
    """`_sequence` takes byte-level words with identity offsets as two lists (words,
    starts; `ByteLevel.identity_words`), the prepended space's range computed instead of
    listed per char: the same fields as the general loop over (word, offsets) pieces and
    as HF, on texts whose first word is the prepended space alone, a whitespace run, an
    astral char, and with special tokens inside."""
    from tokenizers import Tokenizer as HF
    js = trained_json("bpe")
    hf, fast, general = HF.from_str(js), Tokenizer.from_json(js), Tokenizer.from_json(js)
    general._identity_words = None
    texts = ["a", " a", "  a", "a  ", " ", "   ", "\n\nx", "\u4e2d\u6587", "\U0001F600 ok",
             "x \U0001F600", "</s> a <s>b", "\u00e9t\u00e9 ?", "  \u043c\u0438\u0440  \n"]
    texts += corpus.sample("en", 40, seed=4) + corpus.sample("zh", 40, seed=4)
    assert fast._identity_words is not None
    assert [fields(fast.encode(t)) for t in texts] == [fields(general.encode(t)) for t in texts]
    assert [fields(fast.encode(t)) for t in texts] == [fields(hf.encode(t)) for t in texts]
    assert [fields(fast.encode(t, p)) for t, p in zip(texts, texts[5:])] == \
        [fields(hf.encode(t, p)) for t, p in zip(texts, texts[5:])]
