"""Weights and checkpoints: safetensors files, identical outputs after loading, optimizer state restored,
old checkpoints pruned, a crash mid-save leaves the previous checkpoint usable."""
import errno
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
    BEST_STATE_FILE,
    CHECKSUM_FILE,
    RNG_FILE,
    CheckpointError,
    average_weights,
    damage,
    latest_sound_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_best,
    save_checkpoint,
    save_weights,
)
from transduce.kernels.cross_entropy import label_smoothed_nll
from transduce.model_folder import load_weights
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


def _stepped_and_saved(tmp_path, keep=3):
    """A model one Adam step in, saved as checkpoint 1, then stepped once more (unsaved)."""
    batch = _batch()
    model = _model()
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
    _adam_step(model, optimizer, batch)
    good = save_checkpoint(tmp_path, 1, model, optimizer, {"epoch": 0}, keep=keep)
    expected = _output(model, batch)
    _adam_step(model, optimizer, batch)
    return batch, model, optimizer, good, expected


def test_leftover_tmp_folder_is_not_a_checkpoint(tmp_path):
    batch, model, optimizer, good, expected = _stepped_and_saved(tmp_path)
    # a crash half-way through saving step 2: a temporary folder with part of the files
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


# ---- checksums, damaged checkpoints, generators, best weights, write failures, averaging ----------
def _saved(tmp_path, steps=(1,), keep=5, **kwargs):
    """Checkpoints at `steps`, one Adam update apart (so their weights differ); returns their folders."""
    batch = _batch()
    model = _model(**kwargs)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
    folders = []
    for step in steps:
        _adam_step(model, optimizer, batch)
        folders.append(save_checkpoint(tmp_path, step, model, optimizer, {"epoch": 0}, keep=keep))
    return folders


def test_checksums_cover_every_file_of_a_checkpoint(tmp_path):
    (folder,) = _saved(tmp_path)
    sums = json.loads((folder / CHECKSUM_FILE).read_text())
    assert set(sums) == {p.name for p in folder.iterdir()} - {CHECKSUM_FILE}
    assert {WEIGHTS_FILE, OPTIMIZER_FILE, TRAINER_STATE_FILE} <= set(sums)
    assert all(len(v) == 64 for v in sums.values())  # SHA-256 in hex
    assert damage(folder) is None


def test_damage_names_a_flipped_byte(tmp_path):
    (folder,) = _saved(tmp_path)
    weights = folder / WEIGHTS_FILE
    raw = bytearray(weights.read_bytes())
    raw[-3] ^= 0x01  # one bit of the last tensor's data: the file still parses
    weights.write_bytes(bytes(raw))
    problem = damage(folder)
    assert problem is not None and WEIGHTS_FILE in problem and "checksum" in problem


@pytest.mark.parametrize("name", [OPTIMIZER_FILE, TRAINER_STATE_FILE, WEIGHTS_FILE])
def test_damage_names_a_missing_file(tmp_path, name):
    (folder,) = _saved(tmp_path)
    (folder / name).unlink()
    problem = damage(folder)
    assert problem is not None and name in problem and "missing" in problem


