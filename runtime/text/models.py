"""Tokenizer models: WordPiece, byte-level BPE, Unigram. Each turns one pre-tokenized word
into [(id, token, start, end)] with char offsets inside the word, and caches per word.

reference: hf-tokenizers (models/wordpiece, models/bpe, models/unigram), tokenizers 0.2x.
"""
from __future__ import annotations

import heapq
from itertools import accumulate, islice
from typing import Any, Mapping

from ..errors import PipelineError
from .pretokenizers import BYTE_CHARS

Token = tuple  # (id, token, start, end)
# per-word caches: tokenizers' DEFAULT_CACHE_CAPACITY and its policy (a full cache takes no
# new words), so a held-out comparison has both caching the same words
CACHE_LIMIT = 10000
CHUNK_LIMIT = 20000  # byte-level BPE's cached CJK chunks (emptied when full)
_NEG_INF = float("-inf")
# `BPE._merge_ids`: words up to this many symbols take the scan (fewer instructions
# than the heap up to 40-64 bytes), longer ones the heap; the rank of a pair with no merge
SCAN_LIMIT = 48
_NO_RANK = 1 << 62
CHAR_LIMIT = 0x10000  # `BPE._char_ids` memo: chars, not words (tokenizers has none)
# UTF-8 byte -> 1 if it starts a char, 0 for a continuation byte (0x80-0xBF)
_LEAD_BYTES = bytes(0 if 0x80 <= b < 0xC0 else 1 for b in range(256))


def frozen(ids, tokens, spans) -> tuple[tuple, tuple, tuple]:
    """A cache entry: tuples of ints, strs and (int, int) tuples only. The cyclic GC
    untracks such tuples at the first collection they survive, so cached words add nothing
    to what a full collection walks, nor to the count that triggers one (as lists they
    did: one full collection, 40-60 ms on this host, landed in a held-out pass of 1,000
    sentences and cost 40-60 us a sentence)."""
    return tuple(ids), tuple(tokens), tuple(spans)


class Model:
    """Base: `tokenize(word) -> [(id, token, start, end)]`; `tokenize_cached(word)` ->
    (ids, tokens, spans) tuples from a bounded per-word cache (the hot path)."""

    vocab: dict[str, int]

    def __init__(self):
        self._cache: dict[str, tuple[tuple, tuple, tuple]] = {}

    def tokenize(self, word: str) -> list[Token]:
        return self._tokenize(word)

    def tokenize_cached(self, word: str) -> tuple[tuple, tuple, tuple]:
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        hit = frozen(*self._lists(word))
        if len(self._cache) < CACHE_LIMIT:
            self._cache[word] = hit
        return hit

    def _lists(self, word: str) -> tuple[list, list, list]:
        """(ids, tokens, spans) of one word, uncached."""
        tokens = self._tokenize(word)
        return ([t[0] for t in tokens], [t[1] for t in tokens], [(t[2], t[3]) for t in tokens])

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
        # char tries (see `_char_trie`): the longest match from a position is one forward
        # walk (no candidate substrings built and looked up)
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
        chars = word if word.isascii() else list(word)  # see Unigram._viterbi
        while start < n:
            nodes, ids = trie
            node, best, end, j = nodes[0], -1, start, start
            while j < n:
                k = node.get(chars[j])
                if k is None:
                    break
                node = nodes[k]
                j += 1
                if ids[k] >= 0:
                    best, end = ids[k], j
            if best < 0:
                return [(self.unk_id, self.unk_token, 0, n)]
            out.append((best, word[start:end] if start == 0 else self.prefix + word[start:end],
                        start, end))
            start = end
            trie = self._continuing
        return out


