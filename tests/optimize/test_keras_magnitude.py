"""Magnitude pruning of a Keras model (the one Keras path that is straightforward)."""
from __future__ import annotations

import numpy as np
import pytest

from edgepack.converters import optimize
from edgepack.converters.optimize import MagnitudePruneConfig, OptimizeError, UnknownLayerError

keras = pytest.importorskip("keras")


def small_model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, name="conv"),
        keras.layers.Flatten(), keras.layers.Dense(10, name="hidden"),
        keras.layers.Dense(3, name="head")])


def kernels(model):
    return {l.name: np.asarray(l.kernel.numpy()) for l in model.layers if hasattr(l, "kernel")}


def test_global_pruning_zeroes_smallest_kernel_weights_and_keeps_excluded():
    model = small_model()
    before = kernels(model)
    report = optimize.prune(model, MagnitudePruneConfig(sparsity=0.5, exclude=("head",)))
    after = kernels(model)
    pruned = np.concatenate([before[n].ravel() for n in ("conv", "hidden")])
    kept = np.concatenate([after[n].ravel() for n in ("conv", "hidden")])
    assert (kept == 0).sum() == round(0.5 * pruned.size)
    assert np.abs(pruned[kept == 0]).max() <= np.abs(pruned[kept != 0]).min()
    np.testing.assert_array_equal(after["head"], before["head"])
    by_name = report.by_name()
    assert by_name["head"].zeros == 0
    assert report.zeros == (kept == 0).sum()
    # the model still runs, with the zeros in place
    assert model(np.zeros((2, 8, 8, 1), np.float32)).shape == (2, 3)


def test_layer_scope_and_errors():
    model = small_model()
    report = optimize.prune(model, MagnitudePruneConfig(sparsity=0.25, scope="layer"))
    for row in report.layers:
        assert row.zeros == round(0.25 * row.params)
    with pytest.raises(UnknownLayerError, match="'dense_9'.*conv, hidden, head"):
        optimize.prune(small_model(), MagnitudePruneConfig(exclude=("dense_9",)))
    with pytest.raises(OptimizeError, match="only magnitude pruning"):
        optimize.prune(small_model(), optimize.StructuredPruneConfig(0.5))