def test_damage_names_missing_or_broken_checksums(tmp_path):
    (folder,) = _saved(tmp_path)
    sums = (folder / CHECKSUM_FILE).read_text()
    (folder / CHECKSUM_FILE).unlink()
    assert CHECKSUM_FILE in damage(folder)
    (folder / CHECKSUM_FILE).write_text(sums[: len(sums) // 2])  # cut short
    assert CHECKSUM_FILE in damage(folder)
    (folder / CHECKSUM_FILE).write_text(sums)
    assert damage(folder) is None
    assert CHECKSUM_FILE in damage(tmp_path / "no-such-checkpoint")


def test_latest_sound_checkpoint_skips_a_damaged_newest_one(tmp_path):
    first, second, third = _saved(tmp_path, steps=(1, 2, 3))
    messages = []
    assert latest_sound_checkpoint(tmp_path, messages.append) == third
    assert messages == []

    (third / OPTIMIZER_FILE).write_bytes(b"\x00" * 16)
    (second / CHECKSUM_FILE).unlink()
    assert latest_sound_checkpoint(tmp_path, messages.append) == first
    assert len(messages) == 2
    assert str(third) in messages[0] and OPTIMIZER_FILE in messages[0]
    assert str(second) in messages[1] and CHECKSUM_FILE in messages[1]
    assert str(first) not in " ".join(messages)
    assert load_checkpoint(first, _model(seed=4), None)["step"] == 1

    (first / WEIGHTS_FILE).unlink()
    messages.clear()
    assert latest_sound_checkpoint(tmp_path, messages.append) is None
    assert len(messages) == 3
    assert latest_sound_checkpoint(tmp_path / "empty", messages.append) is None


def test_checkpoint_keeps_generator_states(tmp_path):
    model = _model()
    optimizer = make_optimizer(model, TrainConfig())
    torch.manual_seed(123)
    tensors = {"torch": torch.get_rng_state(), "extra": torch.arange(6, dtype=torch.int64).view(2, 3).t()}
    expected = torch.rand(4)  # what the saved generator state draws next
    meta = {"python": [3, [1, 2, 3], None], "numpy": {"pos": 7}}
    folder = save_checkpoint(tmp_path, 5, model, optimizer, {"epoch": 1}, keep=3, rng=(tensors, meta))
    assert _is_safetensors(folder / RNG_FILE)
    assert RNG_FILE in json.loads((folder / CHECKSUM_FILE).read_text())
    state = load_checkpoint(folder, _model(seed=2), make_optimizer(_model(seed=2), TrainConfig()))
    assert state["rng"] == meta and state["epoch"] == 1 and state["step"] == 5
    assert set(state["rng_tensors"]) == {"torch", "extra"}
    for key, value in tensors.items():
        assert torch.equal(state["rng_tensors"][key], value), key
    # the restored state replays the same random numbers
    torch.manual_seed(0)
    torch.set_rng_state(state["rng_tensors"]["torch"])
    assert torch.equal(torch.rand(4), expected)

    plain = save_checkpoint(tmp_path, 6, model, optimizer, {}, keep=3)
    assert not (plain / RNG_FILE).exists()
    assert "rng_tensors" not in load_checkpoint(plain, _model(), None)


def test_best_checkpoint_is_kept_apart_and_never_pruned(tmp_path):
    batch = _batch()
    model = _model()
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2))
    _adam_step(model, optimizer, batch)
    best = save_best(tmp_path, model, {"step": 1, "dev_loss": 2.5})
    assert best == tmp_path / "checkpoints" / "best"
    expected = _output(model, batch)
    assert damage(best) is None
    assert json.loads((best / BEST_STATE_FILE).read_text()) == {"step": 1, "dev_loss": 2.5}

    for step in (1, 2, 3, 4):
        _adam_step(model, optimizer, batch)
        save_checkpoint(tmp_path, step, model, optimizer, {}, keep=1)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000004"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best", "step-0000004"]
    assert latest_sound_checkpoint(tmp_path, print).name == "step-0000004"
    other = _model(seed=9)
    load_weights(other, best / WEIGHTS_FILE)
    assert torch.equal(_output(other, batch), expected)

    # a better evaluation replaces the best weights in place
    save_best(tmp_path, model, {"step": 4, "dev_loss": 1.5})
    assert json.loads((best / BEST_STATE_FILE).read_text())["step"] == 4
    load_weights(other, best / WEIGHTS_FILE)
    assert torch.equal(_output(other, batch), _output(model, batch))
    assert damage(best) is None
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best", "step-0000004"]


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    batch, model, optimizer, good, expected = _stepped_and_saved(tmp_path, keep=1)

    monkeypatch.setattr("transduce.training.checkpoint.save_file", _no_space)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint(tmp_path, 2, model, optimizer, {"epoch": 0}, keep=1)
    message = str(info.value)
    assert "No space left on device" in message
    assert "step-0000002" in message
    assert f"last good checkpoint is {good}" in message
    assert isinstance(info.value.__cause__, OSError) and info.value.__cause__.errno == errno.ENOSPC
    monkeypatch.undo()

    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-0000001"]  # no .tmp left
    assert list_checkpoints(tmp_path) == [good] and damage(good) is None
    restored = _model(seed=8)
    state = load_checkpoint(good, restored, make_optimizer(restored, TrainConfig(lr=1e-2)))
    assert state["step"] == 1
    assert torch.equal(_output(restored, batch), expected)


