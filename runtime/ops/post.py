"""Output steps: softmax, sigmoid, argmax, topk (with labels), threshold."""
from __future__ import annotations

import numpy as np

from . import Context, Params, register_op


@register_op("softmax")
def _softmax(p: Params, ctx: Context):
    axis = p.integer("axis", -1)

    def softmax(x):
        x = np.asarray(x, dtype=np.float32)
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
    return softmax


@register_op("sigmoid")
def _sigmoid(p: Params, ctx: Context):
    def sigmoid(x):
        x = np.asarray(x, dtype=np.float32)
        # Split by sign so exp never overflows.
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
    return sigmoid


@register_op("argmax")
def _argmax(p: Params, ctx: Context):
    axis = p.integer("axis", -1)
    return lambda x: np.argmax(np.asarray(x), axis=axis)


@register_op("topk")
def _topk(p: Params, ctx: Context):
    """Top-k along the last axis as [{"index", "label", "score"}], one list per batch row."""
    k = p.integer("k", 5, minimum=1)
    labels = list(ctx.labels) if ctx.labels else None

    def row(scores):
        count = min(k, scores.shape[-1])
        best = np.argpartition(-scores, count - 1)[:count]
        best = best[np.argsort(-scores[best], kind="stable")]
        return [{"index": int(i),
                 "label": labels[i] if labels and i < len(labels) else str(int(i)),
                 "score": float(scores[i])} for i in best]

    def topk(x):
        x = np.asarray(x)
        if x.ndim == 1:
            return row(x)
        return [row(r) for r in x.reshape(-1, x.shape[-1])]
    return topk
