"""Learning curves of a run folder, drawn from its `log.jsonl` to one PNG.

Four panels over the update number: training and dev loss; the dev metrics (BLEU, chrF,
ROUGE-L); the learning rate; training speed in target tokens per second. Drawn with
matplotlib's file backend, so no display is needed.
"""
from __future__ import annotations

import json
from pathlib import Path

from transduce.constants import LOG_FILE
from transduce.data.readers import DataError

DEV_METRICS = (("dev_bleu", "BLEU"), ("dev_chrf", "chrF"), ("dev_rougeL", "ROUGE-L"))


def read_log(path: Path) -> tuple[list[dict], list[dict]]:
    """Training records (with "loss") and dev records (with "dev_loss"), in file order."""
    train, dev = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(path, number, f"not a JSON object ({exc.msg})") from None
            if not isinstance(record, dict) or "step" not in record:
                raise DataError(path, number, "expected a JSON object with a \"step\"")
            if "loss" in record:
                train.append(record)
            if "dev_loss" in record:
                dev.append(record)
    return train, dev


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the curves of `run_dir` to `out` (default: RUN_DIR/curves.png); returns the path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    log = run_dir / LOG_FILE
    if not log.is_file():
        raise FileNotFoundError(f"{run_dir}: no {LOG_FILE} (not a training run folder)")
    train, dev = read_log(log)
    if not train and not dev:
        raise DataError(log, None, "no training or dev records to plot")
    out = Path(out) if out is not None else run_dir / "curves.png"

    figure, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    loss, metrics, rate, speed = axes.flat
    _line(loss, train, "loss", "train loss")
    _line(loss, dev, "dev_loss", "dev loss", marker="o")
    loss.set_title("loss (nats per target token)")
    for key, label in DEV_METRICS:
        _line(metrics, dev, key, label, marker="o")
    metrics.set_title("dev metrics")
    _line(rate, train, "lr", "learning rate")
    rate.set_title("learning rate")
    _line(speed, train, "tgt_tok_per_s", "target tokens/s")
    speed.set_title("training speed (target tokens/s)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    for ax in axes[1]:
        ax.set_xlabel("update")
    figure.suptitle(str(run_dir))
    figure.tight_layout()
    tmp = out.with_name(out.name + ".tmp.png")
    figure.savefig(tmp, dpi=100)
    plt.close(figure)
    tmp.replace(out)
    return out


def _line(ax, records: list[dict], key: str, label: str, marker: str | None = None) -> None:
    points = [(r["step"], r[key]) for r in records if r.get(key) is not None]
    if points:
        steps, values = zip(*points)
        ax.plot(steps, values, label=label, marker=marker, markersize=3)