def test_a_failed_first_write_says_there_is_no_earlier_checkpoint(tmp_path, monkeypatch):
    model = _model()
    optimizer = make_optimizer(model, TrainConfig())
    monkeypatch.setattr("transduce.training.checkpoint.save_file", _no_space)
    with pytest.raises(CheckpointError, match="No space left on device.*no earlier checkpoint"):
        save_checkpoint(tmp_path, 1, model, optimizer, {}, keep=1)
    assert list((tmp_path / "checkpoints").iterdir()) == []


def _tensors(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def test_average_weights_is_the_mean_tensor_by_tensor(tmp_path):
    first, second = _saved(tmp_path, steps=(1, 2), tie_output=True)
    out = tmp_path / WEIGHTS_FILE
    average_weights([first, second], out)
    assert not (tmp_path / (WEIGHTS_FILE + ".tmp")).exists()
    a, b, mean = _tensors(first / WEIGHTS_FILE), _tensors(second / WEIGHTS_FILE), _tensors(out)
    assert set(mean) == set(a) == set(b)
    differ = 0
    for key in a:
        expected = ((a[key].double() + b[key].double()) / 2).to(a[key].dtype)
        assert mean[key].dtype == a[key].dtype, key
        assert torch.equal(mean[key], expected), key
        differ += not torch.equal(a[key], b[key])
    assert differ > 0  # the checkpoints really differ, so the mean is neither of them
    from safetensors import safe_open

    def metadata(path):
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata()

    assert metadata(out) == metadata(first / WEIGHTS_FILE)  # the names of the tied tensors are kept
    assert "tgt_embed.weight" in metadata(out)

    # the averaged file loads into a tied model, which stays tied and holds the mean
    model = _model(seed=5, tie_output=True)
    load_weights(model, out)
    assert model.output.weight is model.tgt_embed.weight
    state = model.state_dict()
    for key in a:
        assert torch.equal(state[key], mean[key]), key
    assert torch.equal(model.tgt_embed.weight, mean["output.weight"])

    # the mean of one checkpoint is that checkpoint
    average_weights([first], tmp_path / "one.safetensors")
    one = _tensors(tmp_path / "one.safetensors")
    assert all(torch.equal(one[k], a[k]) for k in a)


def test_average_weights_refuses_nothing_and_different_models(tmp_path):
    with pytest.raises(CheckpointError):
        average_weights([], tmp_path / WEIGHTS_FILE)
    (tied,) = _saved(tmp_path / "tied", tie_output=True)
    (untied,) = _saved(tmp_path / "untied", tie_output=False)
    with pytest.raises(CheckpointError, match="not the same model"):
        average_weights([tied, untied], tmp_path / WEIGHTS_FILE)
    assert not (tmp_path / WEIGHTS_FILE).exists()


def test_the_checkpoint_just_written_survives_pruning_and_damaged_ones_can_be_set_aside(tmp_path):
    """A damaged newer checkpoint must neither take the place of the one just written nor keep
    the run from having a usable checkpoint."""
    model = _model()
    optimizer = make_optimizer(model, TrainConfig())
    later = save_checkpoint(tmp_path, 250, model, optimizer, {}, keep=1)
    (later / "checksums.json").unlink()  # damaged
    messages = []
    assert latest_sound_checkpoint(tmp_path, messages.append, set_aside=True) is None
    assert not later.exists() and (tmp_path / "checkpoints" / "damaged-step-0000250").is_dir()
    assert "step-0000250 is damaged" in messages[0]
    written = save_checkpoint(tmp_path, 100, model, optimizer, {}, keep=1)
    assert written.is_dir() and list_checkpoints(tmp_path) == [written]
    assert latest_sound_checkpoint(tmp_path, messages.append) == written

    # even without setting aside, the newest write is never the one pruned
    other = tmp_path / "other"
    save_checkpoint(other, 250, model, optimizer, {}, keep=1)
    kept = save_checkpoint(other, 100, model, optimizer, {}, keep=1)
    assert list_checkpoints(other) == [kept]


def test_a_failed_average_write_is_a_checkpoint_error_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    from transduce.training import checkpoint as module

    model = _model()
    optimizer = make_optimizer(model, TrainConfig())
    paths = [save_checkpoint(tmp_path, s, model, optimizer, {}, keep=3) for s in (1, 2)]

    def full_disk(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module, "save_file", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device"):
        average_weights(paths, tmp_path / "avg.safetensors")
    assert not list(tmp_path.glob("avg.safetensors*"))
