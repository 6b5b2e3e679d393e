"""Weights used at every step of a recurrence, with their gradient computed once for all steps.

Autograd would compute a recurrent weight's gradient at every time step with a small matrix
product (grad_out_t^T x_t). Only the input gradients are needed step by step; the weight
gradient is one product over all steps, sum_t grad_out_t^T x_t = G^T X, which runs far
closer to the machine's peak. `TimeBatchedWeight` records (x_t, grad_out_t) during the
backward pass and a collecting node, which autograd runs after every step's node, does the
one product. Outside training (no grad) it is a plain matrix product. With the fast paths off,
`step_weight` gives `PlainStepWeight`: `F.linear` at every step, autograd's own gradients.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from transduce.kernels import switch
from transduce.kernels.linear_maps import linear


class _Collect(torch.autograd.Function):
    """Identity on the weight; its backward turns the recorded steps into the weight gradient."""

    @staticmethod
    def forward(ctx, weight: torch.Tensor, tape: list) -> torch.Tensor:
        ctx.tape, ctx.dtype = tape, weight.dtype
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, _unused: torch.Tensor):
        if not ctx.tape:
            return None, None
        inputs = torch.cat([x for x, _ in ctx.tape])  # (T*B, I)
        grads = torch.cat([g.to(inputs.dtype) for _, g in ctx.tape])  # (T*B, O)
        ctx.tape.clear()
        return grads.t().mm(inputs).to(ctx.dtype), None  # (O, I)


class _StepProduct(torch.autograd.Function):
    """x @ W^T whose backward gives the input gradient now and leaves the weight's for later."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, tape: list) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.tape = tape
        return x.mm(weight.t())

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        ctx.tape.append((x, grad))
        return grad.mm(weight), None, None


def _autocast_dtype(t: torch.Tensor) -> torch.dtype | None:
    device = t.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None


class TimeBatchedWeight:
    """Wraps one weight (O, I) for one forward pass: `product(x)` is x @ W^T for x (B, I).

    Under autocast (mixed precision) the weight is cast once per pass, not at every step.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        self.tape: list = []
        self.tracked = torch.is_grad_enabled() and weight.requires_grad
        if self.tracked:
            weight = _Collect.apply(weight.contiguous(), self.tape)
        dtype = _autocast_dtype(weight)
        self.weight = weight if dtype is None else weight.to(dtype)

    def product(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """x @ W^T (+ add). Shape: x (B, I), add (B, O) or (O,) -> (B, O)."""
        if x.dtype != self.weight.dtype:
            x = x.to(self.weight.dtype)
        if self.tracked:
            out = _StepProduct.apply(x, self.weight, self.tape)
        elif add is not None and add.dim() == 1 and add.dtype == x.dtype:
            return linear(x, self.weight, add)
        else:
            out = linear(x, self.weight)
        return out if add is None else out + add


class PlainStepWeight:
    """The same interface as `TimeBatchedWeight`, computed by `F.linear` at every step."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.weight = weight

    def product(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """x @ W^T (+ add). Shape: x (B, I), add (B, O) or (O,) -> (B, O)."""
        out = F.linear(x, self.weight)
        return out if add is None else out + add


def step_weight(weight: torch.Tensor) -> TimeBatchedWeight | PlainStepWeight:
    """The wrapper a recurrence multiplies by at every step of one pass."""
    return TimeBatchedWeight(weight) if switch.fast() else PlainStepWeight(weight)
