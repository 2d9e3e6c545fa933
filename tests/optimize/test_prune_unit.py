"""Magnitude and structured pruning on tiny models built here (fast)."""
from __future__ import annotations

import operator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgepack.converters import optimize
from edgepack.converters.optimize import (MagnitudePruneConfig, OptimizeError,
                                          StructuredPruneConfig, UnknownLayerError,
                                          UnrewritableLayerError)
from edgepack.runtime.errors import EdgepackError


def small_cnn() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 12), nn.ReLU(), nn.Dropout(0.1), nn.Linear(12, 3))


class Functional(nn.Module):
    """Same shape of model written with F.* calls and torch.flatten, as fx sees them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc1 = nn.Linear(6 * 4 * 4, 12)
        self.bn3 = nn.BatchNorm1d(12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = torch.relu(self.conv2(x)) * 1.0
        x = torch.flatten(x, 1)
        return self.fc2(F.relu(self.bn3(self.fc1(x))))


def randomize_bn(model: nn.Module) -> None:
    """Give BatchNorm layers non-trivial statistics, so slicing mistakes show in outputs."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def silence_channels(model: nn.Module, layer: str, channels: list[int]) -> None:
    """Make `channels` of `layer` contribute nothing downstream (zero filter, bias and BN)."""
    module = model.get_submodule(layer)
    with torch.no_grad():
        module.weight[channels] = 0
        if module.bias is not None:
            module.bias[channels] = 0
        for m in model.modules():  # the BatchNorm right after it, if any
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.num_features == len(
                    module.weight) and m is not module:
                m.bias[channels] = 0
                m.running_mean[channels] = 0
                break


# --- magnitude -----------------------------------------------------------------------------
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.9])
def test_global_magnitude_reaches_exact_sparsity(sparsity):
    model = small_cnn()
    total = sum(m.weight.numel() for m in optimize.prunable_layers(model).values())
    result = optimize.prune_magnitude(model, MagnitudePruneConfig(sparsity=sparsity))
    assert result.report.zeros == round(sparsity * total)
    # the zeros are in the weights themselves: nothing left of a reparametrization
    assert not any("mask" in k or "orig" in k for k in model.state_dict())
    assert optimize.sparsity_report(model).zeros == result.report.zeros


def test_global_magnitude_removes_the_smallest_weights():
    model = small_cnn()
    before = torch.cat([m.weight.detach().abs().flatten()
                        for m in optimize.prunable_layers(model).values()])
    optimize.prune_magnitude(model, MagnitudePruneConfig(sparsity=0.5))
    after = torch.cat([m.weight.detach().abs().flatten()
                       for m in optimize.prunable_layers(model).values()])
    kept = before[after != 0]
    dropped = before[after == 0]
    assert dropped.max() <= kept.min()


def test_layer_scope_and_exclude():
    model = small_cnn()
    head = model[11].weight.detach().clone()
    result = optimize.prune_magnitude(
        model, MagnitudePruneConfig(sparsity=0.25, scope="layer", exclude=("11",)))
    by_name = result.report.by_name()
    for name in ("0", "4", "8"):
        assert by_name[name].fraction == pytest.approx(0.25, abs=1.0 / by_name[name].params)
    assert by_name["11"].zeros == 0
    assert torch.equal(model[11].weight, head)


def test_masks_survive_fine_tuning():
    model = small_cnn()
    result = optimize.prune_magnitude(model, MagnitudePruneConfig(sparsity=0.6))
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(64, 1, 8, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    optimize.fine_tune(model, (x, y), optimize.TrainConfig(epochs=2, lr=1e-2, batch_size=16),
                       masks=result.masks)
    assert optimize.sparsity_report(model).zeros >= result.report.zeros
    for key, mask in result.masks.items():
        assert torch.all(dict(model.named_parameters())[key][~mask] == 0)


@pytest.mark.parametrize("bad", [1.0, -0.1, 1.5, float("nan"), "0.5", True])
def test_sparsity_outside_range_is_refused(bad):
    with pytest.raises(OptimizeError, match=r"\[0, 1\)"):
        MagnitudePruneConfig(sparsity=bad)
    with pytest.raises(OptimizeError, match=r"\[0, 1\)"):
        StructuredPruneConfig(amount=bad)


def test_unknown_layer_names_are_listed():
    with pytest.raises(UnknownLayerError, match=r"'conv9'.*prunable layers are: 0, 4, 8, 11"):
        optimize.prune_magnitude(small_cnn(), MagnitudePruneConfig(exclude=("conv9",)))
    with pytest.raises(UnknownLayerError, match=r"'nope'"):
        optimize.prune_structured(small_cnn(), torch.zeros(1, 1, 8, 8),
                                  StructuredPruneConfig(layers=("nope",)))
    assert issubclass(UnknownLayerError, EdgepackError)


# --- structured ----------------------------------------------------------------------------
@pytest.mark.parametrize("factory", [small_cnn, Functional], ids=["sequential", "functional"])
def test_structured_pruning_of_silent_channels_keeps_outputs(factory):
    """Removing channels that contribute nothing must leave the outputs unchanged: this checks
    that every consumer (BatchNorm, next conv, linear after flatten) was sliced consistently."""
    model = factory()
    randomize_bn(model)
    names = list(optimize.prunable_layers(model))  # conv1, conv2, fc1, fc2
    silence_channels(model, names[0], [0, 2, 5, 7])
    silence_channels(model, names[1], [1, 4, 5])
    silence_channels(model, names[2], list(range(6)))
    model.eval()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = model(x)
    result = optimize.prune_structured(model, x[:1], StructuredPruneConfig(amount=0.5))
    assert [(c.name, c.before, c.after) for c in result.pruned] == [
        (names[0], 8, 4), (names[1], 6, 3), (names[2], 12, 6)]
    assert names[3] in result.skipped and "model output" in result.skipped[names[3]]
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)
    assert result.params_after == optimize.count_parameters(model) < result.params_before


