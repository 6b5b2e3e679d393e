"""Weights and checkpoints: safetensors files, identical outputs after loading, optimizer state restored,
old checkpoints pruned, a crash mid-save leaves the previous checkpoint usable."""
import json
import shutil
import struct

import pytest
import torch

from transduce.config import ModelConfig, TrainConfig
from transduce.constants import OPTIMIZER_FILE, TRAINER_STATE_FILE, WEIGHTS_FILE
from transduce.data.batching import Example, collate
from transduce.models.builder import build_model
from transduce.training.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
)
from transduce.training.loss import label_smoothed_nll
from transduce.training.optim import make_optimizer

V = 12


def _model(seed=0, **extra):
    torch.manual_seed(seed)
    cfg = ModelConfig(embed_dim=16, hidden=16, encoder_layers=1, decoder_layers=2, dropout=0.0, **extra)
    return build_model(cfg, V, V)


def _batch():
    return collate([Example([4, 5, 6, 7], [8, 9, 10], 0), Example([11, 5], [6, 7, 8, 9, 4], 1)])


def _output(model, batch):
    model.eval()
    with torch.no_grad():
        return model(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in)


def _adam_step(model, optimizer, batch):
    model.train()
    optimizer.zero_grad()
    lp = model(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
    loss, _ = label_smoothed_nll(lp, batch.tgt_out, batch.tgt_mask, 0.1)
    loss.backward()
    optimizer.step()


def _is_safetensors(path) -> bool:
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    if raw[8:9] != b"{" or 8 + header_len > len(raw):
        return False
    json.loads(raw[8:8 + header_len].decode("utf-8"))  # the header is plain JSON
    return True


@pytest.mark.parametrize("tie_output", (True, False))
def test_weights_round_trip_gives_identical_outputs(tmp_path, tie_output):
    model = _model(seed=0, tie_output=tie_output)
    path = tmp_path / WEIGHTS_FILE
    save_weights(model, path)
    assert not (tmp_path / (WEIGHTS_FILE + ".tmp")).exists()
    other = _model(seed=1, tie_output=tie_output)
    batch = _batch()
    assert not torch.equal(_output(model, batch), _output(other, batch))
    load_weights(other, path)
    assert torch.equal(_output(model, batch), _output(other, batch))
    for (name, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items()):
        assert torch.equal(a, b), name
    if tie_output:  # still tied after loading
        assert other.output.weight is other.tgt_embed.weight


def test_weights_file_is_safetensors_and_never_unpickled(tmp_path, monkeypatch):
    model = _model()
    path = tmp_path / WEIGHTS_FILE
    save_weights(model, path)
    raw = path.read_bytes()
    assert not raw.startswith(b"PK") and not raw.startswith(b"\x80")  # neither torch's zip nor a pickle
    assert _is_safetensors(path)

    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("loading must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    other = _model(seed=3)
    load_weights(other, path)
    assert torch.equal(_output(model, _batch()), _output(other, _batch()))


def test_load_weights_refuses_a_different_model(tmp_path):
    save_weights(_model(), tmp_path / WEIGHTS_FILE)
    torch.manual_seed(0)
    bigger = build_model(ModelConfig(embed_dim=32, hidden=32, encoder_layers=1, decoder_layers=2), V, V)
    with pytest.raises(Exception):
        load_weights(bigger, tmp_path / WEIGHTS_FILE)


def test_checkpoint_restores_weights_and_optimizer(tmp_path):
    batch = _batch()
    model = _model()
    cfg = TrainConfig(lr=1e-2)
    optimizer = make_optimizer(model, cfg)
    for _ in range(3):
        _adam_step(model, optimizer, batch)
    folder = save_checkpoint(tmp_path, 3, model, optimizer, {"epoch": 2, "best": None}, keep=3)
    assert folder == tmp_path / "checkpoints" / "step-0000003"
    for name in (WEIGHTS_FILE, OPTIMIZER_FILE):
        assert _is_safetensors(folder / name)
    state = json.loads((folder / TRAINER_STATE_FILE).read_text())
    assert state["step"] == 3 and state["epoch"] == 2

    restored = _model(seed=7)
    restored_opt = make_optimizer(restored, cfg)
    trainer_state = load_checkpoint(folder, restored, restored_opt)
    assert trainer_state["step"] == 3 and trainer_state["epoch"] == 2 and trainer_state["best"] is None
    assert torch.equal(_output(model, batch), _output(restored, batch))
    # the Adam moments and step counts came back
    a, b = optimizer.state_dict(), restored_opt.state_dict()
    assert a["state"].keys() == b["state"].keys()
    for index in a["state"]:
        for slot, value in a["state"][index].items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][index][slot])), (index, slot)
    assert a["param_groups"][0]["betas"] == tuple(b["param_groups"][0]["betas"])

    # the next step is identical
    _adam_step(model, optimizer, batch)
    _adam_step(restored, restored_opt, batch)
    for (name, p), (_, q) in zip(model.named_parameters(), restored.named_parameters()):
        assert torch.equal(p, q), name

    # whereas the same weights with a fresh optimizer take a different step: the state mattered
    fresh = _model(seed=7)
    load_checkpoint(folder, fresh, None)
    fresh_opt = make_optimizer(fresh, cfg)
    _adam_step(fresh, fresh_opt, batch)
    again = _model(seed=7)
    again_opt = make_optimizer(again, cfg)
    load_checkpoint(folder, again, again_opt)
    _adam_step(again, again_opt, batch)
    assert not torch.equal(fresh.output.bias, again.output.bias)


def test_keep_prunes_old_checkpoints(tmp_path):
    model = _model()
    optimizer = make_optimizer(model, TrainConfig())
    for step in (10, 20, 30, 40, 50):
        save_checkpoint(tmp_path, step, model, optimizer, {}, keep=2)
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step-0000040", "step-0000050"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == names
    save_checkpoint(tmp_path, 60, model, optimizer, {}, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000060"]


def test_checkpoints_are_ordered_by_step_number(tmp_path):
    model = _model()
    optimizer = make_optimizer(model, TrainConfig())
    for step in (9, 100, 11):
        save_checkpoint(tmp_path, step, model, optimizer, {}, keep=5)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000009", "step-0000011", "step-0000100"]
    assert list_checkpoints(tmp_path / "nothing-here") == []


def test_leftover_tmp_folder_is_not_a_checkpoint(tmp_path):
    batch = _batch()
    model = _model()
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
    _adam_step(model, optimizer, batch)
    good = save_checkpoint(tmp_path, 1, model, optimizer, {"epoch": 0}, keep=3)
    expected = _output(model, batch)

    # a crash half-way through saving step 2: a temporary folder with part of the files
    _adam_step(model, optimizer, batch)
    crashed = tmp_path / "checkpoints" / ".step-0000002.tmp"
    crashed.mkdir()
    shutil.copy(good / WEIGHTS_FILE, crashed / WEIGHTS_FILE)
    (crashed / OPTIMIZER_FILE).write_bytes(b"\x00\x01 truncated")

    assert list_checkpoints(tmp_path) == [good]
    restored = _model(seed=5)
    opt = make_optimizer(restored, TrainConfig(lr=1e-2))
    state = load_checkpoint(list_checkpoints(tmp_path)[-1], restored, opt)
    assert state["step"] == 1
    assert torch.equal(_output(restored, batch), expected)

    # the next save of the same step replaces the leftover and completes
    final = save_checkpoint(tmp_path, 2, model, optimizer, {"epoch": 0}, keep=3)
    assert not crashed.exists()
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000001", "step-0000002"]
    assert load_checkpoint(final, _model(seed=6), None)["step"] == 2
