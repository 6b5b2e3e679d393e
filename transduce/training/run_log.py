"""The run's figures as JSON lines in log.jsonl (read by `transduce plot`), and optionally as
TensorBoard events (`train.tensorboard: true`, needs the tensorboard package)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from transduce.config import ConfigError

TENSORBOARD_DIR = "tensorboard"
NOT_SCALARS = ("step", "epoch")


class RunLog:
    """Appends records; a record's numeric fields other than step/epoch become scalars at its step."""

    def __init__(self, path: str | Path, tensorboard_dir: str | Path | None = None, enabled: bool = True):
        """`enabled=False` (the other processes of a data-parallel run) writes nothing."""
        self.path, self.enabled = Path(path), enabled
        self.handle = open(self.path, "a", encoding="utf-8") if enabled else None
        self.writer = None
        if tensorboard_dir is not None and enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:  # torch's writer needs the tensorboard package
                raise ConfigError("train.tensorboard: install the tensorboard package "
                                  "(pip install 'transduce[tensorboard]')") from exc
            self.writer = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                    self.writer.add_scalar(_tag(key), value, record["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.writer is not None:
            self.writer.close()

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _tag(key: str) -> str:
    """dev_bleu -> dev/bleu, loss -> train/loss: TensorBoard groups charts by the prefix."""
    if key.startswith("dev_"):
        return "dev/" + key[4:]
    return "train/" + key


def truncate_log(path: str | Path, last_step: int) -> None:
    """Drop the records after `last_step` (a resumed run writes them again), atomically."""
    path = Path(path)
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except ValueError:  # a line cut short by a kill
            continue
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)
