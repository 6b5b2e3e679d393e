"""int8 models for CPU decoding: smaller folders, faster products, the same Translator API.

`quantize_model_dir` writes a new model folder whose weight matrices are int8 with one float32
scale per output row (symmetric, zero point 0: w ≈ qweight * scale[:, None], scale =
max|row| / 127). `model.safetensors` holds `<name>.qweight` (int8) and `<name>.scale`
(float32) for each such matrix and every other tensor (biases, norms, buffers) as it was;
`quantization.json` says which and how. No pickles: JSON and tensors only, as for any folder.

Which matrices: every linear layer (`nn.Linear`, hence `kernels.Linear`) of at least
`MIN_FEATURES` inputs and outputs, the encoder's `nn.LSTM` / `nn.GRU` weights, the decoder's
recurrent cells (`models.rnn.RecurrentCell`) and the embeddings (one scale per vocabulary row:
the same rows as a tied output projection, so a tied matrix is stored once).

`load_quantized` (called by `inference.Translator.from_dir` when the folder has
`quantization.json`) loads the dequantized weights into the float model, then swaps modules
for int8 ones built from the stored integers (no re-rounding): torch's dynamic-quantized
`Linear` (activations quantized per batch at run time; fbgemm on x86, qnnpack on ARM) and
`Int8RecurrentCell` for the RNN decoder. Stored int8 but run in float32 (dequantized), because
int8 would not be faster there: the embeddings (a lookup); the encoder's LSTM / GRU (torch's
`quantized_lstm` runs each time step as separate small ops, measured 1.7x slower than the
fused float layer on the demo model); the RNN decoder's `combine`, which `RNNSeq2Seq` reads as
a plain weight matrix.
"""
from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.ao.nn.quantized import dynamic as qdynamic

from transduce.config import Config
from transduce.constants import CONFIG_FILE, WEIGHTS_FILE
from transduce.data.codec import TextCodec
from transduce.models.builder import build_model
from transduce.models.rnn import RecurrentCell, RNNSeq2Seq

QUANTIZATION_FILE = "quantization.json"
FORMAT = "transduce-int8"
VERSION = 1
MIN_FEATURES = 8  # narrower linears (one-unit gates, coverage features) stay float: int8 gains nothing there
QWEIGHT, SCALE = ".qweight", ".scale"
CELL_WEIGHTS = ("weight", "weight_ih", "weight_hh")


class QuantizeError(RuntimeError):
    """A folder that cannot be quantized or a quantized folder that cannot be loaded, with the path."""


def is_quantized(directory: str | Path) -> bool:
    return Path(directory, QUANTIZATION_FILE).is_file()


# ---- the scheme ---------------------------------------------------------------------------
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


def _int8_linear_wanted(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) and min(module.in_features, module.out_features) >= MIN_FEATURES


def _roles(model: nn.Module) -> dict[int, set[str]]:
    """What each quantizable weight tensor is to the model (a tied tensor has several roles), by id."""
    roles: dict[int, set[str]] = {}

    def add(tensor: torch.Tensor, role: str) -> None:
        roles.setdefault(id(tensor), set()).add(role)

    for module in model.modules():
        if _int8_linear_wanted(module):
            add(module.weight, "linear")
        elif isinstance(module, nn.Embedding):
            add(module.weight, "embedding")
        elif isinstance(module, (nn.LSTM, nn.GRU)):
            for name, param in module.named_parameters():
                if name.startswith("weight_"):
                    add(param, "rnn")
        elif isinstance(module, RecurrentCell):
            for name in CELL_WEIGHTS:
                if hasattr(module, name):
                    add(getattr(module, name), "recurrent_cell")
    return roles


