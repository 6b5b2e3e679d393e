"""Adam and its learning-rate schedule (linear warm-up, then inverse square root, or constant)."""
from __future__ import annotations

import math

import torch

from transduce.config import TrainConfig


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Adam:
    params = list({id(p): p for p in model.parameters() if p.requires_grad}.values())  # tied weights once
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.adam_betas, eps=1e-9, weight_decay=cfg.weight_decay)


def learning_rate(step: int, cfg: TrainConfig) -> float:
    """The rate for update number `step` (1-based): peak `cfg.lr` at the end of warm-up."""
    step = max(step, 1)
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * step / cfg.warmup
    if cfg.schedule == "inverse_sqrt" and cfg.warmup:
        return cfg.lr * math.sqrt(cfg.warmup / step)
    return cfg.lr


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
