"""Data-parallel training: two CPU processes under torchrun (gloo) follow the loss curve of one
process with twice the batch, and a run saved by two processes resumes on one."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.csl import csl_pairs, write_tsv
from transduce.config import Config
from transduce.constants import LOG_FILE
from transduce.training.checkpoint import list_checkpoints

TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    write_tsv(root / "train.tsv", csl_pairs(300))
    config = Config.from_dict({
        "data": {"train": str(root / "train.tsv"), "tokenizer": "char"},
        "model": {"embed_dim": 32, "hidden": 32, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.0},
        "train": {"steps": 16, "batch_tokens": 400, "pool_batches": 4, "save_every": 8, "eval_every": 0,
                  "log_every": 2, "warmup": 4, "lr": 3e-3, "threads": 1, "progress": False},
    })
    config.save(root / "config.json")
    return root / "config.json"


def _losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / LOG_FILE).read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _train(*args, processes: int = 1) -> subprocess.CompletedProcess:
    if processes == 1:
        command = [sys.executable, "-m", "transduce", "train"]
    else:
        command = [TORCHRUN, "--standalone", "--nproc_per_node", str(processes), "-m", "transduce", "train"]
    proc = subprocess.run(command + [str(a) for a in args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun not installed beside this Python")
def test_two_processes_follow_one_process_with_the_doubled_batch(config_file, tmp_path):
    _train(config_file, "--out", tmp_path / "one", "--set", "train.accumulate=2")
    two = _train(config_file, "--out", tmp_path / "two", processes=2)
    assert "2 processes" in two.stderr
    assert two.stderr.count("model saved in") == 1  # one voice
    one_curve, two_curve = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert [s for s, _ in one_curve] == [s for s, _ in two_curve] == list(range(2, 17, 2))
    for (_, a), (_, b) in zip(one_curve, two_curve):
        assert b == pytest.approx(a, abs=2e-3)
    assert one_curve[-1][1] < one_curve[0][1] - 0.1  # and it is learning

    # a run saved by two processes goes on in one, from the same data position
    resumed = tmp_path / "resumed"
    _train(config_file, "--out", resumed, "--steps", 8, processes=2)
    assert [p.name for p in list_checkpoints(resumed)] == ["step-0000008"]
    proc = _train("--out", resumed, "--steps", 16, "--set", "train.accumulate=2")
    assert "resuming on 1 processes a run saved by 2" in proc.stderr
    for (_, a), (_, b) in zip(one_curve, _losses(resumed)):
        assert b == pytest.approx(a, abs=2e-3)
