"""Writing int8 model folders for CPU decoding: smaller folders, faster products, the same Translator API.

`quantize_model_dir` writes a new model folder whose weight matrices are int8 with one float32
scale per output row (the scheme of `models.int8`). `model.safetensors` holds `<name>.qweight`
(int8) and `<name>.scale` (float32) for each such matrix and every other tensor (biases, norms,
buffers) as it was; `quantization.json` says which and how. JSON and tensors only, as for any folder.

Which matrices: every linear layer of at least `models.int8.MIN_FEATURES` inputs and outputs, the
encoder's `nn.LSTM` / `nn.GRU` weights, the decoder's recurrent cells and the embeddings (one
scale per vocabulary row: the same rows as a tied output projection, so a tied matrix is stored
once). `model_folder.load_quantized` reads such a folder back. Stored int8 but run in float32
(dequantized), because int8 would not be faster there: the embeddings (a lookup), the encoder's
LSTM / GRU (torch's `quantized_lstm` runs each time step as separate small ops; see
benchmarks/README.md), and the RNN decoder's `combine`, which `RNNSeq2Seq` reads as a plain matrix.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from transduce.config import Config
from transduce.constants import CONFIG_FILE, WEIGHTS_FILE
from transduce.data.codec import TextCodec
from transduce.model_folder import (
    INT8_FORMAT,
    INT8_VERSION,
    QUANTIZATION_FILE,
    QWEIGHT,
    SCALE,
    QuantizeError,
    is_quantized,
)
from transduce.models.builder import build_model
from transduce.models.int8 import CELL_WEIGHTS, int8_linear_wanted, quantize_rows
from transduce.models.rnn import RecurrentCell


def _roles(model: nn.Module) -> dict[int, set[str]]:
    """What each quantizable weight tensor is to the model (a tied tensor has several roles), by id."""
    roles: dict[int, set[str]] = {}

    def add(tensor: torch.Tensor, role: str) -> None:
        roles.setdefault(id(tensor), set()).add(role)

    for module in model.modules():
        if int8_linear_wanted(module):
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
    _atomic(out_dir / WEIGHTS_FILE, lambda tmp: save_file(tensors, str(tmp), metadata={"format": INT8_FORMAT}))
    meta = {
        "format": INT8_FORMAT, "version": INT8_VERSION, "bits": 8,
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
