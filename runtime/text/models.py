"""Tokenizer models: WordPiece, byte-level BPE, Unigram. Each turns one pre-tokenized word
into [(id, token, start, end)] with char offsets inside the word, and caches per word.

reference: hf-tokenizers (models/wordpiece, models/bpe, models/unigram), tokenizers 0.2x.
"""
from __future__ import annotations

import heapq
from typing import Any, Mapping

from ..errors import PipelineError

Token = tuple  # (id, token, start, end)
CACHE_LIMIT = 20000


class Model:
    """Base: `tokenize(word) -> [(id, token, start, end)]`; `tokenize_cached(word)` ->
    (ids, tokens, spans) lists from a bounded per-word cache (the hot path)."""

    vocab: dict[str, int]

    def __init__(self):
        self._cache: dict[str, tuple[list, list, list]] = {}

    def tokenize(self, word: str) -> list[Token]:
        return self._tokenize(word)

    def tokenize_cached(self, word: str) -> tuple[list, list, list]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        tokens = self._tokenize(word)
        hit = ([t[0] for t in tokens], [t[1] for t in tokens], [(t[2], t[3]) for t in tokens])
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = hit
        return hit

    def _tokenize(self, word: str) -> list[Token]:  # pragma: no cover - interface
        raise NotImplementedError

    def token_to_id(self, token: str) -> int | None:
        return self.vocab.get(token)


class WordPiece(Model):
    """Greedy longest-match-first with a continuation prefix; too long or unmatched -> unk."""

    def __init__(self, vocab: Mapping[str, int], unk_token="[UNK]",
                 continuing_subword_prefix="##", max_input_chars_per_word=100):
        super().__init__()
        self.vocab = dict(vocab)
        self.unk_token, self.prefix = unk_token, continuing_subword_prefix
        self.max_chars = max_input_chars_per_word
        if unk_token not in self.vocab:
            raise PipelineError(f"WordPiece unk token {unk_token!r} is not in the vocabulary")
        self.unk_id = self.vocab[unk_token]
        # char tries: node = {char: (children, token id or -1)}; the longest match from a
        # position is one forward walk (no candidate substrings built and looked up)
        self._first = _char_trie((t, i) for t, i in self.vocab.items())
        p = len(self.prefix)
        self._continuing = _char_trie((t[p:], i) for t, i in self.vocab.items()
                                      if t.startswith(self.prefix) and len(t) > p
                                      ) if p else self._first

    def _tokenize(self, word):
        n = len(word)
        if n > self.max_chars:
            return [(self.unk_id, self.unk_token, 0, n)]
        out = []
        start = 0
        trie = self._first
        while start < n:
            node, best, end, j = trie, -1, start, start
            while j < n:
                entry = node.get(word[j])
                if entry is None:
                    break
                node, token_id = entry
                j += 1
                if token_id >= 0:
                    best, end = token_id, j
            if best < 0:
                return [(self.unk_id, self.unk_token, 0, n)]
            out.append((best, word[start:end] if start == 0 else self.prefix + word[start:end],
                        start, end))
            start = end
            trie = self._continuing
        return out


def _char_trie(items) -> dict:
    """{char: (children, id)} over (string, id) pairs; id -1 where no string ends."""
    root: dict = {}
    for text, token_id in items:
        if not text:
            continue
        node = root
        for c in text[:-1]:
            entry = node.get(c)
            if entry is None:
                entry = node[c] = ({}, -1)
            node = entry[0]
        entry = node.get(text[-1])
        node[text[-1]] = (entry[0] if entry else {}, token_id)
    return root


