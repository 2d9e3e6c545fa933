"""Unstructured magnitude pruning for Keras models (Dense and Conv kernels).

Keras has no module graph to rewrite, so only the unstructured method is offered here: the
smallest-|w| kernel entries are set to zero in place with `set_weights`, which makes the
zeros permanent in whatever the model is saved or converted to. Structured pruning and
fine-tuning with masks are PyTorch-only.
"""
from __future__ import annotations

import logging

import numpy as np

from .config import MagnitudePruneConfig
from .errors import OptimizeError, UnknownLayerError
from .magnitude import LayerSparsity, SparsityReport

log = logging.getLogger(__name__)

_KERNEL_LAYERS = ("Dense", "Conv1D", "Conv2D", "Conv3D")


def is_keras_model(model) -> bool:
    """True for a keras / tf.keras model, judged by its class module (no TF import)."""
    return any(type(model).__module__.split(".")[0] == root
               for root in ("keras", "tf_keras", "tensorflow"))


def _kernel_layers(model) -> dict:
    layers = {}
    for layer in getattr(model, "layers", ()):
        if type(layer).__name__ in _KERNEL_LAYERS and getattr(layer, "kernel", None) is not None:
            layers[layer.name] = layer
    return layers


def _drop_smallest(scores: np.ndarray, count: int) -> np.ndarray:
    keep = np.ones(scores.size, dtype=bool)
    if count > 0:
        keep[np.argpartition(scores.ravel(), count - 1)[:count]] = False
    return keep.reshape(scores.shape)


def prune_magnitude_keras(model, config: MagnitudePruneConfig = MagnitudePruneConfig()
                          ) -> SparsityReport:
    """Zero the smallest-magnitude kernel weights of a Keras model's Dense/Conv layers.

    Same config and semantics as the PyTorch `prune_magnitude` (global or per-layer ranking,
    `exclude` by layer name; biases stay dense). Returns the per-layer `SparsityReport`.
    Raises `UnknownLayerError` for excluded names the model lacks.
    """
    layers = _kernel_layers(model)
    unknown = [n for n in config.exclude if n not in layers]
    if unknown:
        raise UnknownLayerError(
            f"excluded layer {', '.join(repr(n) for n in unknown)} not among the model's "
            f"Dense/Conv layers: {', '.join(layers) or '(none)'}")
    targets = {n: l for n, l in layers.items() if n not in config.exclude}
    if not targets:
        raise OptimizeError("no Dense/Conv layer left to prune; check `exclude`")
    kernels = {n: np.asarray(l.kernel.numpy()) for n, l in targets.items()}
    if config.scope == "global":
        flat = np.concatenate([np.abs(k).ravel() for k in kernels.values()])
        keep = _drop_smallest(flat, int(round(config.sparsity * flat.size)))
        masks, offset = {}, 0
        for name, kernel in kernels.items():
            masks[name] = keep[offset:offset + kernel.size].reshape(kernel.shape)
            offset += kernel.size
    else:
        masks = {n: _drop_smallest(np.abs(k), int(round(config.sparsity * k.size)))
                 for n, k in kernels.items()}
    for name, layer in targets.items():
        layer.kernel.assign(kernels[name] * masks[name])
    rows = []
    for name, layer in layers.items():
        kernel = np.asarray(layer.kernel.numpy())
        rows.append(LayerSparsity(name=name, kind=type(layer).__name__, params=kernel.size,
                                  zeros=int(kernel.size - np.count_nonzero(kernel))))
    report = SparsityReport(tuple(rows))
    log.info("keras magnitude pruning (%s, %.2f): %d of %d kernel weights are zero",
             config.scope, config.sparsity, report.zeros, report.params)
    return report
