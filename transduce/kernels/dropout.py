"""Dropout whose mask, with the fast paths on, comes from raw random bits: the same regulariser
as `nn.Dropout`, with masks drawn several times as fast on the CPU, where drawing them is a
noticeable share of a training step. With the fast paths off it is `F.dropout`.

Torch's CPU generator runs serially, one draw per element; a 64-bit draw cut into four 16-bit
numbers gives four elements' masks for one draw, and a comparison in integers replaces the float
conversion. The drop rate is then p rounded to a multiple of 1/65,536 (0.1 -> 0.100006)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transduce.kernels import switch

_BITS = 16


def dropout_mask(shape, p: float, like: torch.Tensor) -> torch.Tensor:
    """A scaled keep-mask of `like`'s dtype and device: 0 with probability p, else 1 / (1 - p)."""
    if like.device.type != "cpu":  # GPUs draw in parallel: torch's own uniform noise is fast there
        keep = torch.rand(shape, device=like.device) >= p
    elif not switch.fast():
        keep = torch.empty(shape).bernoulli_(1.0 - p).bool()
    else:
        n = math.prod(shape)
        draws = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)  # all 64 bits random
        keep = draws.view(torch.int16)[:n].view(shape) >= round(p * 2 ** _BITS) - 2 ** (_BITS - 1)
    return keep.to(like.dtype).mul_(1.0 / (1.0 - p))


class Dropout(nn.Module):
    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if not switch.fast():
            return F.dropout(x, self.p, training=True)
        return x * dropout_mask(x.shape, self.p, x)

    def extra_repr(self) -> str:
        return f"p={self.p}"
