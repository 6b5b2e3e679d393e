"""Reading a model folder: config, tokenizers and vocabularies, float or int8 weights, and the
device to run on. Below training, inference and export alike, so none of them imports another
to load a model.

A folder holds `config.json`, the vocabularies and tokenizers, and `model.safetensors`; an int8
folder (written by `export.quantize`) also holds `quantization.json`, and its safetensors hold
`<name>.qweight` (int8) and `<name>.scale` (float32) for each quantized matrix. Loading reads
tensors and JSON only, never executes code.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model
from torch import nn

from transduce.config import Config, ConfigError
from transduce.constants import CONFIG_FILE, WEIGHTS_FILE
from transduce.data.codec import TextCodec
from transduce.models.builder import build_model
from transduce.models.int8 import dequantize_rows, swap_modules

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
QUANTIZATION_FILE = "quantization.json"
INT8_FORMAT = "transduce-int8"
INT8_VERSION = 1
QWEIGHT, SCALE = ".qweight", ".scale"


class ModelLoadError(RuntimeError):
    """A model folder that is missing or incomplete, with the path in the message."""


class QuantizeError(RuntimeError):
    """A folder that cannot be quantized or a quantized folder that cannot be loaded, with the path."""


@dataclass
class LoadedModel:
    """What a model folder holds, ready to run: the model is in eval mode on `device`."""

    config: Config
    codec: TextCodec
    model: nn.Module
    device: torch.device


def pick_device(name: str = "auto") -> torch.device:
    """"auto": the GPU when there is one, else the CPU; any other name as torch reads it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def is_quantized(directory: str | Path) -> bool:
    return Path(directory, QUANTIZATION_FILE).is_file()


def load_weights(model: nn.Module, path: str | Path, device: str | torch.device = "cpu") -> None:
    """Fill `model` from a safetensors file whose tensors match it exactly (tied ones stored once)."""
    missing, unexpected = load_model(model, str(path), strict=True, device=str(device))
    if missing or unexpected:  # strict=True raises first; kept for clarity of intent
        raise ValueError(f"{path}: weights do not match the model ({missing or unexpected})")


def load_model_folder(directory: str | Path, device: str = "auto", precision: str = "fp32") -> LoadedModel:
    """Load a model folder (float or int8). precision="bf16" keeps bfloat16 weights for decoding;
    an int8 folder runs on the CPU with float32 activations."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    directory = Path(directory)
    for name in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / name).is_file():
            raise ModelLoadError(f"{directory}: not a model folder (no {name})")
    try:
        config = Config.load(directory / CONFIG_FILE)
    except ConfigError as exc:
        raise ModelLoadError(str(exc)) from None
    codec = TextCodec.load(config.data, directory)
    int8 = is_quantized(directory)
    if int8 and (precision != "fp32" or device not in ("auto", "cpu")):
        raise ModelLoadError(f"{directory}: an int8 model decodes on the CPU with fp32 activations "
                             f"(asked for device {device!r}, precision {precision!r})")
    dev = torch.device("cpu") if int8 else pick_device(device)
    try:
        model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab))
        if int8:
            model = load_quantized(model, directory)
        else:
            load_weights(model, directory / WEIGHTS_FILE, dev)
            model = model.to(dev, dtype=PRECISIONS[precision])
    except (SafetensorError, RuntimeError, ValueError) as exc:  # QuantizeError is a RuntimeError
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{directory / WEIGHTS_FILE}: cannot load the weights ({first_line})") from None
    return LoadedModel(config, codec, model.eval(), dev)


def load_quantized(model: nn.Module, directory: str | Path) -> nn.Module:
    """Fill the float `model` (built from the folder's config, on the CPU) from an int8 folder and
    swap its modules for int8 ones built from the stored integers (no re-rounding); returns the
    model (modules replaced in place)."""
    directory = Path(directory)
    path = directory / WEIGHTS_FILE
    meta = json.loads((directory / QUANTIZATION_FILE).read_text(encoding="utf-8"))
    if meta.get("format") != INT8_FORMAT or meta.get("version") != INT8_VERSION:
        raise QuantizeError(f"{directory / QUANTIZATION_FILE}: unknown format "
                            f"{meta.get('format')!r} version {meta.get('version')!r}")
    stored = load_file(str(path))
    ints = {name[: -len(QWEIGHT)]: (q, stored[name[: -len(QWEIGHT)] + SCALE])
            for name, q in stored.items() if name.endswith(QWEIGHT)}
    state = {name: t for name, t in stored.items() if not name.endswith((QWEIGHT, SCALE))}
    state.update({name: dequantize_rows(q, s) for name, (q, s) in ints.items()})
    _load_state(model, state, path)
    by_name = model.state_dict(keep_vars=True)
    swap_modules(model, {id(by_name[name]): pair for name, pair in ints.items()})  # tensor id -> (qweight, scale)
    return model


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """load_state_dict, where a name left out must be tied to one that was loaded."""
    by_name = model.state_dict(keep_vars=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    loaded = {id(by_name[name]) for name in state if name in by_name}
    untied = [name for name in missing if id(by_name[name]) not in loaded]
    if untied or unexpected:
        raise QuantizeError(f"{path}: weights do not match the model (missing {untied}, unexpected {unexpected})")