def _char_trie(items) -> tuple[list[dict], list[int]]:
    """A char trie over (string, id) pairs: (nodes, ids), node 0 the root, nodes[k] =
    {char: child node index}, ids[k] the id of the string ending at node k (-1: none).
    Nodes hold only strs and ints, so the cyclic GC never tracks them (a nested trie of
    dicts in tuples, for an 8,000-piece vocabulary, was ~28,000 objects that every
    collection until the next full one walked and counted toward triggering it)."""
    nodes: list[dict] = [{}]
    ids = [-1]
    for text, token_id in items:
        if not text:
            continue
        k = 0
        for c in text:
            child = nodes[k].get(c)
            if child is None:
                child = nodes[k][c] = len(nodes)
                nodes.append({})
                ids.append(-1)
            k = child
        ids[k] = token_id
    return nodes, ids


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
        self._rank_by_key = {a << self._shift | b: rank for (a, b), (rank, _) in
                             self.merges.items()}
        self._merged_id = [0] * len(merges)
        for rank, merged_id in self.merges.values():
            self._merged_id[rank] = merged_id
        # byte-level: the id of each byte's GPT-2 char, to start merging from a word's
        # UTF-8 bytes directly (None when this BPE is not byte-level)
        table = [self.vocab.get(BYTE_CHARS[b]) for b in range(256)]
        self._byte_ids = None if (None in table or self.prefix or self.suffix or
                                  ignore_merges) else table
        # byte bigrams x << 8 | y inside any token made of byte chars: a word may be cut
        # between two bytes that form none of them (see `byte_level`)
        byte_of = {c: b for b, c in BYTE_CHARS.items()}
        self._bigrams: set[int] = set()
        for token in self.vocab:
            codes = [byte_of.get(c) for c in token]
            if len(codes) > 1 and None not in codes:
                self._bigrams.update(x << 8 | y for x, y in zip(codes, codes[1:]))
        self._chunks: dict[bytes, tuple[tuple, tuple]] = {}  # tuples: see `frozen`
        # the scan merge loop (`_merge_ids`): per left id, {right id: rank} (a list index
        # and a small int-keyed dict: fewer instructions than one dict keyed by pair
        # tuples or by packed ints). Kept to tables with one merge per token (tokenizers
        # tells a stale heap entry by its merged id; with one merge per token that is the
        # pair itself, what the scan compares) and ids that fit a list; others: the heap
        top = max(self.vocab.values(), default=-1)
        self._scan_ok = len({m for _, m in self.merges.values()}) == len(self.merges) \
            and 0 <= min(self.vocab.values(), default=0) and top < 4 * len(self.vocab) + 256
        empty: dict[int, int] = {}
        self._rows: list[dict[int, int]] = [empty] * (top + 1 if self._scan_ok else 0)
        for (a, b), (rank, _) in self.merges.items():
            if self._scan_ok:
                if self._rows[a] is empty:
                    self._rows[a] = {}
                self._rows[a][b] = rank
        # `_char_ids`: a non-ASCII char's bytes merged ahead where that is exact; needs
        # every merge to rank after the merges that made its two parts (a trained table)
        made = {m: rank for rank, m in enumerate(self._merged_id)}
        self._premerge = self._scan_ok and all(
            made.get(a, -1) < rank and made.get(b, -1) < rank
            for (a, b), (rank, _) in self.merges.items())
        # the lowest rank of a merge (x, t) by t and the last byte of x, and of a merge
        # (t, y) by t and the first byte of y: what a char's neighbours can merge with
        # (per token: {byte: lowest rank}, so a char's check walks only real merges)
        self._lowest_after: dict[int, dict[int, int]] = {}
        self._lowest_before: dict[int, dict[int, int]] = {}
        if self._premerge:
            byte_of = {c: b for b, c in BYTE_CHARS.items()}
            names = self.id_to_token
            for (a, b), (rank, _) in self.merges.items():
                row = self._lowest_after.setdefault(b, {})
                x = byte_of[names[a][-1]]
                if rank < row.get(x, _NO_RANK):
                    row[x] = rank
                row = self._lowest_before.setdefault(a, {})
                y = byte_of[names[b][0]]
                if rank < row.get(y, _NO_RANK):
                    row[y] = rank
        self._char_memo: dict[str, tuple] = {}  # bounded by CHAR_LIMIT: see `_char_ids`

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
                starts = None  # symbol i starts at char i
        if ids is None:
            syms = self._symbols(word)
            ids = [t for t, _ in syms]
            starts, pos = [], 0
            for _, length in syms:
                starts.append(pos)
                pos += length
            end_all = pos  # chars tokenizers drops (no unk) take no room
        else:
            end_all = len(word)
        nxt = self._merge_all(ids)
        out = []
        names = self.id_to_token
        i = 0 if ids else -1
        while i >= 0:
            j = nxt[i]
            s = i if starts is None else starts[i]
            e = end_all if j < 0 else (j if starts is None else starts[j])
            out.append((ids[i], names[ids[i]], s, e))
            i = j
        return out

    def byte_level(self, word: str) -> tuple[tuple, tuple, tuple] | None:
        """(ids, tokens, char spans in `word`) of one word before its byte mapping, merged
        from the byte tokens' ids (no mapped string); None when this is not a byte-level
        BPE (a byte char missing from the vocabulary, a prefix/suffix, ignore_merges).

        The word is cut where no merge can ever join across: between bytes x, y when no
        vocabulary token holds the bigram xy (every merged symbol is a token equal to the
        bytes it covers, so no pair across such a cut is ever in the merge table and the
        two sides merge independently: exactly the same result). The chunks (for Chinese
        mostly one char, shared by many words) are merged once and cached.

        Each merged token is the byte chars it covers, one char per byte, so the tokens'
        byte starts are the running sum of their lengths (no position tracked in the
        merge loop)."""
        table = self._byte_ids
        if table is None:
            return None
        data = word.encode("utf-8")
        n = len(data)
        # only words of mostly 3-4 byte chars (CJK) are worth the scan: English or
        # Cyrillic words hold ~0.5 cuts each (letter bigrams are in many tokens)
        cuts = None
        if n > 2 * len(word):
            bigrams = self._bigrams
            cuts = [k for k in range(1, n) if data[k - 1] << 8 | data[k] not in bigrams]
        if not cuts:
            # merging chars ahead pays where most chars are multi-byte (Cyrillic, Greek),
            # not for a German word with one umlaut (its per-char loop costs more)
            if 2 * n < 3 * len(word) or not self._premerge:
                ids = [table[b] for b in data]
            else:  # each char's bytes as merged ahead (`_char_ids`): fewer merges left
                memo = self._char_memo
                chars = [memo.get(c) or self._char_ids(c) for c in word]
                ids = []
                before = 0  # the bit of the byte before this char (1 << byte + 1; 0: none)
                after = [c[2] for c in chars]
                after.append(0)
                k = 1
                for merged, raw, first, last, bad_before, bad_after in chars:
                    if merged is raw or before & bad_before or after[k] & bad_after:
                        ids += raw
                    else:
                        ids += merged
                    before = last
                    k += 1
            if len(ids) > 1:
                ids = self._merge_ids(ids)
        else:
            ids = []
            chunks = self._chunks
            lo = 0
            cuts.append(n)
            for hi in cuts:
                piece = data[lo:hi]
                hit = chunks.get(piece)
                if hit is None:
                    if len(chunks) >= CHUNK_LIMIT:
                        chunks.clear()  # bounded; refills with the chunks in use
                    hit = chunks[piece] = tuple(self._merge_ids([table[b] for b in piece]))
                ids += hit
                lo = hi
        names = self.id_to_token
        tokens = tuple([names[t] for t in ids])
        if len(ids) == 1:
            return (ids[0],), tokens, ((0, len(word)),)
        starts = [0]
        pos = 0
        for token in tokens:
            pos += len(token)
            starts.append(pos)
        if n == len(word):  # ASCII: bytes are chars
            return tuple(ids), tokens, tuple(zip(starts, islice(starts, 1, None)))
        # bytes -> chars: a token spans from the char holding its first byte to the one
        # holding its last (tokens may cut a char's bytes); chars start at non-continuation
        # bytes, so the running count of those (C-level) is the char index + 1 per byte
        count = list(accumulate(data.translate(_LEAD_BYTES)))
        return tuple(ids), tokens, tuple([(count[s] - 1, count[e - 1])
                                          for s, e in zip(starts, islice(starts, 1, None))])

    def _char_ids(self, c: str) -> tuple:
        """One char's (merged ids, raw byte ids, first byte, last byte, bytes before
        it, bytes after it that forbid the merged ids; bytes as bits, sets of them as
        int masks), memoized per char (a function
        of the merge table: at most the alphabet, CHAR_LIMIT).

        The char's bytes are merged alone (lowest rank first); R is the highest rank
        used, and the symbols seen at its two edges along the way are noted. A symbol
        left of the char always ends with the byte before it, so if no merge (x, e),
        x ending with that byte and e a left-edge symbol, ranks at or below R (and
        likewise on the right with the byte after it), no neighbour's merge can come
        between the char's own: merges pop in rank order in a table where each merge
        ranks after the merges of its parts. The char then reaches the same symbols in
        the word, and merging the word from them is exact; else the raw bytes."""
        table = self._byte_ids
        data = c.encode("utf-8")
        raw = tuple([table[b] for b in data])
        ids, highest = list(raw), -1
        lefts, rights = {ids[0]}, {ids[-1]}
        rows, merged = self._rows, self._merged_id
        while len(ids) > 1:
            ranks = [rows[a].get(b, _NO_RANK) for a, b in zip(ids, ids[1:])]
            r = min(ranks)
            if r == _NO_RANK:
                break
            i = ranks.index(r)
            ids[i:i + 2] = [merged[r]]
            highest = r
            lefts.add(ids[0])
            rights.add(ids[-1])
        # bytes as bits 1 << (byte + 1) and sets of them as int masks: a memo of ints and
        # tuples only, which the cyclic GC stops tracking (see `frozen`)
        first, last = 2 << data[0], 2 << data[-1]
        if highest < 0:
            out = (raw, raw, first, last, 0, 0)
        else:
            after, before, none = self._lowest_after, self._lowest_before, {}
            bad_before = bad_after = 0
            for t in lefts:
                for x, r in after.get(t, none).items():
                    if r <= highest:
                        bad_before |= 2 << x
            for t in rights:
                for y, r in before.get(t, none).items():
                    if r <= highest:
                        bad_after |= 2 << y
            out = (tuple(ids), raw, first, last, bad_before, bad_after)
        if len(self._char_memo) < CHAR_LIMIT:
            self._char_memo[c] = out
        return out

    def _merge_ids(self, ids: list[int]) -> list[int]:
        """The merged symbols' ids (a new list or `ids` itself, changed). Short words: a
        scan for the lowest-ranked adjacent pair, leftmost first (min and index run in
        C), each merge a two-item edit of the pair-rank list; that is the order of
        tokenizers' heap exactly (it pops the lowest (rank, position) among the current
        pairs; a popped entry whose pair has changed is skipped by its merged id, the
        same test when no two merges make one token: `_scan_ok`). Words over
        SCAN_LIMIT symbols take the heap (`_merge_all`: the scan is O(n) per merge).
        Instruction counts (callgrind) per held-out new word, heap -> scan: en 63k ->
        50k, ru 131k -> 119k, zh 71k -> 62k."""
        if len(ids) > SCAN_LIMIT or not self._scan_ok:
            self._merge_all(ids)
            return list(filter((0).__le__, ids))
        rows, merged, none = self._rows, self._merged_id, _NO_RANK
        ranks = [rows[a].get(b, none) for a, b in zip(ids, islice(ids, 1, None))]
        while ranks:
            r = min(ranks)
            if r == none:
                break
            i = ranks.index(r)
            new = merged[r]
            ids[i] = new
            del ids[i + 1]
            del ranks[i]
            if i:
                ranks[i - 1] = rows[ids[i - 1]].get(new, none)
            if i < len(ranks):
                ranks[i] = rows[new].get(ids[i + 1], none)
        return ids

    def _merge_all(self, ids: list[int]) -> list[int]:
        """tokenizers' `Word::merge_all`: a heap of candidate merges ordered by (rank,
        position), stale entries skipped, symbols in a linked list. O(n log n) per word
        (a rescan per merge was O(n^2): a 90-byte Chinese word took ~1 ms). Heap entries
        are single ints rank << bits | position (int compares, no tuple per entry).
        Merged-away symbols get id -1; returns the `next` links (symbol i spans up to
        the next surviving one)."""
        ranks, shift, merged = self._rank_by_key, self._shift, self._merged_id
        n = len(ids)
        nxt = list(range(1, n + 1))
        if not n:
            return nxt
        nxt[-1] = -1
        bits = n.bit_length()
        heap = []
        a = ids[0]
        for i in range(1, n):
            b = ids[i]
            r = ranks.get(a << shift | b)
            if r is not None:
                heap.append(r << bits | i - 1)
            a = b
        if not heap:
            return nxt
        prv = list(range(-1, n - 1))
        heapq.heapify(heap)
        pop, push = heapq.heappop, heapq.heappush
        mask = (1 << bits) - 1
        while heap:
            top = pop(heap)
            pos = top & mask
            left = ids[pos]
            if left < 0:
                continue
            j = nxt[pos]
            if j < 0:
                continue
            r = top >> bits
            now = ranks.get(left << shift | ids[j])
            if now != r and (now is None or merged[now] != merged[r]):
                continue  # an expired entry (tokenizers compares the merged id)
            new = merged[r]
            ids[pos] = new
            ids[j] = -1
            k = nxt[j]
            nxt[pos] = k
            if k >= 0:
                prv[k] = pos
                r = ranks.get(new << shift | ids[k])
                if r is not None:
                    push(heap, r << bits | pos)
            p = prv[pos]
            if p >= 0:
                r = ranks.get(ids[p] << shift | new)
                if r is not None:
                    push(heap, r << bits | p)
        return nxt


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
        # a char trie of the pieces (`_char_trie`) and each node's piece score, walked
        # once per lattice position (no substring objects, no prefix set)
        self._nodes, self._node_ids = _char_trie((p, i) for i, (p, _) in
                                                 enumerate(self.pieces))
        self._node_scores = [self.pieces[i][1] if i >= 0 else 0.0 for i in self._node_ids]

    def _viterbi(self, text: str) -> tuple[list[int], list[int]]:
        """Best-path links: for each end position, the start and piece id of the best
        piece ending there (-1 where unreachable). Scores start at -inf, so a candidate
        wins on a strict `>` alone (the first of equal scores stays, as before); the
        first trie step is unrolled (it also tells whether a one-char piece exists)."""
        n = len(text)
        unk_score = self.min_score - self.UNK_PENALTY
        score = [_NEG_INF] * (n + 1)
        score[0] = 0.0
        start_of = [-1] * (n + 1)
        piece_id = [-1] * (n + 1)
        nodes, node_ids, node_scores = self._nodes, self._node_ids, self._node_scores
        trie_get = nodes[0].get
        unk = self.unk_id
        # each char as one str object: indexing a non-Latin-1 str makes a new one (and
        # hashes it again) on every trie step, and a char is stepped on up to the longest
        # piece's length times
        chars = list(text)
        for i in range(n):
            base = score[i]
            if base == _NEG_INF:
                continue  # no path reaches i
            k = trie_get(chars[i])
            single = False
            if k is not None:
                pid = node_ids[k]
                if pid >= 0:
                    single = True
                    cand = base + node_scores[k]
                    if cand > score[i + 1]:
                        score[i + 1], start_of[i + 1], piece_id[i + 1] = cand, i, pid
                j = i + 1
                while j < n:
                    k = nodes[k].get(chars[j])
                    if k is None:
                        break
                    j += 1
                    pid = node_ids[k]
                    if pid >= 0:
                        cand = base + node_scores[k]
                        if cand > score[j]:
                            score[j], start_of[j], piece_id[j] = cand, i, pid
            if not single:
                if unk is None:
                    raise PipelineError("Unigram model without unk_id met text it cannot "
                                        f"tokenize: {chars[i]!r}")
                cand = base + unk_score
                if cand > score[i + 1]:
                    score[i + 1], start_of[i + 1], piece_id[i + 1] = cand, i, unk
        return start_of, piece_id

    def _encode(self, text: str, links: tuple | None = None) -> list[tuple[int, int, int]]:
        """The best segmentation as (start, end, piece id), runs of unknown pieces fused
        into one (id -2) when fuse_unk. `links`: `_viterbi(text)` if already run."""
        start_of, piece_id = links or self._viterbi(text)
        unk = self.unk_id
        fuse = self.fuse_unk and unk is not None
        out: list[tuple[int, int, int]] = []
        end = len(text)
        pending_end = -1  # end of the unknown run being fused
        while end > 0:
            start = start_of[end]
            pid = piece_id[end]
            if fuse and pid == unk:
                if pending_end < 0:
                    pending_end = end
            else:
                if pending_end >= 0:
                    out.append((end, pending_end, -2))
                    pending_end = -1
                out.append((start, end, pid))
            end = start
        if pending_end >= 0:
            out.append((0, pending_end, -2))
        out.reverse()
        return out

    def _lists(self, word):
        """Straight from the lattice links, no intermediate tuples; runs of unknown
        pieces as `_tokenize` makes them (fused when fuse_unk, the run's id if it is a
        piece, else unk), byte fallback by `_tokenize` itself (a Chinese word with an
        unknown char, one in five, took that path and cost twice the others)."""
        if not word:
            return [], [], []
        links = start_of, piece_id = self._viterbi(word)
        unk = self.unk_id
        ids, tokens, spans = [], [], []
        end = len(word)
        while end > 0:
            i = piece_id[end]
            start = start_of[end]
            if i == unk:  # a run of unknown pieces (fused), looked up as a whole
                if self.byte_fallback:  # the general path, from the same lattice
                    out = self._tokenize(word, links)
                    return ([t[0] for t in out], [t[1] for t in out],
                            [(t[2], t[3]) for t in out])
                if self.fuse_unk:
                    while start > 0 and piece_id[start] == unk:
                        start = start_of[start]
                piece = word[start:end]
                i = self.vocab.get(piece, unk)
                ids.append(i)
                tokens.append(piece)
                spans.append((start, end))
                end = start
                continue
            ids.append(i)
            tokens.append(word[start:end])
            spans.append((start, end))
            end = start
        ids.reverse()
        tokens.reverse()
        spans.reverse()
        return ids, tokens, spans

    def _tokenize(self, word, links: tuple | None = None):
        if not word:
            return []
        out = []
        unk = self.unk_id
        for start, end, i in self._encode(word, links):
            piece = word[start:end]
            if i == unk or i == -2:  # unknown (fused) pieces: looked up as a whole
                i = self.vocab.get(piece)
                if i is None:
                    if self.byte_fallback:
                        data = piece.encode("utf-8")
                        ids = [self.vocab.get(f"<0x{b:02X}>") for b in data]
                        if all(x is not None for x in ids):
                            out.extend((x, f"<0x{b:02X}>", start, end)
                                       for x, b in zip(ids, data))
                            continue
                    i = unk
            out.append((i, piece, start, end))
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
