"""Runs that survive: killed runs resume bitwise (the fault script, a few kills), Ctrl-C saves and
stops, a damaged newest checkpoint is passed over, a refused write keeps the last good
checkpoint, a changed config is refused, early stopping keeps the best weights."""
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.csl import csl_pairs, write_tsv
from transduce.config import Config
from transduce.constants import LOG_FILE, TRAINER_STATE_FILE, WEIGHTS_FILE
from transduce.training import checkpoint as checkpoint_module
from transduce.training.checkpoint import CheckpointError, damage, list_checkpoints
from transduce.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume-data")
    pairs = csl_pairs(240, max_source=50)
    write_tsv(root / "train.tsv", pairs[:220])
    write_tsv(root / "dev.tsv", pairs[220:])
    return root


def _config(data, **train) -> Config:
    return Config.from_dict({
        "data": {"train": str(data / "train.tsv"), "dev": str(data / "dev.tsv"), "tokenizer": "char"},
        "model": {"embed_dim": 32, "hidden": 32, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.2},
        "train": {"steps": 16, "batch_tokens": 500, "pool_batches": 4, "save_every": 4, "eval_every": 8,
                  "log_every": 2, "warmup": 4, "threads": 1, "progress": False, "dev_max_sentences": 8,
                  **train},
        "decode": {"max_length": 20},
    })


def _cli(*args, **popen):
    return [sys.executable, "-m", "transduce", "train", *map(str, args)]


def _write_yaml(config: Config, path: Path) -> Path:
    config.save(path)
    return path


