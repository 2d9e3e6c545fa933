"""Byte-level BPE without a merge loop: a longest-match walk over a byte trie of the
vocabulary that accepts a token only if it is compatible with the one before it.

The idea is the one GitHub's rust-gems `bpe` crate describes (written here from that
description, no code taken). BPE's result for a text is the one token sequence whose
every adjacent pair (t1, t2) is compatible: BPE of text(t1) + text(t2) is [t1, t2]. So
a word is encoded by taking, at each position, the longest vocabulary token there that
is compatible with the previous token, else the next-shorter one, backtracking when none
fits. Since the valid encoding of every prefix is unique too, a position from which no
token fits is dead whatever led there, and is never tried again (so the walk is
O(bytes x tokens per position), never exponential).

A pair is decided from the merge ranks of the two tokens' own split trees: the boundary
between them passes through the pairs (right edge of t1's tree, left edge of t2's), each
for a time window that ends with the next merge that consumed one of its sides; BPE
would have joined across the boundary if any such pair has a merge ranked inside its
window (ties: the leftmost of equal pairs merges first, so a pair left of a merge of the
same rank wins, one right of it loses). Decisions are memoized per pair (at most
PAIR_LIMIT, filled only by the words actually encoded; tokenizers has no such memo: it
runs its merge heap for every new word).

Preconditions, checked at build (else `build` returns None and BPE keeps its merge
loops): one merge per token (each token has one split), every merge ranks after the
merges that made its two parts (a trained table: then a token exists from its own rank
on), 256 distinct byte tokens. Tokens whose own BPE is not themselves never appear in any
result and are left out of the trie (decided by the same pair test on their split).
"""
from __future__ import annotations

from .model_base import char_trie


PAIR_LIMIT = 0x10000  # memoized pair decisions (a function of the merge table)
_NEVER = 1 << 62


class PairEncoder:
    """`encode(data: bytes) -> token ids`, exactly BPE's merges of those bytes."""

    def __init__(self, byte_ids: list[int], merges: dict, rows: list[dict[int, int]],
                 names: dict):
        size = len(rows)
        # rank[t]: the merge that makes t (-1: a byte token, -2: no merge makes it)
        self._rank = rank = [-2] * size
        self._left, self._right = left, right = [0] * size, [0] * size
        for (a, b), (r, t) in merges.items():
            rank[t], left[t], right[t] = r, a, b
        # per left id, {right id: rank}: BPE's own scan-loop rows, read only
        self._rows = rows
        for t in byte_ids:
            rank[t] = -1
        self._shift = max(size.bit_length(), 1)
        self._memo: dict[int, bool] = {}  # a << shift | b -> compatible
        # which merged tokens are their own BPE, and every token's bytes: parts first
        # (shorter text first)
        own = [False] * size
        text = [b""] * size
        for x, t in enumerate(byte_ids):
            own[t] = True
            text[t] = bytes((x,))
        for t in sorted((t for t in range(size) if rank[t] >= 0),
                        key=lambda t: len(names[t])):
            a, b = left[t], right[t]
            text[t] = text[a] + text[b]
            own[t] = own[a] and own[b] and self._compatible(a, b, rank[t])
        self.excluded = sum(1 for t in range(size) if rank[t] >= 0 and not own[t])
        # the byte trie: nodes[k] = {byte: child}; best[k] = the longest token ending at
        # node k or above it (-1: none), so a walk needs no test per byte
        self._length = [len(text[t]) if own[t] else 0 for t in range(size)]
        # `char_trie` over bytes: iterating bytes gives ints, so nodes map byte -> child
        nodes, token_at = char_trie((text[t], t) for t in range(size) if own[t])
        best = [-1] * len(nodes)
        # the next-shorter candidate after t at the same position: the longest token that
        # is a proper prefix of t
        self._shorter = shorter = [-1] * size
        stack = [(0, -1)]
        while stack:  # nodes in any parent-before-child order
            k, above = stack.pop()
            t = token_at[k]
            if t >= 0:
                shorter[t] = above
                above = t
            best[k] = above
            stack.extend((child, above) for child in nodes[k].values())
        self._nodes, self._best = nodes, best

    @classmethod
    def build(cls, byte_ids: list[int] | None, merges: dict, rows: list[dict[int, int]],
              names: dict) -> "PairEncoder | None":
        """The encoder for a merge table {(a, b): (rank, merged id)} over ids <
        len(rows), with `rows[a]` = {b: rank} of its merges (BPE's scan rows), or None
        when a precondition does not hold (see the module docstring)."""
        if byte_ids is None or len(set(byte_ids)) != 256:
            return None
        size = len(rows)
        made: dict[int, int] = {}
        for (a, b), (r, t) in merges.items():
            if t in made or not (0 <= t < size and 0 <= a < size and 0 <= b < size):
                return None  # two merges make one token: two splits
            made[t] = r
        byte_set = set(byte_ids)
        for (a, b), (r, t) in merges.items():
            if t in byte_set or made.get(a, -1) >= r or made.get(b, -1) >= r:
                return None
            if (a not in made and a not in byte_set) or (b not in made and b not in byte_set):
                return None  # a part that is neither a byte nor made by a merge
        return cls(byte_ids, merges, rows, names)

    def _compatible(self, a: int, b: int, limit: int = _NEVER) -> bool:
        """Whether BPE keeps tokens a | b apart (BPE of their bytes is [a, b]; with
        `limit`, whether the boundary stays until that rank). Walks the boundary back in
        time: of the two current edge symbols the later made is split, and the window of
        the pair before it ends at that rank."""
        rows, rank, left, right = self._rows, self._rank, self._left, self._right
        while True:
            r = rows[a].get(b)
            if r is not None and r < limit:
                return False  # BPE would join across the boundary first
            ra, rb = rank[a], rank[b]
            if ra > rb:  # a was made last: before it, its right part was the edge
                limit = ra  # (a pair right of a's merge at equal rank merges later)
                a = right[a]
            elif rb >= 0:  # b made last (or equal: the right twin is made later)
                limit = rb + 1  # (a pair left of b's merge at equal rank merges first)
                b = left[b]
            else:
                return True  # two bytes: nothing earlier to check

    def encode(self, data: bytes) -> list[int] | None:
        """BPE's token ids for `data` (non-empty); None only if the walk found no
        encoding, which the preconditions rule out (the caller then merges)."""
        nodes, best, length, shorter = self._nodes, self._best, self._length, self._shorter
        memo = self._memo
        memo_get, shift = memo.get, self._shift
        n = len(data)
        out: list[int] = []
        pos = 0
        dead = 0  # bit p: no encoding continues from position p
        while True:
            k = 0
            i = pos
            while i < n:  # the longest token at pos: the deepest trie node on the path
                child = nodes[k].get(data[i])
                if child is None:
                    break
                k = child
                i += 1
            t = best[k]
            while True:
                while t >= 0:  # candidates at pos, longest first
                    end = pos + length[t]
                    if not (dead and dead >> end & 1):
                        if not out:
                            break
                        key = out[-1] << shift | t
                        ok = memo_get(key)
                        if ok is None:
                            ok = self._compatible(out[-1], t)
                            if len(memo) < PAIR_LIMIT:
                                memo[key] = ok
                        if ok:
                            break
                    t = shorter[t]
                if t >= 0:
                    break
                # nothing fits here: this position is dead; retry the previous token
                # with its next-shorter candidates (no new trie walk)
                if not out:
                    return None
                dead |= 1 << pos
                t = out.pop()
                pos -= length[t]
                t = shorter[t]
            out.append(t)
            pos = end
            if pos == n:
                return out
