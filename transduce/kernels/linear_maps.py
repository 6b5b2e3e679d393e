"""Linear maps: `nn.Linear` whose float32 products on the CPU go through oneDNN when the fast
paths are on (`switch`), and `F.linear` otherwise.

PyTorch runs float32 `F.linear` and `mm` on the CPU through MKL's sgemm; on some x86 CPUs oneDNN's
matmul (`torch.ops.mkldnn._linear_pointwise`, the kernel PyTorch's own compiler uses for CPU
linears) runs the same products much faster. In training all three products of a map go through
it: the forward one, the input gradient's (with the weight transposed into contiguous memory: a
strided one would be reordered at every call) and the weight gradient's, which reads both operands
transposed: MKL does that in place and oneDNN reorders them first, so which library is faster
depends on the CPU and the shape, and the switch's fixed rule says which one computes it.
GPUs, mixed precision and strided weights take torch's own path; results agree to float32 rounding.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from transduce.kernels import switch

_ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() \
    else None
_REORDER = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None) if _ONEDNN_LINEAR is not None else None


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


def onednn_takes(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Float32 operands on the CPU outside autocast, with the fast paths on: oneDNN's products."""
    return (_ONEDNN_LINEAR is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu") and x.numel() > 0
            and switch.fast())


class _OneDNNLinear(torch.autograd.Function):
    """Training through oneDNN: the forward product and both gradients' products."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad2 = grad.reshape(-1, grad.size(-1))  # (N, O)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn(grad2, weight.t().contiguous()).view(x.shape)  # (N, I)
        if ctx.needs_input_grad[1]:
            grad_w = weight_gradient(grad2, x)  # (O, I)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad2.sum(dim=0)
        return grad_x, grad_w, grad_b


def weight_gradient(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sum over rows of grad^T x, the gradient of a linear map's weight, by the library the
    switch's rule names for this shape (torch's own product where oneDNN does not apply).
    Shape: grad (..., O), x (..., I) -> (O, I)"""
    grad2, x2 = grad.reshape(-1, grad.size(-1)), x.reshape(-1, x.size(-1))
    outputs, inputs = grad2.size(1), x2.size(1)
    if not onednn_takes(x2, grad2) or switch.mkl_weight_gradient(outputs, inputs, 2 * grad2.numel() * inputs):
        return grad2.t() @ x2  # torch's product: MKL for float32 on the CPU
    return _onednn(grad2.t(), x2.t())


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight^T + bias. Shape: x (..., I), weight (O, I), bias (O,) -> (..., O)"""
    if not onednn_takes(x, weight) or not weight.is_contiguous():
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _OneDNNLinear.apply(x, weight, bias)
    return _onednn(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same saved names) computed by `linear`.

    In evaluation without gradients (decoding), the weight is handed to oneDNN in its own blocked
    layout, reordered once and kept (`packed`) until the weight changes (its version counter:
    every optimizer step and weight load moves it): oneDNN otherwise reorders it at every call.
    `train()` drops the packed copy. A weight made under `torch.inference_mode()` has no version
    counter: it is not packed.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled() and _REORDER is not None \
                and onednn_takes(x, self.weight) and self.weight.is_contiguous() and not self.weight.is_inference():
            return _ONEDNN_LINEAR(x, self._packed(), self.bias, "none", [], "")
        return linear(x, self.weight, self.bias)

    def train(self, mode: bool = True) -> "Linear":
        if mode:
            self.__dict__.pop("packed", None)
        return super().train(mode)

    def __getstate__(self) -> dict:
        """Copies and pickles leave the packed weight out (oneDNN's layout has no storage to copy)."""
        state = self.__dict__.copy()
        state.pop("packed", None)
        return state

    def _packed(self) -> torch.Tensor:
        weight = self.weight
        key = (weight.data_ptr(), weight._version)
        cached = self.__dict__.get("packed")
        if cached is None or cached[0] != key:
            cached = self.__dict__["packed"] = (key, _REORDER(weight.detach(), None))
        return cached[1]
