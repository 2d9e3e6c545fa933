"""BPE: merges by rank, byte-level (GPT-2 style) or over chars, with tokenizers' merge order.

reference: hf-tokenizers models/bpe, tokenizers 0.2x.
"""
from __future__ import annotations

import heapq
from itertools import accumulate, islice
from typing import Mapping

from ..errors import PipelineError
from .bpe_pairs import PairEncoder
from .model_base import Model
from .pretokenizers import BYTE_CHARS

CHUNK_LIMIT = 20000  # byte-level BPE's cached CJK chunks (emptied when full)
# `BPE._merge_ids`: words up to this many symbols take the scan (fewer instructions
# than the heap up to 40-64 bytes), longer ones the heap; the rank of a pair with no merge
SCAN_LIMIT = 48
_NO_RANK = 1 << 62
# UTF-8 byte -> 1 if it starts a char, 0 for a continuation byte (0x80-0xBF)
_LEAD_BYTES = bytes(0 if 0x80 <= b < 0xC0 else 1 for b in range(256))


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
        # byte-level results: token text and byte length by id (lists where ids fit one)
        if self._scan_ok:
            self._names = [self.id_to_token.get(i, "") for i in range(top + 1)]
            self._lengths = [len(t) for t in self._names]
        else:
            self._names = self.id_to_token
            self._lengths = {i: len(t) for i, t in self.id_to_token.items()}
        # byte-level words encoded by token-pair compatibility (`bpe_pairs`), no merge
        # loop; None where its preconditions fail
        self._pairs = PairEncoder.build(self._byte_ids, self.merges, self._rows,
                                        self.id_to_token) if self._scan_ok else None

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
        """(ids, tokens, char spans in `word`) of one word before its byte mapping, from
        its UTF-8 bytes (no mapped string): the pair walk of `bpe_pairs` where the table
        allows it, else the merge loop; None when this is not a byte-level BPE (a byte
        char missing from the vocabulary, a prefix/suffix, ignore_merges).

        The word is cut where no merge can ever join across: between bytes x, y when no
        vocabulary token holds the bigram xy (every merged symbol is a token equal to the
        bytes it covers, so no pair across such a cut is ever in the merge table and the
        two sides merge independently: exactly the same result). The chunks (for Chinese
        mostly one char, shared by many words) are encoded once and cached.

        Each token is the byte chars it covers, one char per byte, so the tokens' byte
        starts are the running sum of their lengths."""
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
            # (zip of the bytes with their successors: ~10% less than indexing both)
            cuts = [k for k, x, y in zip(range(1, n), data, data[1:])
                    if x << 8 | y not in bigrams]
        pairs = self._pairs
        if not cuts:
            # the pair walk where most chars are multi-byte (Cyrillic, Greek: ~16 bytes a
            # word, 95k -> 58k instructions); words of mostly one-byte chars merge (fewer
            # instructions with the walk too, 51k -> 40k, but no faster in situ)
            ids = pairs.encode(data) if pairs is not None and 2 * n >= 3 * len(word) \
                else None
            if ids is None:
                ids = [table[b] for b in data]
                if n > 1:
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
                    hit = pairs.encode(piece) if pairs is not None else None
                    if hit is None:
                        hit = self._merge_ids([table[b] for b in piece])
                    hit = chunks[piece] = tuple(hit)
                ids += hit
                lo = hi
        names = self._names
        if len(ids) == 1:
            return (ids[0],), (names[ids[0]],), ((0, len(word)),)
        # one plain loop (fewer instructions here than a comprehension and a zip)
        lengths = self._lengths
        tokens = []
        spans = []
        pos = 0
        if n == len(word):  # ASCII: bytes are chars
            for t in ids:
                tokens.append(names[t])
                end = pos + lengths[t]
                spans.append((pos, end))
                pos = end
            return tuple(ids), tuple(tokens), tuple(spans)
        # bytes -> chars: a token spans from the char holding its first byte to the one
        # holding its last (tokens may cut a char's bytes); chars start at non-continuation
        # bytes, so the running count of those (C-level) is the char index + 1 per byte
        count = list(accumulate(data.translate(_LEAD_BYTES)))
        for t in ids:
            tokens.append(names[t])
            end = pos + lengths[t]
            spans.append((count[pos] - 1, count[end - 1]))
            pos = end
        return tuple(ids), tuple(tokens), tuple(spans)

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
