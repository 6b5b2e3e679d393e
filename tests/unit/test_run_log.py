"""The run log: JSON lines appended (also across reopenings), truncated to a resumed step (dropping a
line cut short by a kill), and the same figures as TensorBoard scalars when asked."""
import json
import sys

import pytest

from transduce.config import ConfigError
from transduce.training.run_log import RunLog, truncate_log

TRAIN = {"step": 10, "epoch": 0, "loss": 2.5, "ppl": 12.25, "lr": 0.001, "tgt_tokens": 300}
DEV = {"step": 20, "dev_loss": 1.75, "dev_bleu": 12.5, "dev_chrf": 30.25}


def _records(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_records_are_appended_as_json_lines(tmp_path):
    path = tmp_path / "log.jsonl"
    with RunLog(path) as log:
        log.write(TRAIN)
        assert _records(path) == [TRAIN]  # flushed at once: readable while the run goes on
        log.write(DEV)
    assert log.handle.closed and log.writer is None
    with RunLog(path) as log:  # a resumed run appends, it does not overwrite
        log.write({"step": 30, "loss": 2.0})
    assert _records(path) == [TRAIN, DEV, {"step": 30, "loss": 2.0}]
    assert path.read_text(encoding="utf-8").endswith("}\n")
    assert not (tmp_path / "tensorboard").exists()


def _write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def test_truncate_drops_records_after_the_step(tmp_path):
    path = tmp_path / "log.jsonl"
    records = [{"step": s, "loss": 5.0 - s} for s in (1, 2, 3, 4, 5)]
    records.insert(3, {"step": 3, "dev_loss": 1.0})
    records.insert(0, {"vocab": 10})  # no step: counts as step 0
    _write_lines(path, [json.dumps(r) for r in records])
    truncate_log(path, 3)
    assert _records(path) == [{"vocab": 10}] + [{"step": s, "loss": 5.0 - s} for s in (1, 2, 3)] + [
        {"step": 3, "dev_loss": 1.0}]  # in the file's order, both records of the last step kept
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]  # no temporary file left
    truncate_log(path, 0)
    assert _records(path) == [{"vocab": 10}]


def test_truncate_drops_a_line_cut_short_by_a_kill(tmp_path):
    path = tmp_path / "log.jsonl"
    whole = [json.dumps({"step": s, "loss": 1.0}) for s in (1, 2)]
    path.write_text("\n".join(whole) + '\n{"step": 3, "lo', encoding="utf-8")  # no final newline
    truncate_log(path, 10)
    assert path.read_text(encoding="utf-8") == "\n".join(whole) + "\n"
    # a cut line in the middle (an older kill, then more records appended) goes too
    path.write_text(whole[0] + '\n{"step": 2, "loss"\n' + whole[1] + "\n", encoding="utf-8")
    truncate_log(path, 2)
    assert _records(path) == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 1.0}]


def test_truncate_a_missing_log_does_nothing(tmp_path):
    truncate_log(tmp_path / "log.jsonl", 5)
    assert list(tmp_path.iterdir()) == []


def test_tensorboard_scalars_are_readable(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    board = tmp_path / "tensorboard"
    with RunLog(tmp_path / "log.jsonl", board) as log:
        log.write(TRAIN)
        log.write({**DEV, "flag": True, "note": "text"})  # neither a bool nor a string is a scalar
        log.write({**TRAIN, "step": 30, "epoch": 1, "loss": 2.0})
    assert len(_records(tmp_path / "log.jsonl")) == 3
    assert any(p.name.startswith("events.out.tfevents") for p in board.iterdir())

    events = EventAccumulator(str(board))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {"train/loss", "train/ppl", "train/lr", "train/tgt_tokens", "dev/loss", "dev/bleu", "dev/chrf"}

    def series(tag):
        return [(e.step, e.value) for e in events.Scalars(tag)]

    assert series("train/loss") == [(10, 2.5), (30, 2.0)]
    assert series("train/lr") == [(10, pytest.approx(0.001)), (30, pytest.approx(0.001))]
    assert series("train/tgt_tokens") == [(10, 300.0), (30, 300.0)]
    assert series("dev/bleu") == [(20, 12.5)]
    assert series("dev/loss") == [(20, 1.75)]
    assert series("dev/chrf") == [(20, 30.25)]


def test_tensorboard_without_the_package_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # makes the import fail
    with pytest.raises(ConfigError, match=r"pip install 'transduce\[tensorboard\]'"):
        RunLog(tmp_path / "log.jsonl", tmp_path / "tensorboard")
