"""WordPiece: greedy longest match with a continuation prefix (BERT's `##`).

reference: hf-tokenizers models/wordpiece, tokenizers 0.2x.
"""
from __future__ import annotations

from typing import Mapping

from ..errors import PipelineError
from .model_base import Model, char_trie


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
        # char tries (see `char_trie`): the longest match from a position is one forward
        # walk (no candidate substrings built and looked up)
        self._first = char_trie((t, i) for t, i in self.vocab.items())
        p = len(self.prefix)
        self._continuing = char_trie((t[p:], i) for t, i in self.vocab.items()
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
