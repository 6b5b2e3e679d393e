"""Fine-tuning (`train.init_from`): a new run starts from a trained model folder's vocabularies and
weights, learns its new data from there, resumes from its own checkpoints, and refuses a model
it cannot start from with one line naming the setting."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.csl import csl_pairs, write_tsv
from transduce.config import Config, ConfigError
from transduce.constants import LOG_FILE, SRC_VOCAB_FILE, TGT_VOCAB_FILE, WEIGHTS_FILE
from transduce.training.trainer import Trainer


def _config(train, **train_settings):
    return Config.from_dict({
        "data": {"train": str(train), "tokenizer": "char", "shared_vocab": True},
        "model": {"arch": "lstm", "embed_dim": 32, "hidden": 32, "encoder_layers": 1, "decoder_layers": 1,
                  "dropout": 0.0, "share_embeddings": True},
        "train": {"steps": 60, "batch_tokens": 800, "lr": 3e-3, "warmup": 10, "log_every": 10,
                  "eval_every": 0, "save_every": 30, "threads": 1, "progress": False, "seed": 7,
                  **train_settings},
    })


@pytest.fixture(scope="module")
def start_model(tmp_path_factory):
    """A small title model trained on the first 300 pairs; fine-tuning data are the next 200."""
    root = tmp_path_factory.mktemp("init_from")
    pairs = csl_pairs(500)
    write_tsv(root / "pretrain.tsv", pairs[:300])
    write_tsv(root / "finetune.tsv", pairs[300:])
    Trainer(_config(root / "pretrain.tsv", steps=120), root / "start", device="cpu", log=lambda _: None).fit()
    return root


def _first_loss(run):
    return next(json.loads(line)["loss"] for line in (run / LOG_FILE).read_text().splitlines())


def test_a_fine_tuning_run_starts_from_the_weights_and_vocabularies(start_model):
    trainer = Trainer(_config(start_model / "finetune.tsv", init_from=str(start_model / "start")),
                      start_model / "tuned-0", device="cpu", log=lambda _: None)
    start = load_file(str(start_model / "start" / WEIGHTS_FILE))
    mine = trainer.model.state_dict()
    assert set(start) <= set(mine)
    assert all(torch.equal(mine[name], tensor) for name, tensor in start.items())
    for name in (SRC_VOCAB_FILE, TGT_VOCAB_FILE):  # the start model's, not built from the new data
        assert (start_model / "tuned-0" / name).read_text() == (start_model / "start" / name).read_text()


def test_fine_tuning_begins_where_pre_training_left_off(start_model):
    """The first logged loss on new pairs of the same kind is well below a fresh model's, and falls further."""
    tuned, fresh = start_model / "tuned", start_model / "fresh"
    Trainer(_config(start_model / "finetune.tsv", steps=40, init_from=str(start_model / "start")), tuned,
            device="cpu", log=lambda _: None).fit()
    Trainer(_config(start_model / "finetune.tsv", steps=40), fresh, device="cpu", log=lambda _: None).fit()
    losses = [json.loads(line)["loss"] for line in (tuned / LOG_FILE).read_text().splitlines()
              if "loss" in json.loads(line)]
    assert _first_loss(tuned) < _first_loss(fresh) - 0.5
    assert losses[-1] < losses[0]


def test_a_fine_tuning_run_resumes_from_its_own_checkpoint(start_model):
    out = start_model / "tuned-resume"
    config = _config(start_model / "finetune.tsv", steps=30, init_from=str(start_model / "start"))
    Trainer(config, out, device="cpu", log=lambda _: None).fit()
    messages = []
    longer = config.override(["train.steps=40"])
    trainer = Trainer(longer, out, device="cpu", log=messages.append)
    assert trainer.step == 30
    assert not any("starting from the weights" in m for m in messages)
    last = load_file(str(out / WEIGHTS_FILE))
    assert all(torch.equal(trainer.model.state_dict()[name], tensor) for name, tensor in last.items())


def test_dropout_may_change(start_model):
    config = _config(start_model / "finetune.tsv", init_from=str(start_model / "start"))
    config = config.override(["model.dropout=0.3"])
    Trainer(config, start_model / "tuned-dropout", device="cpu", log=lambda _: None)


@pytest.mark.parametrize("setting, named", [
    ("model.encoder_layers=2", "model.encoder_layers=1"),
    ("model.copy=true", "model.copy=False"),
    ("data.tokenizer=word", "data.tokenizer='char'"),
])
def test_a_model_of_another_shape_or_tokenizer_is_refused(start_model, setting, named):
    config = _config(start_model / "finetune.tsv", init_from=str(start_model / "start"))
    config = config.override([setting])
    with pytest.raises(ConfigError, match=r"train.init_from: .*start was trained with " + named.replace("(", r"\(")):
        Trainer(config, start_model / "refused", device="cpu", log=lambda _: None)
    assert not (start_model / "refused" / WEIGHTS_FILE).exists()


def test_a_folder_without_a_model_is_refused(start_model, tmp_path):
    config = _config(start_model / "finetune.tsv", init_from=str(tmp_path))
    with pytest.raises(ConfigError, match=r"train.init_from: .* is not a model folder"):
        Trainer(config, tmp_path / "out", device="cpu", log=lambda _: None)


def test_a_folder_written_before_a_setting_existed_reads_it_as_its_default(start_model, tmp_path):
    older = tmp_path / "older"
    shutil.copytree(start_model / "start", older, ignore=shutil.ignore_patterns("checkpoints"))
    saved = json.loads((older / "config.json").read_text())
    del saved["model"]["max_positions"]  # a key this version has and the folder's does not
    (older / "config.json").write_text(json.dumps(saved))
    trainer = Trainer(_config(start_model / "finetune.tsv", init_from=str(older)), tmp_path / "out",
                      device="cpu", log=lambda _: None)
    assert trainer.step == 0
