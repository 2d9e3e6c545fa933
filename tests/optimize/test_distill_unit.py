"""Distillation loss, teacher freezing and training history on tiny models (fast)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from edgepack.converters import optimize
from edgepack.converters.optimize import DistillConfig, OptimizeError, TrainConfig


def tiny(seed: int, hidden: int = 16, classes: int = 3) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Dropout(0.2), nn.Linear(hidden, classes))


def blobs(n: int = 96, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randn(n, 4, generator=g) * 0.5 + nn.functional.one_hot(y, 4).float() * 2
    return x, y


def test_loss_matches_the_formula_written_out():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 0])
    T, alpha = 3.0, 0.6
    total, soft, hard = optimize.distillation_loss(s, t, y, T, alpha)
    p_t = torch.softmax(t / T, 1)
    p_s = torch.softmax(s / T, 1)
    kl = (p_t * (p_t.log() - p_s.log())).sum(1).mean()  # KL(teacher || student)
    ce = -torch.log_softmax(s, 1)[torch.arange(5), y].mean()
    assert float(soft) == pytest.approx(T * T * float(kl), rel=1e-5)
    assert float(hard) == pytest.approx(float(ce), rel=1e-6)
    assert float(total) == pytest.approx(alpha * T * T * float(kl) + (1 - alpha) * float(ce),
                                         rel=1e-5)
    # a student equal to the teacher pays no soft loss
    assert float(optimize.distillation_loss(t, t, y, T, 1.0)[0]) == pytest.approx(0, abs=1e-6)


def test_teacher_stays_frozen_and_keeps_its_state():
    teacher, student = tiny(0), tiny(1, hidden=8)
    teacher.train()
    flags_before = [p.requires_grad for p in teacher.parameters()]
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, y = blobs()
    result = optimize.distill(teacher, student, (x, y),
                              DistillConfig(epochs=3, batch_size=32, lr=1e-2), eval_data=(x, y))
    # BatchNorm running stats would move if the teacher ran in train mode
    assert all(torch.equal(state[k], v) for k, v in teacher.state_dict().items())
    assert teacher.training and [p.requires_grad for p in teacher.parameters()] == flags_before
    assert result.student is student and not student.training
    h = result.history
    assert [e.epoch for e in h.epochs] == [1, 2, 3]
    for e in h.epochs:
        assert e.loss == pytest.approx(0.7 * e.soft_loss + 0.3 * e.hard_loss, rel=1e-4)
        assert 0 <= e.eval_accuracy <= 1
    assert h.losses[-1] < h.losses[0]


def test_alpha_zero_is_plain_training_from_the_same_init():
    """With alpha=0 the teacher plays no part: same result as fine_tune from the same init."""
    x, y = blobs()
    a, b = tiny(5), tiny(5)
    optimize.distill(tiny(0), a, (x, y), DistillConfig(epochs=2, alpha=0.0, seed=3, lr=1e-2))
    optimize.fine_tune(b, (x, y), TrainConfig(epochs=2, seed=3, lr=1e-2))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


def test_distill_accepts_a_dataloader():
    x, y = blobs()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32)
    result = optimize.distill(tiny(0), tiny(1), loader, DistillConfig(epochs=2))
    assert len(result.history.epochs) == 2 and math.isfinite(result.history.final.loss)


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": 0}, "temperature"), ({"alpha": 1.5}, "alpha"), ({"epochs": 0}, "epochs"),
    ({"optimizer": "lbfgs"}, "optimizer"), ({"lr": -1}, "lr"),
])
def test_bad_config_is_refused(kwargs, match):
    with pytest.raises(OptimizeError, match=match):
        DistillConfig(**kwargs)


def test_bad_data_is_refused():
    x, y = blobs()
    with pytest.raises(OptimizeError, match="one row per label"):
        optimize.distill(tiny(0), tiny(1), (x, y[:10]))
    with pytest.raises(OptimizeError, match="one-shot iterator"):
        optimize.fine_tune(tiny(0), iter([(x, y)]))
    with pytest.raises(OptimizeError, match="same class"):
        optimize.distill(tiny(0, classes=3), tiny(1, classes=5), (x, y))