class BPE(Model):
    """Merges by rank (lowest first, leftmost first), as tokenizers' merge heap does."""

    def __init__(self, vocab: Mapping[str, int], merges: list, unk_token=None,
                 continuing_subword_prefix=None, end_of_word_suffix=None, fuse_unk=False,
                 byte_fallback=False, ignore_merges=False, dropout=None):
        super().__init__()
        if dropout:
            raise PipelineError("BPE dropout is random at inference; a bundle cannot use it")
        self.vocab = dict(vocab)
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        self.unk_token, self.fuse_unk, self.byte_fallback = unk_token, fuse_unk, byte_fallback
        self.prefix, self.suffix = continuing_subword_prefix or "", end_of_word_suffix or ""
        self.ignore_merges = ignore_merges
        plen = len(self.prefix)
        self.merges: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, merge in enumerate(merges):
            a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
            try:
                ia, ib = self.vocab[a], self.vocab[b]
                merged = a + (b[plen:] if plen and b.startswith(self.prefix) else b)
                self.merges[(ia, ib)] = (rank, self.vocab[merged])
            except KeyError as e:
                raise PipelineError(f"BPE merge {a!r} {b!r} uses a token missing from the "
                                    f"vocabulary: {e}") from None
        # pair (a, b) -> one int key a << shift | b: no tuple per lookup in the merge loop
        self._shift = max(max(self.vocab.values(), default=0).bit_length(), 1)
        self._merges_by_key = {a << self._shift | b: m for (a, b), m in self.merges.items()}

    def _symbols(self, word: str) -> list[list]:
        """[id, char_len] per initial symbol (unknown chars -> byte fallback or unk)."""
        syms: list[list] = []
        n = len(word)
        unk = self.vocab.get(self.unk_token) if self.unk_token is not None else None
        for i, c in enumerate(word):
            s = c
            if self.prefix and i > 0:
                s = self.prefix + s
            if self.suffix and i == n - 1:
                s = s + self.suffix
            t = self.vocab.get(s)
            if t is not None:
                syms.append([t, 1])
                continue
            if self.byte_fallback:
                ids = [self.vocab.get(f"<0x{b:02X}>") for b in c.encode("utf-8")]
                if all(x is not None for x in ids):
                    syms.extend([x, 0] for x in ids[:-1])
                    syms.append([ids[-1], 1])
                    continue
            if unk is None:
                continue  # tokenizers drops chars it cannot represent when there is no unk
            if self.fuse_unk and syms and syms[-1][0] == unk and syms[-1][1] > 0:
                syms[-1][1] += 1
            else:
                syms.append([unk, 1])
        return syms

    def _tokenize(self, word):
        if self.ignore_merges and word in self.vocab:
            return [(self.vocab[word], word, 0, len(word))]
        ids = None
        if not self.prefix and not self.suffix:  # byte-level BPE: every char is a symbol
            vocab_get = self.vocab.get
            ids = [vocab_get(c) for c in word]
            if None in ids:
                ids = None
            else:
                lens = [1] * len(ids)
        if ids is None:
            syms = self._symbols(word)
            ids = [t for t, _ in syms]
            lens = [n for _, n in syms]
        if len(ids) > 1:
            self._merge_all(ids, lens)
        out, pos = [], 0
        names = self.id_to_token
        for t, length in zip(ids, lens):
            if t < 0:  # merged into its left neighbour
                continue
            out.append((t, names[t], pos, pos + length))
            pos += length
        return out

    def _merge_all(self, ids: list[int], lens: list[int]) -> None:
        """tokenizers' `Word::merge_all`: a heap of candidate merges ordered by (rank,
        position), stale entries skipped, symbols in a linked list. O(n log n) per word
        (a rescan per merge was O(n^2): a 90-byte Chinese word took ~1 ms). Merged-away
        symbols get id -1; `lens` are char lengths (a byte-fallback byte may have 0)."""
        merges, shift = self._merges_by_key, self._shift
        n = len(ids)
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = []
        for i in range(n - 1):
            m = merges.get(ids[i] << shift | ids[i + 1])
            if m is not None:
                heap.append((m[0], i, m[1]))
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        while heap:
            _, pos, new = pop(heap)
            left = ids[pos]
            if left < 0:
                continue
            j = nxt[pos]
            if j < 0:
                continue
            m = merges.get(left << shift | ids[j])
            if m is None or m[1] != new:  # an expired entry
                continue
            ids[pos] = new
            lens[pos] += lens[j]
            ids[j] = -1
            k = nxt[j]
            nxt[pos] = k
            if k >= 0:
                prv[k] = pos
            p = prv[pos]
            if p >= 0:
                m = merges.get(ids[p] << shift | new)
                if m is not None:
                    push(heap, (m[0], p, m[1]))
            if k >= 0:
                m = merges.get(new << shift | ids[k])
                if m is not None:
                    push(heap, (m[0], pos, m[1]))


