"""BPE: merges by rank, byte-level (GPT-2 style) or over chars, with tokenizers' merge order.

reference: hf-tokenizers models/bpe, tokenizers 0.2x.
"""
from __future__ import annotations

import heapq
from itertools import accumulate, islice
from typing import Mapping

from ..errors import PipelineError
from .model_base import Model
from .pretokenizers import BYTE_CHARS

CHUNK_LIMIT = 20000  # byte-level BPE's cached CJK chunks (emptied when full)
# `BPE._merge_ids`: words up to this many symbols take the scan (fewer instructions
# than the heap up to 40-64 bytes), longer ones the heap; the rank of a pair with no merge
SCAN_LIMIT = 48
_NO_RANK = 1 << 62
CHAR_LIMIT = 0x10000  # `BPE._char_ids` memo: chars, not words (tokenizers has none)
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
