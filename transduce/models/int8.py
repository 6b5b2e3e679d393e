"""int8 weights at decode time: the scheme (symmetric, one float32 scale per output row) and the
modules that compute with the stored integers.

w ≈ qweight * scale[:, None], scale = max|row| / 127, zero point 0. Linear layers become torch's
dynamic-quantized `Linear` (activations quantized per batch at run time; fbgemm on x86,
qnnpack on ARM); the RNN decoder's cells become `Int8RecurrentCell`. Writing an int8 folder is
`export.quantize`'s job, reading one is `model_folder`'s; both use what is here.
"""
from __future__ import annotations

import contextlib
import warnings

import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as qdynamic

from transduce.models.rnn import RecurrentCell, RNNSeq2Seq

MIN_FEATURES = 8  # narrower linears (one-unit gates, coverage features) stay float: int8 gains nothing there
CELL_WEIGHTS = ("weight", "weight_ih", "weight_hh")


def quantize_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 per output row. Shape: weight (O, I) -> qweight (O, I) int8, scale (O,) float32"""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # (O,); an all-zero row keeps a tiny scale
    qweight = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return qweight, scale


def dequantize_rows(qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Shape: qweight (O, I) int8, scale (O,) -> (O, I) float32"""
    return qweight.float() * scale[:, None]


def packed_tensor(qweight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The stored integers as torch's per-channel qint8 tensor (the kernels' input), unchanged."""
    zero_points = torch.zeros(scale.numel(), dtype=torch.long)
    with _quiet():
        return torch._make_per_channel_quantized_tensor(qweight, scale.double(), zero_points, 0)


@contextlib.contextmanager
def _quiet():
    """torch >= 2.10 warns at every quantized tensor it creates (its eager `torch.ao` API is moving
    to torchao); the kernels are unchanged, and loading a model should not print that."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*deprecated")
        yield


def int8_linear_wanted(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and min(module.in_features, module.out_features) >= MIN_FEATURES


def int8_linear(linear: nn.Linear, qweight: torch.Tensor, scale: torch.Tensor) -> qdynamic.Linear:
    """torch's dynamic-quantized Linear holding the stored integers and the float bias."""
    with _quiet():  # the constructor makes a placeholder quantized weight
        module = qdynamic.Linear(linear.in_features, linear.out_features, bias_=linear.bias is not None,
                                 dtype=torch.qint8)
    bias = None if linear.bias is None else linear.bias.detach().float()
    module.set_weight_bias(packed_tensor(qweight, scale), bias)
    return module


def swap_modules(model: nn.Module, int8_of: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Replace, in place, each linear layer and decoder cell whose weights are in `int8_of`
    (tensor id -> (qweight, scale)) by its int8 module."""
    read_as_weight = model.combine if isinstance(model, RNNSeq2Seq) else None  # `_step_weights` takes .weight
    for name, module in list(model.named_modules()):
        replacement = None
        if int8_linear_wanted(module) and id(module.weight) in int8_of and module is not read_as_weight:
            replacement = int8_linear(module, *int8_of[id(module.weight)])
        elif isinstance(module, RecurrentCell):
            replacement = Int8RecurrentCell.from_cell(module, int8_of)
        if replacement is not None:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, replacement)


class Int8StepWeight:
    """Stands in for `TimeBatchedWeight` when decoding: product(x, add) = x @ W^T + add by the int8 kernel."""

    def __init__(self, packed) -> None:
        self.packed = packed

    def product(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        """Shape: x (B, I), add (B, O) or (O,) -> (B, O)"""
        out = torch.ops.quantized.linear_dynamic(x, self.packed, True)  # reduce_range, as torch's Linear
        return out if add is None else out + add


class Int8RecurrentCell(RecurrentCell):
    """A decoder cell whose step products (input feeding, layer input, recurrent) run in int8.

    The columns projected ahead of the time loop (the target embedding's, looked up from a
    table when decoding) stay float, dequantized from the stored integers; the step columns
    are packed once for torch's dynamic int8 product. Decoding only: no gradients."""

    def __init__(self, cell: RecurrentCell, int8_of: dict) -> None:
        nn.Module.__init__(self)  # not RecurrentCell's: it would allocate float weights
        self.kind, self.hidden, self.pre_size = cell.kind, cell.hidden, cell.pre_size
        P, packs = cell.pre_size, []
        for name in self.quantized_names(cell):
            qweight, scale = int8_of[id(getattr(cell, name))]
            if name != "weight_hh":  # the first P columns are projected ahead: kept float
                setattr(self, name, nn.Parameter(dequantize_rows(qweight[:, :P], scale), requires_grad=False))
                qweight = qweight[:, P:]
            packs.append(torch.ops.quantized.linear_prepack(packed_tensor(qweight.contiguous(), scale), None)
                         if qweight.size(1) else None)
        for name in ("bias",) if cell.kind == "lstm" else ("bias_ih", "bias_hh"):
            setattr(self, name, nn.Parameter(getattr(cell, name).detach().float(), requires_grad=False))
        self._packs = packs

    @staticmethod
    def quantized_names(cell: RecurrentCell) -> tuple[str, ...]:
        return ("weight",) if cell.kind == "lstm" else ("weight_ih", "weight_hh")

    @classmethod
    def from_cell(cls, cell: RecurrentCell, int8_of: dict) -> Int8RecurrentCell | None:
        """The int8 cell, or None when the cell's weights were kept float."""
        if any(id(getattr(cell, name)) not in int8_of for name in cls.quantized_names(cell)):
            return None
        return cls(cell, int8_of)

    def step_weights(self) -> tuple[Int8StepWeight | None, ...]:
        return tuple(None if pack is None else Int8StepWeight(pack) for pack in self._packs)

    def extra_repr(self) -> str:
        return f"{self.kind}, hidden={self.hidden}, pre_size={self.pre_size}, int8 step weights"