# ---- writing ------------------------------------------------------------------------------
def quantize_model_dir(model_dir: str | Path, out_dir: str | Path, keep_float: Iterable[str] = ()) -> dict:
    """Write an int8 copy of the model folder `model_dir` into `out_dir` (created; its model files
    replaced): weights, quantization.json, config, vocabularies and tokenizers. The weights named
    in `keep_float` (e.g. "output.weight"; any name of a tied tensor) stay float32.

    Returns {"out_dir", "float_bytes", "int8_bytes", "ratio" (int8 / float), "quantized_tensors",
    "float_tensors"}: the sizes are those of model.safetensors before and after."""
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (model_dir / name).is_file():
            raise QuantizeError(f"{model_dir}: not a model folder (no {name})")
    if is_quantized(model_dir):
        raise QuantizeError(f"{model_dir}: already quantized ({QUANTIZATION_FILE})")
    if out_dir.resolve() == model_dir.resolve():
        raise QuantizeError(f"{out_dir}: the output folder must differ from the model folder")
    config = Config.load(model_dir / CONFIG_FILE)
    codec = TextCodec.load(config.data, model_dir)
    model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab))
    by_name = model.state_dict(keep_vars=True)
    roles = _roles(model)
    unknown = sorted(set(keep_float) - set(by_name))
    if unknown:
        raise QuantizeError(f"{model_dir}: no weights named {', '.join(unknown)} to keep float")
    for name in keep_float:
        roles.pop(id(by_name[name]), None)
    stored = load_file(str(model_dir / WEIGHTS_FILE))  # a tied tensor appears once, under one of its names

    tensors, described = {}, {}
    for name, tensor in stored.items():
        if name not in by_name:
            raise QuantizeError(f"{model_dir / WEIGHTS_FILE}: {name} is not a weight of this model")
        uses = roles.get(id(by_name[name]))
        if uses and tensor.dim() == 2 and tensor.is_floating_point():
            tensors[name + QWEIGHT], tensors[name + SCALE] = quantize_rows(tensor)
            described[name] = {"shape": list(tensor.shape), "roles": sorted(uses)}
        else:
            tensors[name] = tensor.contiguous()

    out_dir.mkdir(parents=True, exist_ok=True)
    codec.save(out_dir)
    config.save(out_dir / CONFIG_FILE)
    _atomic(out_dir / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": FORMAT}))
    meta = {
        "format": FORMAT, "version": VERSION, "bits": 8,
        "weights": "symmetric per output row: w = qweight (int8, -127..127) * scale[row] (float32), zero point 0",
        "activations": "quantized dynamically per batch at run time (torch dynamic quantization, uint8)",
        "tensors": described,
        "kept_float": sorted(keep_float),
    }
    _atomic(out_dir / QUANTIZATION_FILE, lambda tmp: tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8"))
    float_bytes, int8_bytes = (model_dir / WEIGHTS_FILE).stat().st_size, (out_dir / WEIGHTS_FILE).stat().st_size
    return {"out_dir": str(out_dir), "float_bytes": float_bytes, "int8_bytes": int8_bytes,
            "ratio": round(int8_bytes / float_bytes, 4), "quantized_tensors": len(described),
            "float_tensors": len(stored) - len(described)}


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ---- loading ------------------------------------------------------------------------------
def load_quantized(model: nn.Module, directory: str | Path) -> nn.Module:
    """Fill the float `model` (built from the folder's config, on the CPU) from an int8 folder and
    swap its modules for int8 ones; returns the model (modules replaced in place)."""
    path = Path(directory, WEIGHTS_FILE)
    meta = json.loads(Path(directory, QUANTIZATION_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise QuantizeError(f"{directory / QUANTIZATION_FILE}: unknown format "
                            f"{meta.get('format')!r} version {meta.get('version')!r}")
    stored = load_file(str(path))
    ints = {name[: -len(QWEIGHT)]: (q, stored[name[: -len(QWEIGHT)] + SCALE])
            for name, q in stored.items() if name.endswith(QWEIGHT)}
    state = {name: t for name, t in stored.items() if not name.endswith((QWEIGHT, SCALE))}
    state.update({name: dequantize_rows(q, s) for name, (q, s) in ints.items()})
    _load_state(model, state, path)
    by_name = model.state_dict(keep_vars=True)
    int8_of = {id(by_name[name]): pair for name, pair in ints.items()}  # tensor id -> (qweight, scale)
    _swap_modules(model, int8_of)
    return model


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """load_state_dict, where a name left out must be tied to one that was loaded."""
    by_name = model.state_dict(keep_vars=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {id(by_name[name]) for name in state if name in by_name}
    untied = [name for name in missing if id(by_name[name]) not in loaded]
    if untied or unexpected:
        raise QuantizeError(f"{path}: weights do not match the model (missing {untied}, unexpected {unexpected})")


def _swap_modules(model: nn.Module, int8_of: dict[int, tuple[torch.Tensor, torch.Tensor]]) -> None:
    read_as_weight = model.combine if isinstance(model, RNNSeq2Seq) else None  # `_step_weights` takes .weight
    for name, module in list(model.named_modules()):
        replacement = None
        if _int8_linear_wanted(module) and id(module.weight) in int8_of and module is not read_as_weight:
            replacement = int8_linear(module, *int8_of[id(module.weight)])
        elif isinstance(module, RecurrentCell):
            replacement = Int8RecurrentCell.from_cell(module, int8_of)
        if replacement is not None:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, replacement)


def int8_linear(linear: nn.Linear, qweight: torch.Tensor, scale: torch.Tensor) -> qdynamic.Linear:
    """torch's dynamic-quantized Linear holding the stored integers and the float bias."""
    with _quiet():  # the constructor makes a placeholder quantized weight
        module = qdynamic.Linear(linear.in_features, linear.out_features, bias_=linear.bias is not None,
                                 dtype=torch.qint8)
    bias = None if linear.bias is None else linear.bias.detach().float()
    module.set_weight_bias(packed_tensor(qweight, scale), bias)
    return module


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
