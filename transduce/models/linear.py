"""Float32 linear maps on the CPU through oneDNN when decoding.

PyTorch runs float32 `F.linear` on the CPU through MKL's sgemm; on some x86 CPUs (AMD EPYC among
them) that reaches about half the speed of oneDNN's matmul on the same products, at every size
from a decoding step's 48 rows to a training batch's thousands. `linear` takes oneDNN's kernel
(`torch.ops.mkldnn._linear_pointwise`, the one PyTorch's own compiler uses for CPU linears) for
float32 on the CPU when no gradient is needed (decoding, evaluation), and `F.linear` elsewhere;
results agree to float32 rounding. Training keeps torch's path: with batch shapes changing at
every step, oneDNN builds and caches a kernel per shape, which cost time and memory there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() \
    else None


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight^T + bias. Shape: x (..., I), weight (O, I), bias (O,) -> (..., O)

    oneDNN for float32 on the CPU when no gradient is needed; torch's own path otherwise."""
    if (_ONEDNN_LINEAR is None or x.device.type != "cpu" or x.dtype != torch.float32
            or weight.dtype != torch.float32 or not weight.is_contiguous() or torch.is_autocast_enabled("cpu")
            or not x.numel()):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return F.linear(x, weight, bias)
    return _onednn(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same saved names) computed by `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
