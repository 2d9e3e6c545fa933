"""Unigram: Viterbi over the lattice of vocabulary pieces (sentencepiece's unigram model).

reference: hf-tokenizers models/unigram, tokenizers 0.2x.
"""
from __future__ import annotations

from ..errors import PipelineError
from .model_base import Model, char_trie

_NEG_INF = float("-inf")


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
        # a char trie of the pieces (`char_trie`) and each node's piece score, walked
        # once per lattice position (no substring objects, no prefix set)
        self._nodes, self._node_ids = char_trie((p, i) for i, (p, _) in
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
        # piece's length times; a None at the end stops every walk (no trie node has a
        # None child), so the inner loop needs no bound test
        chars = list(text)
        chars.append(None)
        for i in range(n):
            base = score[i]
            if base == _NEG_INF:
                continue  # no path reaches i
            k = trie_get(chars[i])
            if k is not None:
                first = node_ids[k]
                if first >= 0:
                    cand = base + node_scores[k]
                    if cand > score[i + 1]:
                        score[i + 1], start_of[i + 1], piece_id[i + 1] = cand, i, first
                j = i + 1
                k = nodes[k].get(chars[j])
                while k is not None:
                    j += 1
                    pid = node_ids[k]
                    if pid >= 0:
                        cand = base + node_scores[k]
                        if cand > score[j]:
                            score[j], start_of[j], piece_id[j] = cand, i, pid
                    k = nodes[k].get(chars[j])
                if first >= 0:
                    continue
            # no one-char piece here: an unknown piece (it reaches only i + 1, so its
            # place after the longer pieces from i changes nothing)
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
