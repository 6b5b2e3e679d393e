"""`transduce average`: a run's newest checkpoints (or those of named updates) averaged into a model
folder, and one clear error for a run without checkpoints, a --last beyond what was kept, a step not
kept, or a damaged checkpoint."""
import shutil

import pytest
import torch
from safetensors.torch import load_file

from transduce.config import Config
from transduce.constants import CONFIG_FILE, SRC_VOCAB_FILE, TGT_VOCAB_FILE, WEIGHTS_FILE
from transduce.data.codec import TextCodec
from transduce.data.readers import read_pairs
from transduce.models.builder import build_model
from transduce.training.averaging import average_run
from transduce.model_folder import load_weights
from transduce.training.checkpoint import CheckpointError, save_checkpoint
from transduce.training.optim import make_optimizer

STEPS = (2, 4, 6)


@pytest.fixture(scope="module")
def run_template(tmp_path_factory):
    """A run folder as training leaves it: config, vocabularies, tokenizers and three checkpoints."""
    run = tmp_path_factory.mktemp("run")
    train = run / "train.tsv"
    train.write_text("".join(f"{w}\t{w[::-1]}\n" for w in ("a b c", "b c d", "c a", "d d b a")), encoding="utf-8")
    config = Config.from_dict({"data": {"train": str(train)},
                               "model": {"embed_dim": 8, "hidden": 8, "encoder_layers": 1, "decoder_layers": 1}})
    codec = TextCodec.build(config.data, lambda: read_pairs(train))
    codec.save(run)
    config.save(run / CONFIG_FILE)
    torch.manual_seed(0)
    model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab), codec.source_to_target_ids())
    optimizer = make_optimizer(model, config.train)
    for step in STEPS:
        with torch.no_grad():  # weights that differ from one checkpoint to the next
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        save_checkpoint(run, step, model, optimizer, {"epoch": 0}, keep=len(STEPS))
    return run, config, codec


@pytest.fixture
def run_dir(run_template, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_template[0], copy)
    return copy


def _checkpoint(run, step):
    return run / "checkpoints" / f"step-{step:07d}"


def test_averages_the_last_checkpoints_into_a_model_folder(run_dir, run_template, tmp_path):
    _, config, codec = run_template
    out, used = average_run(run_dir, tmp_path / "avg", last=2)
    assert out == tmp_path / "avg"
    assert used == [_checkpoint(run_dir, 4), _checkpoint(run_dir, 6)]
    for name in (CONFIG_FILE, SRC_VOCAB_FILE, TGT_VOCAB_FILE, WEIGHTS_FILE):
        assert (out / name).is_file(), name
    assert Config.load(out / CONFIG_FILE).to_dict() == config.to_dict()
    assert TextCodec.load(config.data, out).src_vocab.tokens == codec.src_vocab.tokens

    a, b = (load_file(str(p / WEIGHTS_FILE)) for p in used)
    mean = load_file(str(out / WEIGHTS_FILE))
    assert set(mean) == set(a)
    for key in a:
        assert torch.equal(mean[key], ((a[key].double() + b[key].double()) / 2).to(a[key].dtype)), key
    model = build_model(config.model, len(codec.src_vocab), len(codec.tgt_vocab))
    load_weights(model, out / WEIGHTS_FILE)  # the folder's weights fit its config


def test_all_kept_checkpoints_by_default(run_dir, tmp_path):
    _, used = average_run(run_dir, tmp_path / "avg")
    assert used == [_checkpoint(run_dir, s) for s in STEPS]
    weights = [load_file(str(p / WEIGHTS_FILE)) for p in used]
    mean = load_file(str(tmp_path / "avg" / WEIGHTS_FILE))
    for key in mean:
        expected = (sum(w[key].double() for w in weights) / len(weights)).float()
        assert torch.equal(mean[key], expected), key


def test_a_run_without_checkpoints(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoints to average"):
        average_run(tmp_path / "run", tmp_path / "avg")
    assert not (tmp_path / "avg").exists()


@pytest.mark.parametrize("last", [4, 10])
def test_more_checkpoints_than_kept(run_dir, tmp_path, last):
    with pytest.raises(CheckpointError, match=f"last {last} checkpoints, only 3 kept"):
        average_run(run_dir, tmp_path / "avg", last=last)
    assert not (tmp_path / "avg").exists()


@pytest.mark.parametrize("last", [0, -1])
def test_last_must_be_positive(run_dir, tmp_path, last):
    with pytest.raises(CheckpointError, match="at least 1"):
        average_run(run_dir, tmp_path / "avg", last=last)
    assert not (tmp_path / "avg").exists()


def test_a_damaged_checkpoint_is_refused(run_dir, tmp_path):
    newest = _checkpoint(run_dir, 6)
    weights = newest / WEIGHTS_FILE
    raw = bytearray(weights.read_bytes())
    raw[-1] ^= 0xFF
    weights.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError) as info:
        average_run(run_dir, tmp_path / "avg", last=2)
    message = str(info.value)
    assert str(newest) in message and "damaged" in message and WEIGHTS_FILE in message
    assert not (tmp_path / "avg").exists()
    # a damaged checkpoint that is not among the chosen ones does not matter
    (_checkpoint(run_dir, 2) / "checksums.json").unlink()
    shutil.rmtree(newest)
    _, used = average_run(run_dir, tmp_path / "avg", last=1)
    assert used == [_checkpoint(run_dir, 4)]


def test_checkpoints_chosen_by_update(run_dir, tmp_path):
    _, used = average_run(run_dir, tmp_path / "avg", steps=[6, 2, 6])
    assert used == [_checkpoint(run_dir, 2), _checkpoint(run_dir, 6)]
    a, b = (load_file(str(p / WEIGHTS_FILE)) for p in used)
    mean = load_file(str(tmp_path / "avg" / WEIGHTS_FILE))
    for key in a:
        assert torch.equal(mean[key], ((a[key].double() + b[key].double()) / 2).float()), key
    _, used = average_run(run_dir, tmp_path / "one", steps=[4])  # one checkpoint: its weights as they are
    only = load_file(str(_checkpoint(run_dir, 4) / WEIGHTS_FILE))
    assert all(torch.equal(load_file(str(tmp_path / "one" / WEIGHTS_FILE))[k], only[k]) for k in only)


def test_a_step_that_was_not_kept(run_dir, tmp_path):
    with pytest.raises(CheckpointError, match=r"no checkpoint of update 5 \(kept: 2, 4, 6\)"):
        average_run(run_dir, tmp_path / "avg", steps=[4, 5])
    with pytest.raises(CheckpointError, match="--last or --steps, not both"):
        average_run(run_dir, tmp_path / "avg", last=1, steps=[4])
    assert not (tmp_path / "avg").exists()
