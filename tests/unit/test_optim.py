"""Learning-rate schedules and the optimizer."""
import math

import pytest
import torch

from transduce.config import TrainConfig
from transduce.training.optim import learning_rate, make_optimizer, set_learning_rate


def test_linear_warmup_then_inverse_sqrt():
    cfg = TrainConfig(lr=1e-3, warmup=100, schedule="inverse_sqrt")
    # linear warm-up
    for step in (1, 10, 50, 99):
        assert learning_rate(step, cfg) == pytest.approx(1e-3 * step / 100)
    rates = [learning_rate(s, cfg) for s in range(1, 100)]
    assert all(b > a for a, b in zip(rates, rates[1:]))
    # the peak at the end of warm-up
    assert learning_rate(100, cfg) == pytest.approx(1e-3)
    assert max(learning_rate(s, cfg) for s in range(1, 1000)) == pytest.approx(1e-3)
    # inverse square root after
    for step in (100, 400, 2500, 10000):
        assert learning_rate(step, cfg) == pytest.approx(1e-3 * math.sqrt(100 / step))
    assert learning_rate(400, cfg) == pytest.approx(0.5e-3)
    later = [learning_rate(s, cfg) for s in range(100, 500)]
    assert all(b < a for a, b in zip(later, later[1:]))


def test_step_zero_is_treated_as_step_one():
    cfg = TrainConfig(lr=1e-3, warmup=100)
    assert learning_rate(0, cfg) == learning_rate(1, cfg) > 0


def test_constant_schedule():
    cfg = TrainConfig(lr=2e-3, warmup=0, schedule="constant")
    assert {learning_rate(s, cfg) for s in (1, 2, 100, 10**6)} == {2e-3}


def test_constant_schedule_with_warmup():
    cfg = TrainConfig(lr=2e-3, warmup=10, schedule="constant")
    assert learning_rate(5, cfg) == pytest.approx(1e-3)
    assert {learning_rate(s, cfg) for s in (10, 11, 1000)} == {2e-3}


def test_no_warmup_inverse_sqrt_is_constant():
    cfg = TrainConfig(lr=1e-3, warmup=0, schedule="inverse_sqrt")
    assert learning_rate(1, cfg) == learning_rate(5000, cfg) == 1e-3


def test_optimizer_counts_tied_weights_once_and_takes_the_rate():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(5, 4)
    out = torch.nn.Linear(4, 5)
    out.weight = emb.weight
    model = torch.nn.ModuleDict({"emb": emb, "out": out})
    cfg = TrainConfig(lr=3e-3, adam_betas=(0.8, 0.95), weight_decay=0.01)
    opt = make_optimizer(model, cfg)
    params = opt.param_groups[0]["params"]
    assert len(params) == 2  # the tied weight and the output bias
    assert len({id(p) for p in params}) == len(params)
    group = opt.param_groups[0]
    assert group["lr"] == 3e-3 and tuple(group["betas"]) == (0.8, 0.95) and group["weight_decay"] == 0.01
    set_learning_rate(opt, 1.5e-4)
    assert all(g["lr"] == 1.5e-4 for g in opt.param_groups)