class Unigram(Model):
    """Viterbi over the lattice of vocabulary pieces (sentencepiece's unigram model)."""

    UNK_PENALTY = 10.0

    def __init__(self, vocab: list, unk_id: int | None = None, byte_fallback=False,
                 fuse_unk=True):
        super().__init__()
        self.pieces = [(str(p), float(s)) for p, s in vocab]
        self.vocab = {p: i for i, (p, _) in enumerate(self.pieces)}
        self.scores = {p: (i, s) for i, (p, s) in enumerate(self.pieces)}
        self.unk_id, self.byte_fallback, self.fuse_unk = unk_id, byte_fallback, fuse_unk
        self.min_score = min((s for _, s in self.pieces), default=0.0)
        # a char trie of the pieces: node = {char: (children, piece id or -1, score)},
        # walked once per lattice position (no substring objects, no prefix set)
        self._trie: dict = {}
        for i, (piece, score) in enumerate(self.pieces):
            if not piece:
                continue
            node = self._trie
            for c in piece[:-1]:
                entry = node.get(c)
                if entry is None:
                    entry = node[c] = ({}, -1, 0.0)
                node = entry[0]
            entry = node.get(piece[-1])
            node[piece[-1]] = (entry[0] if entry else {}, i, score)

    def _encode(self, text: str) -> list[tuple[str, bool]]:
        """The best segmentation as (piece, is_unk)."""
        n = len(text)
        unk_score = self.min_score - self.UNK_PENALTY
        score = [0.0] * (n + 1)
        start_of = [-1] * (n + 1)
        piece_id = [-1] * (n + 1)
        trie = self._trie
        unk = self.unk_id
        for i in range(n):
            if i and start_of[i] < 0:
                continue
            base = score[i]
            single = False
            node = trie
            j = i
            while j < n:
                entry = node.get(text[j])
                if entry is None:
                    break
                node, pid, piece_score = entry
                j += 1
                if pid < 0:
                    continue
                cand = base + piece_score
                if start_of[j] < 0 or cand > score[j]:
                    score[j], start_of[j], piece_id[j] = cand, i, pid
                if j == i + 1:
                    single = True
            if not single:
                if unk is None:
                    raise PipelineError("Unigram model without unk_id met text it cannot "
                                        f"tokenize: {text[i]!r}")
                cand = base + unk_score
                if start_of[i + 1] < 0 or cand > score[i + 1]:
                    score[i + 1], start_of[i + 1], piece_id[i + 1] = cand, i, unk
        out: list[tuple[str, bool]] = []
        end = n
        pending: list[str] = []
        while end > 0:
            start = start_of[end]
            is_unk = piece_id[end] == unk
            if self.fuse_unk and unk is not None and is_unk:
                pending.append(text[start:end])
            else:
                if pending:
                    out.append(("".join(reversed(pending)), True))
                    pending = []
                out.append((text[start:end], is_unk))
            end = start
        if pending:
            out.append(("".join(reversed(pending)), True))
        out.reverse()
        return out

    def _tokenize(self, word):
        if not word:
            return []
        out, pos = [], 0
        for piece, _ in self._encode(word):
            length = len(piece)
            i = self.vocab.get(piece)
            if i is None:
                if self.byte_fallback:
                    ids = [self.vocab.get(f"<0x{b:02X}>") for b in piece.encode("utf-8")]
                    if all(x is not None for x in ids):
                        out.extend((x, f"<0x{b:02X}>", pos, pos + length)
                                   for x, b in zip(ids, piece.encode("utf-8")))
                        pos += length
                        continue
                i = self.unk_id
            out.append((i, piece, pos, pos + length))
            pos += length
        return out


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
