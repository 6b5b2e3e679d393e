"""`transduce average`: the mean of a run's last checkpoints as a new model folder (checkpoint
averaging smooths the noise of the last updates; it usually gains a little BLEU for free). Named
steps instead pick checkpoints by update; one step makes that checkpoint a model folder to evaluate."""
from __future__ import annotations

from pathlib import Path

from transduce.config import Config
from transduce.constants import CONFIG_FILE, WEIGHTS_FILE
from transduce.data.codec import TextCodec
from transduce.training.checkpoint import CheckpointError, average_weights, checkpoint_step, damage, list_checkpoints


def average_run(run_dir: str | Path, out_dir: str | Path, last: int | None = None,
                steps: list[int] | None = None) -> tuple[Path, list[Path]]:
    """Average the newest `last` checkpoints (all kept ones by default), or those of the updates in
    `steps`, of `run_dir` into `out_dir`, with the run's config, vocabularies and tokenizers.
    Returns (out_dir, checkpoints used)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    found = list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoints to average (looked in {run_dir / 'checkpoints'})")
    if last is not None and steps:
        raise CheckpointError("give --last or --steps, not both")
    if last is not None and last < 1:
        raise CheckpointError(f"--last must be at least 1, got {last}")
    chosen = found[-last:] if last else found
    if last and last > len(found):
        raise CheckpointError(f"{run_dir}: asked for the last {last} checkpoints, only {len(found)} kept")
    if steps:
        by_step = {checkpoint_step(path): path for path in found}
        missing = sorted(set(steps) - set(by_step))
        if missing:
            kept = ", ".join(str(step) for step in sorted(by_step))
            raise CheckpointError(f"{run_dir}: no checkpoint of update {missing[0]} (kept: {kept})")
        chosen = [by_step[step] for step in sorted(set(steps))]
    for path in chosen:
        problem = damage(path)
        if problem:
            raise CheckpointError(f"{path}: damaged ({problem})")
    config = Config.load(run_dir / CONFIG_FILE)
    codec = TextCodec.load(config.data, run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    codec.save(out_dir)
    config.save(out_dir / CONFIG_FILE)
    average_weights(chosen, out_dir / WEIGHTS_FILE)
    return out_dir, chosen
