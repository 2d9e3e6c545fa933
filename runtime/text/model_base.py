"""What every tokenizer model shares: the `Model` base with its bounded per-word cache, the
cache entries' frozen form, and the GC-quiet char trie WordPiece and Unigram walk."""
from __future__ import annotations

Token = tuple  # (id, token, start, end)
# per-word caches: tokenizers' DEFAULT_CACHE_CAPACITY and its policy (a full cache takes no
# new words), so a held-out comparison has both caching the same words
CACHE_LIMIT = 10000


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


def char_trie(items) -> tuple[list[dict], list[int]]:
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
