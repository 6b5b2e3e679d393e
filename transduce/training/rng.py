"""Every random generator a training run draws from, captured and restored, so that a resumed
run draws the same dropout masks (and anything else random) as an uninterrupted one.

Python's and NumPy's states are integers (JSON); torch's CPU and per-GPU states are byte
tensors (safetensors).
"""
from __future__ import annotations

import random

import numpy as np
import torch


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, json-able) describing the state of every generator of this process."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }
    return tensors, meta


def restore_rng(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch_cpu"].to(torch.uint8))
    cuda = [tensors[k] for k in sorted(tensors, key=_device_index) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in cuda[: torch.cuda.device_count()]])


def _device_index(key: str) -> int:
    return int(key.rsplit("_", 1)[1]) if key.startswith("torch_cuda_") else -1


def pack_ranks(states: list[tuple[dict[str, torch.Tensor], dict]]) -> tuple[dict[str, torch.Tensor], dict]:
    """Every process's generator states in one (tensors, json) pair: tensors keyed "rank{r}.{name}"."""
    tensors = {f"rank{r}.{name}": t for r, (parts, _) in enumerate(states) for name, t in parts.items()}
    return tensors, {"ranks": [meta for _, meta in states]}


def unpack_rank(tensors: dict[str, torch.Tensor], meta: dict, rank: int) -> tuple[dict[str, torch.Tensor], dict]:
    prefix = f"rank{rank}."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}, meta["ranks"][rank]
