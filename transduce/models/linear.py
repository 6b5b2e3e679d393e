"""Float32 linear maps on the CPU through oneDNN.

PyTorch runs float32 `F.linear` on the CPU through MKL's sgemm; on some x86 CPUs (AMD EPYC among
them) that reaches about half the speed of oneDNN's matmul on the same products, at every size
from a decoding step's 48 rows to a training batch's thousands. `linear` takes oneDNN's kernel
(`torch.ops.mkldnn._linear_pointwise`, the one PyTorch's own compiler uses for CPU linears) for
float32 on the CPU, in decoding and in training (its gradients are products through the same
kernel), and `F.linear` elsewhere (GPUs, mixed precision); results agree to float32 rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() \
    else None


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    """Training through the same kernel: the input and weight gradients are products too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad2 = grad.reshape(-1, grad.size(-1))  # (N, O)
        grad_x = _onednn(grad2, weight.t()).view(x.shape) if ctx.needs_input_grad[0] else None  # (N, I)
        grad_w = _onednn(grad2.t(), x.reshape(-1, x.size(-1)).t()) if ctx.needs_input_grad[1] else None  # (O, I)
        grad_b = grad2.sum(dim=0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight^T + bias. Shape: x (..., I), weight (O, I), bias (O,) -> (..., O)

    oneDNN for float32 on the CPU outside autocast (mixed precision keeps torch's own path)."""
    if (_ONEDNN_LINEAR is None or x.device.type != "cpu" or x.dtype != torch.float32
            or weight.dtype != torch.float32 or torch.is_autocast_enabled("cpu") or not x.numel()):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _OneDNNLinear.apply(x, weight, bias)
    return _onednn(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same saved names) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