def test_structured_norm_criterion_picks_largest_filters():
    model = small_cnn()
    with torch.no_grad():
        model[0].weight.copy_(torch.arange(8.0).view(8, 1, 1, 1).expand(8, 1, 3, 3))
        model[0].weight[3] = -100.0  # large L1 norm although negative
    optimize.prune_structured(model, torch.zeros(1, 1, 8, 8),
                              StructuredPruneConfig(amount=0.5, layers=("0",)))
    kept = model[0].weight[:, 0, 0, 0].tolist()
    assert kept == [-100.0, 5.0, 6.0, 7.0]
    assert model[1].num_features == 4 and model[4].in_channels == 4


def test_round_to_keeps_multiples():
    config = StructuredPruneConfig(amount=0.5, round_to=8)
    assert [config.keep_count(c) for c in (64, 36, 4)] == [32, 24, 4]


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 4, 3, padding=1)
        self.body = nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        y = F.relu(self.stem(x))
        y = y + self.body(y)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3)
        self.depthwise = nn.Conv2d(8, 8, 3, groups=8)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.depthwise(self.conv(x)).mean((2, 3)))


class Viewed(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.size(0), -1))


class Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.b = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.cat([self.a(x), self.b(x)], 1).mean((2, 3)))


@pytest.mark.parametrize("model, layer, words", [
    (Residual, "stem", ["'stem'", "add", "residual"]),
    (Residual, "body", ["'body'", "add"]),
    (Grouped, "conv", ["'conv'", "'depthwise'", "grouped convolution (groups=8)"]),
    (Viewed, "conv", ["'conv'", "reshaped", "view", "torch.flatten(x, 1)"]),
    (Concat, "a", ["'a'", "concatenated", "cat"]),
    (small_cnn, "11", ["'11'", "model output"]),
])
def test_unrewritable_consumer_names_layer_and_reason(model, layer, words):
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    with pytest.raises(UnrewritableLayerError) as info:
        optimize.prune_structured(m, torch.zeros(1, 1, 8, 8),
                                  StructuredPruneConfig(layers=(layer,)))
    message = str(info.value)
    for word in words:
        assert word in message, message
    assert f"exclude=('{layer}',)" in message
    assert list(info.value.problems) == [layer]
    # refused before touching anything
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_default_mode_skips_unrewritable_and_errors_when_nothing_left():
    with pytest.raises(OptimizeError, match=r"no layer can be pruned.*stem.*add"):
        optimize.prune_structured(Residual(), torch.zeros(1, 1, 8, 8))


def test_untraceable_model_gets_clear_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)
            self.out = nn.Linear(4, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace it
                x = self.fc(x)
            return self.out(x)

    with pytest.raises(OptimizeError, match="torch.fx"):
        optimize.prune_structured(Branchy(), torch.zeros(1, 4))


def test_pruned_weights_reload_into_factory_model(tmp_path):
    model = Functional()
    randomize_bn(model)
    optimize.prune_structured(model, torch.zeros(1, 1, 8, 8), StructuredPruneConfig(0.5))
    path = optimize.save_weights(model, tmp_path / "pruned.pt")
    fresh = optimize.load_weights(Functional(), path)
    model.eval(), fresh.eval()
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    assert fresh.conv1.out_channels == 4 and fresh.bn1.num_features == 4
    assert fresh.fc1.in_features == 3 * 16
    with pytest.raises(OptimizeError, match="does not exist"):
        optimize.load_weights(Functional(), tmp_path / "missing.pt")
