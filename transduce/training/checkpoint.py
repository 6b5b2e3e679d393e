"""Checkpoints that loading can trust: safetensors + JSON, written to a temporary name then renamed.

A model folder holds `config.json`, the vocabularies and tokenizers, and `model.safetensors`.
Training checkpoints live in `checkpoints/step-NNNNNNN/` with the weights, the optimizer
state (`optimizer.safetensors` + its hyper-parameters in `trainer_state.json`) and the
trainer's counters. A crash during a save leaves a `.tmp` folder behind, never a damaged
checkpoint; loading reads tensors and JSON only, never executes code.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from transduce.constants import OPTIMIZER_FILE, TRAINER_STATE_FILE, WEIGHTS_FILE

CHECKPOINT_DIR = "checkpoints"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Weights as safetensors (tied tensors stored once), atomically."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_model(model, str(tmp))
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def load_weights(model: torch.nn.Module, path: str | Path, device: str | torch.device = "cpu") -> None:
    missing, unexpected = load_model(model, str(path), strict=True, device=str(device))
    if missing or unexpected:  # strict=True raises first; kept for clarity of intent
        raise ValueError(f"{path}: weights do not match the model ({missing or unexpected})")


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into flat tensors (for safetensors) and JSON-able rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for name, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta.get("scalars", {}).items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else g for g in meta["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def save_checkpoint(
    run_dir: str | Path, step: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
    trainer_state: dict, keep: int,
) -> Path:
    """Write checkpoints/step-N atomically (temporary folder, fsync, rename); keep the newest `keep`."""
    root = Path(run_dir, CHECKPOINT_DIR)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    save_model(model, str(tmp / WEIGHTS_FILE))
    tensors, meta = optimizer_tensors(optimizer)
    save_file(tensors, str(tmp / OPTIMIZER_FILE))
    state = dict(trainer_state, step=step, optimizer=meta)
    (tmp / TRAINER_STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
    for name in (WEIGHTS_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE):
        with open(tmp / name, "rb") as handle:
            os.fsync(handle.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders are not checkpoints)."""
    root = Path(run_dir, CHECKPOINT_DIR)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def load_checkpoint(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, device="cpu"
) -> dict:
    """Restore weights (and optimizer) from a checkpoint folder; returns the trainer state."""
    path = Path(path)
    load_weights(model, path / WEIGHTS_FILE, device)
    state = json.loads((path / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    if optimizer is not None:
        restore_optimizer(optimizer, load_file(str(path / OPTIMIZER_FILE), device=str(device)), state["optimizer"])
    return state
