"""Validation on text: the source transformer and the bundle see the same tokenized texts.

The texts go through the bundle's own tokenizer (the pure-Python one the device runs), the
tensors feed both the torch model and the bundle (loaded as a device loads it), and the
record says per output how close they are, plus the task's number: top-1 agreement of
classes (classify_text, and per token for tag_tokens) or the cosine of pooled embeddings
(embed); with labels, the accuracy of both.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgepack.runtime.errors import ValidationError

from .validation import output_stats

log = logging.getLogger(__name__)

BATCH = 16


def _pool(h: np.ndarray, mask: np.ndarray, mode: str) -> np.ndarray:
    if h.ndim == 2:
        return h
    if mode == "cls":
        return h[:, 0]
    m = mask.astype(np.float64)[..., None]
    if mode == "max":
        return np.where(m > 0, h, -np.inf).max(1)
    return (h * m).sum(1) / np.maximum(m.sum(1), 1e-9)


def validate_text(torch_model: Any, bundle_path: Path, texts: Sequence[str], task: str,
                  output_name: str, pooling: str = "mean",
                  labels: Sequence[int] | None = None, min_agreement: float = 0.98,
                  min_cosine: float = 0.99) -> dict[str, Any]:
    """Run both on `texts`; returns the manifest's validation record (never raises)."""
    import torch

    from edgepack.runtime import load
    model = load(bundle_path)
    try:
        encode = model._encode
        ref_all, got_all, masks = [], [], []
        for i in range(0, len(texts), BATCH):
            feeds = encode(list(texts[i:i + BATCH]), None)
            feeds = model.preprocess(feeds)
            with torch.no_grad():
                out = torch_model(**{k: torch.from_numpy(np.asarray(v, np.int64))
                                     for k, v in feeds.items()})
            ref = (out.logits if task != "embed" else out.last_hidden_state).float().numpy()
            got = model.run(feeds)[output_name]
            ref_all.append(ref)
            got_all.append(np.asarray(got, np.float32))
            masks.append(feeds.get("attention_mask", np.ones(ref.shape[:2], np.int64)))
    finally:
        model.close()
    record: dict[str, Any] = {"samples": len(texts), "data": "held-out text", "task": task}
    failures = []
    if task == "classify_text":
        ref, got = np.concatenate(ref_all), np.concatenate(got_all)
        stats = output_stats(ref, got)
        agreement = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
        record["top1_agreement"] = agreement
        if agreement < min_agreement:
            failures.append(f"top-1 agreement {agreement:.3f} < {min_agreement}")
        if labels is not None:
            y = np.asarray(labels).reshape(-1)
            record["task_metric"] = {"metric": "accuracy",
                                     "source": float(np.mean(ref.argmax(-1) == y)),
                                     "bundle": float(np.mean(got.argmax(-1) == y))}
    else:
        # token tensors of different lengths per batch: compare over real tokens only
        stats_parts, agree, cos = [], [], []
        for ref, got, mask in zip(ref_all, got_all, masks):
            keep = mask.astype(bool)
            stats_parts.append(output_stats(ref[keep], got[keep]))
            if task == "tag_tokens":
                agree.append(ref[keep].argmax(-1) == got[keep].argmax(-1))
            else:
                a, b = _pool(ref, mask, pooling), _pool(got, mask, pooling)
                cos.append((a * b).sum(-1) / np.maximum(
                    np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12))
        stats = {k: (min if k == "cosine" else max)(s[k] for s in stats_parts)
                 for k in ("max_abs", "rel_error", "cosine")}
        stats["finite"] = all(s["finite"] for s in stats_parts)
        if task == "tag_tokens":
            agreement = float(np.mean(np.concatenate(agree)))
            record["token_top1_agreement"] = agreement
            if agreement < min_agreement:
                failures.append(f"token top-1 agreement {agreement:.3f} < {min_agreement}")
        else:
            c = np.concatenate(cos)
            record["embedding_cosine"] = {"min": float(c.min()), "mean": float(c.mean())}
            if c.min() < min_cosine:
                failures.append(f"embedding cosine {c.min():.4f} < {min_cosine}")
    if not stats.get("finite", True):
        failures.append(f"{output_name}: non-finite outputs")
    record["outputs"] = {output_name: stats}
    record["failures"] = failures
    record["passed"] = not failures
    return record


def raise_if_failed(record: dict[str, Any], accept: bool) -> None:
    if record["failures"] and not accept:
        raise ValidationError("text validation failed: " + "; ".join(record["failures"]) +
                              " (accept it with accept=True / --accept)", report=record)