def test_fault_script_a_few_kills_resume_bitwise(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fault_resume.py"), "--kills", "3", "--quick",
                           "--work", str(tmp_path / "work")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert report["kills"] >= 2, report
    assert report["all_equal"], report
    assert report["resumed_bitwise_equal"] == report["kills"]


def test_ctrl_c_saves_a_checkpoint_and_the_same_command_resumes_bitwise(data, tmp_path):
    config = _write_yaml(_config(data, steps=400, save_every=1000, eval_every=0), tmp_path / "config.json")
    reference = tmp_path / "reference"
    subprocess.run(_cli(config, "--out", reference), check=True, capture_output=True)

    out = tmp_path / "run"
    proc = subprocess.Popen(_cli(config, "--out", out), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / LOG_FILE).is_file() or not (out / LOG_FILE).read_text():  # training has started
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "SIGINT: saving a checkpoint" in stderr and "the same command resumes" in stderr
    saved = list_checkpoints(out)
    assert len(saved) == 1 and damage(saved[0]) is None
    stopped_at = int(saved[0].name.split("-")[1])
    assert 0 < stopped_at < 400 and f"stopped at update {stopped_at}" in stderr

    again = subprocess.run(_cli(config, "--out", out), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"resuming from {saved[0]}" in again.stderr
    assert (out / WEIGHTS_FILE).read_bytes() == (reference / WEIGHTS_FILE).read_bytes()


def test_a_damaged_newest_checkpoint_is_passed_over_with_a_message(data, tmp_path):
    config = _write_yaml(_config(data, steps=8, keep_checkpoints=2), tmp_path / "config.json")
    out = tmp_path / "run"
    subprocess.run(_cli(config, "--out", out), check=True, capture_output=True)
    newest = list_checkpoints(out)[-1]
    weights = newest / WEIGHTS_FILE
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0xFF  # one flipped byte inside a tensor
    weights.write_bytes(bytes(raw))

    proc = subprocess.run(_cli(config, "--out", out, "--steps", 12), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert f"{newest} is damaged (model.safetensors fails its checksum)" in proc.stderr
    assert "resuming from" in proc.stderr and "step-0000004 (step 4," in proc.stderr
    assert [p.name for p in list_checkpoints(out)] == ["step-0000008", "step-0000012"]
    assert (out / "checkpoints" / "damaged-step-0000008").is_dir()  # set aside, not deleted
    assert all(damage(p) is None for p in list_checkpoints(out))


def test_a_changed_model_config_is_refused_and_fresh_starts_over(data, tmp_path):
    config = _write_yaml(_config(data, steps=4), tmp_path / "config.json")
    out = tmp_path / "run"
    subprocess.run(_cli(config, "--out", out), check=True, capture_output=True)
    proc = subprocess.run(_cli(config, "--out", out, "--steps", 8, "--set", "model.hidden=48",
                               "--set", "model.embed_dim=48"), capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "model.embed_dim=32" in proc.stderr and "--fresh" in proc.stderr

    fresh = subprocess.run(_cli(config, "--out", out, "--fresh", "--save-every", 2, "--steps", 4), capture_output=True,
                           text=True)
    assert fresh.returncode == 0, fresh.stderr
    assert "resuming" not in fresh.stderr
    assert [p.name for p in list_checkpoints(out)] == ["step-0000002", "step-0000004"][-3:]
    steps = [json.loads(line)["step"] for line in (out / LOG_FILE).read_text().splitlines()]
    assert steps == sorted(steps) and steps[0] == 2  # the old run's log was dropped


def test_resume_without_a_config_uses_the_runs_own(data, tmp_path):
    config = _write_yaml(_config(data, steps=4), tmp_path / "config.json")
    out = tmp_path / "run"
    subprocess.run(_cli(config, "--out", out), check=True, capture_output=True)
    proc = subprocess.run(_cli("--out", out, "--steps", 6), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "step-0000004 (step 4," in proc.stderr
    assert list_checkpoints(out)[-1].name == "step-0000006"


def test_a_refused_checkpoint_write_keeps_the_last_good_one(data, tmp_path, monkeypatch):
    config = _config(data, steps=12, eval_every=0)
    out = tmp_path / "run"
    real_save_file = checkpoint_module.save_file
    calls = {"optimizer": 0}

    def full_disk(tensors, filename, *args, **kwargs):
        if filename.endswith("optimizer.safetensors"):
            calls["optimizer"] += 1
            if calls["optimizer"] == 2:  # the second checkpoint
                raise OSError(errno.ENOSPC, "No space left on device")
        return real_save_file(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module, "save_file", full_disk)
    with pytest.raises(CheckpointError) as failure:
        Trainer(config, out, device="cpu", log=lambda m: None).fit()
    message = str(failure.value)
    assert "No space left on device" in message and "step-0000004" in message
    assert [p.name for p in list_checkpoints(out)] == ["step-0000004"]
    assert damage(list_checkpoints(out)[0]) is None
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]

    monkeypatch.setattr(checkpoint_module, "save_file", real_save_file)
    messages = []
    trainer = Trainer(config, out, device="cpu", log=messages.append)
    assert trainer.step == 4
    trainer.fit()
    assert trainer.step == 12


def test_early_stopping_stops_and_keeps_the_best_weights(data, tmp_path):
    # greedy outputs of a barely trained model score BLEU 0 at every evaluation: never better than the first
    config = _config(data, steps=40, eval_every=4, save_every=100, eval_metric="bleu", patience=2, lr=1e-5,
                     tensorboard=False)
    messages = []
    trainer = Trainer(config, tmp_path / "run", device="cpu", log=messages.append)
    trainer.fit()
    assert trainer.stopped_early and trainer.step == 12, trainer.step
    assert trainer.best["step"] == 4
    best = tmp_path / "run" / "checkpoints" / "best" / WEIGHTS_FILE
    assert (tmp_path / "run" / WEIGHTS_FILE).read_bytes() == best.read_bytes()
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-0000012"]  # saved when stopping
    assert any("the best dev weights (step 4" in m for m in messages)


def test_tensorboard_events_are_written_on_request(data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = _config(data, steps=4, eval_every=4, tensorboard=True)
    Trainer(config, tmp_path / "run", device="cpu", log=lambda m: None).fit()
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [2, 4]
    assert [e.step for e in events.Scalars("dev/loss")] == [4]
    assert os.listdir(tmp_path / "run" / "tensorboard")


def test_a_resumed_run_computes_with_the_kernels_the_run_recorded(data, tmp_path):
    """A checkpoint records the kernel policy the run used; resumed where `auto` would settle
    otherwise (another machine: here a record edited to say so), the run goes on with its own."""
    from transduce import kernels
    out = tmp_path / "run"
    Trainer(_config(data, steps=4, eval_every=0), out, device="cpu", log=lambda m: None).fit()
    state_file = list_checkpoints(out)[-1] / TRAINER_STATE_FILE
    state = json.loads(state_file.read_text())
    assert state["kernels"] == kernels.resolve("auto").to_dict()
    elsewhere = dict(state["kernels"], weight_gradients="mkl", cpu="AVX2")
    state_file.write_text(json.dumps(dict(state, kernels=elsewhere)))
    sums_file = state_file.parent / checkpoint_module.CHECKSUM_FILE  # the edit is not damage: sums follow it
    sums = json.loads(sums_file.read_text())
    sums_file.write_text(json.dumps(dict(sums, **{TRAINER_STATE_FILE: checkpoint_module._sha256(state_file)})))
    messages = []
    trainer = Trainer(_config(data, steps=8, eval_every=0), out, device="cpu", log=messages.append)
    assert trainer.step == 4 and trainer.kernels.to_dict() == elsewhere == kernels.active().to_dict()
    assert any("kernels: the run's own (auto: oneDNN products, weight gradients MKL" in m for m in messages)
    trainer = Trainer(_config(data, steps=8, eval_every=0, kernels="torch"), out, device="cpu", log=messages.append)
    assert not kernels.fast() and "instead of the run's auto" in messages[-2]
    kernels.use("auto")
