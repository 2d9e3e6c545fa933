"""Model optimization before conversion: pruning, fine-tuning and knowledge distillation.

Workstation side (imports torch). Typical use::

    from edgepack import optimize
    result = optimize.prune_structured(model, example, optimize.StructuredPruneConfig(0.5))
    optimize.fine_tune(model, (x_train, y_train), optimize.TrainConfig(epochs=3))
    optimize.save_weights(model, "pruned.pt")      # feeds `edgepack convert`
"""
from .config import DistillConfig, MagnitudePruneConfig, StructuredPruneConfig, TrainConfig
from .distill import DistillResult, distill, distillation_loss
from .errors import OptimizeError, UnknownLayerError, UnrewritableLayerError
from .keras_magnitude import is_keras_model, prune_magnitude_keras
from .io import build_model, load_weights, resolve_factory, save_weights
from .layers import count_nonzero, count_parameters, prunable_layers
from .magnitude import (LayerSparsity, MagnitudePruneResult, SparsityReport, apply_masks,
                        prune_magnitude, sparsity_report)
from .structured import ChannelChange, StructuredPruneResult, prune_structured
from .train import EpochStats, FineTuneResult, History, evaluate, fine_tune


def prune(model, config, example_input=None):
    """Prune `model` in place with the method the config names.

    `MagnitudePruneConfig` -> `prune_magnitude(model, config)` (or, for a Keras model,
    `prune_magnitude_keras`, which returns the `SparsityReport`);
    `StructuredPruneConfig` -> `prune_structured(model, example_input, config)` (PyTorch;
    needs one example batch to trace shapes).
    """
    if is_keras_model(model):
        if isinstance(config, MagnitudePruneConfig):
            return prune_magnitude_keras(model, config)
        raise OptimizeError("for Keras models only magnitude pruning is available; pass a "
                            "MagnitudePruneConfig (structured pruning needs a PyTorch model)")
    if isinstance(config, MagnitudePruneConfig):
        return prune_magnitude(model, config)
    if isinstance(config, StructuredPruneConfig):
        if example_input is None:
            raise OptimizeError("structured pruning needs example_input (one batch the model "
                                "accepts) to trace tensor shapes")
        return prune_structured(model, example_input, config)
    raise OptimizeError(f"config must be a MagnitudePruneConfig or StructuredPruneConfig, "
                        f"got {type(config).__name__}")


__all__ = [
    "ChannelChange", "DistillConfig", "DistillResult", "EpochStats", "FineTuneResult",
    "History", "LayerSparsity", "MagnitudePruneConfig", "MagnitudePruneResult",
    "OptimizeError", "SparsityReport", "StructuredPruneConfig", "StructuredPruneResult",
    "TrainConfig", "UnknownLayerError", "UnrewritableLayerError", "apply_masks",
    "build_model", "count_nonzero", "count_parameters", "distill", "distillation_loss",
    "evaluate", "fine_tune", "load_weights", "prunable_layers", "prune", "prune_magnitude",
    "prune_structured", "prune_magnitude_keras", "is_keras_model", "resolve_factory", "save_weights", "sparsity_report",
]
