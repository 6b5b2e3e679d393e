"""Float32 linear maps on the CPU through oneDNN, in decoding and training.

PyTorch runs float32 `F.linear` and `mm` on the CPU through MKL's sgemm; on some x86 CPUs (AMD EPYC
among them) that reaches about half the speed of oneDNN's matmul on the same products, at every size
from a decoding step's 48 rows to a training batch's thousands. `linear` takes oneDNN's kernel
(`torch.ops.mkldnn._linear_pointwise`, the one PyTorch's own compiler uses for CPU linears) for
float32 on the CPU, and `F.linear` elsewhere (GPUs, mixed precision, strided weights); results
agree to float32 rounding. In training all three products go through it: the forward one, the input
gradient's (with the weight transposed into contiguous memory: a strided one would be reordered at
every call) and the weight gradient's (`weight_gradient`: there the transposed views of both
operands are handed over as they are; oneDNN's own reorder of them beats a copy by torch).

Weight gradients read both operands transposed, which MKL does in place and oneDNN by reordering
them first; which is faster depends on the CPU (oneDNN by 1.3-1.8x on one EPYC, MKL by 1.3-1.9x
on another). `weight_gradient` times both once per weight shape and keeps the faster one.
"""
from __future__ import annotations

import os
import time

import torch
import torch.nn.functional as F
from torch import nn

# oneDNN (and ideep, PyTorch's layer over it) keep a compiled kernel for every product shape they
# meet, 1,024 each by default, each with its own buffers. Training meets a new row count at nearly
# every batch (~900 MiB after 300 updates), decoding one per batch size and source width (~250 MiB
# over a test set); rebuilding a kernel costs microseconds. Read when oneDNN first builds one.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
os.environ.setdefault("LRU_CACHE_CAPACITY", "16")

_ONEDNN_LINEAR = getattr(torch.ops.mkldnn, "_linear_pointwise", None) if torch.backends.mkldnn.is_available() \
    else None


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    return _ONEDNN_LINEAR(x, weight, bias, "none", [], "")


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


def _onednn_takes(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Float32 operands on the CPU outside autocast: the products oneDNN is used for."""
    return (_ONEDNN_LINEAR is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu") and x.numel() > 0)


# Weight-gradient products smaller than this stay on oneDNN untimed: timing them would cost more
# than it saves, and small models then compute the same way in every process.
CHOOSE_ABOVE_FLOPS = 50_000_000
# (O, I) -> True where MKL computed that weight shape's gradient at least 10% faster than oneDNN.
_MKL_FASTER: dict[tuple[int, int], bool] = {}


def _torch_weight_gradient(grad2: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    """torch's own product (MKL's for float32 on the CPU), which reads the transposed grad in place."""
    return grad2.t() @ x2


def _onednn_weight_gradient(grad2: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
    return _onednn(grad2.t(), x2.t())


def _mkl_is_faster(grad2: torch.Tensor, x2: torch.Tensor) -> bool:
    """Whether MKL beats oneDNN by 10% on this weight shape, timed once on the first operands
    (three runs each after one untimed) and remembered: every later gradient of the shape is
    computed the same way (in a resumed run too: see `weight_gradient_choices`)."""
    key = (grad2.size(1), x2.size(1))
    if key not in _MKL_FASTER:
        timings: dict = {_torch_weight_gradient: [], _onednn_weight_gradient: []}
        for run in range(4):
            for product, times in timings.items():
                start = time.perf_counter()
                product(grad2, x2)
                if run:
                    times.append(time.perf_counter() - start)
        mkl, onednn = (sorted(t)[1] for t in timings.values())
        _MKL_FASTER[key] = mkl < 0.9 * onednn
    return _MKL_FASTER[key]


def weight_gradient_choices() -> dict[str, bool]:
    """The choices made so far, {"OxI": MKL faster}: a checkpoint keeps them, so that a resumed
    run computes its gradients as the uninterrupted one did (timings could differ)."""
    return {f"{o}x{i}": faster for (o, i), faster in _MKL_FASTER.items()}


def adopt_weight_gradient_choices(choices: dict[str, bool]) -> None:
    """Take a checkpoint's choices (`weight_gradient_choices`) instead of timing those shapes again."""
    for shape, faster in choices.items():
        o, i = shape.split("x")
        _MKL_FASTER[(int(o), int(i))] = bool(faster)


def weight_gradient(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Sum over rows of grad^T x, the gradient of a linear map's weight.
    Shape: grad (..., O), x (..., I) -> (O, I)"""
    grad2, x2 = grad.reshape(-1, grad.size(-1)), x.reshape(-1, x.size(-1))
    if not _onednn_takes(x2, grad2):
        return _torch_weight_gradient(grad2, x2)
    if 2 * grad2.numel() * x2.size(1) > CHOOSE_ABOVE_FLOPS and _mkl_is_faster(grad2, x2):
        return _torch_weight_gradient(grad2, x2)
    return _onednn_weight_gradient(grad2, x2)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight^T + bias. Shape: x (..., I), weight (O, I), bias (O,) -> (..., O)

    oneDNN for float32 on the CPU with a contiguous weight; torch's own path otherwise."""
    if not _onednn_takes(x, weight) or not weight.is_contiguous():
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad
                                    or (bias is not None and bias.requires_grad)):
        return _OneDNNLinear.apply(x, weight, bias)
    return _onednn(x, weight, bias)


_REORDER = getattr(torch.ops.mkldnn, "_reorder_linear_weight", None) if _ONEDNN_LINEAR is not None else None


class Linear(nn.Linear):
    """nn.Linear (same parameters, same saved names) computed by `linear`.

    In evaluation without gradients (decoding), the weight is handed to oneDNN in its own blocked
    layout, reordered once and kept (`packed`) until the weight changes (its version counter:
    every optimizer step and weight load moves it): oneDNN otherwise reorders it at every call,
    and a decoding step's products run 5-10% slower. `train()` drops the packed copy. A weight
    made under `torch.inference_mode()` has no version counter: it is not packed.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled() and _REORDER is not None \
                and _onednn_takes(x, self.weight) and self.weight.is_contiguous() and not self.weight.is_inference():
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
