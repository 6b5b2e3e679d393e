"""Checkpoints that loading can trust: safetensors + JSON, written to a temporary name then renamed.

A model folder holds `config.json`, the vocabularies and tokenizers, and `model.safetensors`.
Training checkpoints live in `checkpoints/step-NNNNNNN/`: the weights, the optimizer state
(`optimizer.safetensors` + its hyper-parameters in `trainer_state.json`), every random
generator's state (`rng.safetensors` + JSON), the trainer's counters and data position, and
`checksums.json` (SHA-256 of each file, written last). The best dev weights so far live in
`checkpoints/best/`, which pruning never removes. A crash during a save leaves a `.tmp` folder
behind, never a damaged checkpoint; a checkpoint damaged later (disk, copy) fails its checksum
and the one before it is used. Loading reads tensors and JSON only, never executes code.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file, save_model

from transduce.constants import OPTIMIZER_FILE, TRAINER_STATE_FILE, WEIGHTS_FILE
from transduce.model_folder import load_weights

CHECKPOINT_DIR = "checkpoints"
BEST_DIR = "best"
RNG_FILE = "rng.safetensors"
CHECKSUM_FILE = "checksums.json"
BEST_STATE_FILE = "best.json"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (the previous ones are intact) or none can be read."""


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
    try:
        save_model(model, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {path}: {exc.strerror or exc}; the previous file is untouched") from exc
    _fsync_dir(path.parent)


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
    trainer_state: dict, keep: int, *, rng: tuple[dict[str, torch.Tensor], dict] | None = None,
) -> Path:
    """Write checkpoints/step-N atomically (temporary folder, fsync, rename); keep the newest `keep`.

    `rng` is (tensors, json) from `rng.capture_rng`. Raises CheckpointError when the disk or the
    folder refuses the write; the earlier checkpoints are left as they were."""
    root = Path(run_dir, CHECKPOINT_DIR)

    def write(folder: Path) -> None:
        save_model(model, str(folder / WEIGHTS_FILE))
        tensors, meta = optimizer_tensors(optimizer)
        save_file(tensors, str(folder / OPTIMIZER_FILE))
        state = dict(trainer_state, step=step, optimizer=meta)
        if rng is not None:
            save_file({k: v.contiguous() for k, v in rng[0].items()}, str(folder / RNG_FILE))
            state["rng"] = rng[1]
        (folder / TRAINER_STATE_FILE).write_text(json.dumps(state), encoding="utf-8")

    final = _write_folder(root, f"step-{step:07d}", write)
    others = [p for p in list_checkpoints(run_dir) if p != final]  # the one just written always stays
    for old in others[: max(len(others) - (keep - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_best(run_dir: str | Path, model: torch.nn.Module, figures: dict) -> Path:
    """checkpoints/best: the weights of the best dev evaluation so far and its figures."""

    def write(folder: Path) -> None:
        save_model(model, str(folder / WEIGHTS_FILE))
        (folder / BEST_STATE_FILE).write_text(json.dumps(figures), encoding="utf-8")

    return _write_folder(Path(run_dir, CHECKPOINT_DIR), BEST_DIR, write)


def _write_folder(root: Path, name: str, write: Callable[[Path], None]) -> Path:
    """Fill a temporary folder with `write`, add checksums, fsync everything, rename it to `name`."""
    final, tmp = root / name, root / f".{name}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        write(tmp)
        sums = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / CHECKSUM_FILE).write_text(json.dumps(sums, indent=1), encoding="utf-8")
        for path in tmp.iterdir():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(tmp)
        if final.exists():  # the same step written again (a resumed run): replace it
            old = root / f".{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(root)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = list_checkpoints(root.parent)
        kept = f"the last good checkpoint is {previous[-1]}" if previous else "no earlier checkpoint exists"
        raise CheckpointError(f"cannot write checkpoint {final}: {exc.strerror or exc} ({kept})") from exc
    return final


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def damage(path: str | Path) -> str | None:
    """What is wrong with a checkpoint folder (missing or altered file), or None when it is sound."""
    path = Path(path)
    try:
        sums = json.loads((path / CHECKSUM_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{CHECKSUM_FILE} missing or unreadable"
    for name, expected in sums.items():
        if not (path / name).is_file():
            return f"{name} missing"
        if _sha256(path / name) != expected:
            return f"{name} fails its checksum"
    return None


def checkpoint_step(path: Path) -> int:
    """The update a checkpoint folder (`step-NNNNNNN`) was saved at."""
    return int(path.name.removeprefix("step-"))


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders and best/ are not step checkpoints)."""
    root = Path(run_dir, CHECKPOINT_DIR)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-")]
    return sorted(found, key=checkpoint_step)


def latest_sound_checkpoint(run_dir: str | Path, log: Callable[[str], None] = print,
                            set_aside: bool = False) -> Path | None:
    """The newest checkpoint that passes its checksums, saying which newer ones were passed over.
    With `set_aside`, those are renamed `damaged-step-N` (kept for inspection, no longer step
    checkpoints: neither resumed from nor counted when old checkpoints are pruned)."""
    for path in reversed(list_checkpoints(run_dir)):
        problem = damage(path)
        if problem is None:
            return path
        log(f"{path} is damaged ({problem}): trying the checkpoint before it")
        if set_aside:
            os.replace(path, path.with_name(f"damaged-{path.name}"))
    return None


def load_checkpoint(
    path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, device="cpu"
) -> dict:
    """Restore weights (and optimizer) from a checkpoint folder; returns the trainer state
    (with the generators' tensors under "rng_tensors" when the checkpoint has them)."""
    path = Path(path)
    load_weights(model, path / WEIGHTS_FILE, device)
    state = json.loads((path / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
    if optimizer is not None:
        restore_optimizer(optimizer, load_file(str(path / OPTIMIZER_FILE), device=str(device)), state["optimizer"])
    if (path / RNG_FILE).is_file():
        state["rng_tensors"] = load_file(str(path / RNG_FILE))
    return state


def average_weights(paths: list[Path], out_file: str | Path) -> None:
    """Write the element-wise mean of the weights of several checkpoints of one model (in float64,
    stored in each tensor's own dtype), keeping the file's metadata (the names of tied tensors)."""
    if not paths:
        raise CheckpointError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    metadata = None
    for path in paths:
        with safe_open(str(path / WEIGHTS_FILE), framework="pt") as handle:
            metadata = metadata if metadata is not None else handle.metadata()
            keys = set(handle.keys())
            if total and keys != set(total):
                raise CheckpointError(f"{path}: holds other tensors than {paths[0]}: not the same model")
            for key in keys:
                tensor = handle.get_tensor(key)
                dtypes[key] = tensor.dtype
                total[key] = total[key] + tensor.double() if key in total else tensor.double()
    tensors = {k: (v / len(paths)).to(dtypes[k]).contiguous() for k, v in total.items()}
    out_file = Path(out_file)
    tmp = out_file.with_name(out_file.name + ".tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        os.replace(tmp, out_file)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {out_file}: {exc.strerror or exc}") from exc
