"""Learning curves: a PNG of the right size from a run's log; clear errors for a folder without
a log and for a damaged line."""
import json

import pytest
from matplotlib.image import imread

from transduce.data.readers import DataError
from transduce.training.curves import plot_run, read_log


def _write_log(path, extra=""):
    records = [{"step": s, "epoch": 0, "loss": 5.0 - s / 100, "ppl": 1.0, "lr": 1e-3 * s / 100,
                "tgt_tok_per_s": 1000.0 + s} for s in range(25, 201, 25)]
    records += [{"step": s, "dev_loss": 4.0 - s / 200, "dev_ppl": 1.0, "dev_bleu": s / 10, "dev_chrf": s / 8,
                 "dev_rougeL": s / 5} for s in (100, 200)]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + extra, encoding="utf-8")
    return records


def test_plot_writes_a_png_of_four_panels(tmp_path):
    _write_log(tmp_path / "log.jsonl")
    out = plot_run(tmp_path)
    assert out == tmp_path / "curves.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width = imread(out).shape[:2]
    assert (width, height) == (1100, 700)
    assert not list(tmp_path.glob("*.tmp.png"))
    custom = plot_run(tmp_path, tmp_path / "other.png")
    assert custom.is_file()


def test_read_log_splits_train_and_dev_records(tmp_path):
    records = _write_log(tmp_path / "log.jsonl", extra="\n")
    train, dev = read_log(tmp_path / "log.jsonl")
    assert [r["step"] for r in train] == [r["step"] for r in records if "loss" in r]
    assert [r["step"] for r in dev] == [100, 200]


def test_errors_name_the_folder_or_the_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no log.jsonl"):
        plot_run(tmp_path)
    _write_log(tmp_path / "log.jsonl", extra='{"step": 300, "loss": \n')
    with pytest.raises(DataError, match=r"log.jsonl:11: not a JSON object"):
        plot_run(tmp_path)
