"""Models learn: a tiny LSTM on real title data lowers its loss and round-trips through its folder;
a copy task is learned to near-perfect exact match within a small time budget."""
import json
import random
import time

import pytest
import torch

import transduce
from tests.csl import csl_pairs, write_tsv
from transduce.config import Config, ConfigError, DecodeConfig
from transduce.constants import (
    CONFIG_FILE,
    LOG_FILE,
    SRC_VOCAB_FILE,
    TGT_VOCAB_FILE,
    WEIGHTS_FILE,
)
from transduce.data.batching import Example
from transduce.data.readers import read_pairs
from transduce.decoding.search import decode_examples
from transduce.evaluation.report import evaluate
from transduce.inference import Translator
from transduce.training.checkpoint import list_checkpoints
from transduce.training.trainer import Trainer


def _write_csl_subset(path, count=300, max_source=60):
    pairs = csl_pairs(count, max_source)
    write_tsv(path, pairs)
    return [source for source, _ in pairs]


@pytest.fixture(scope="module")
def csl_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("csl")
    sources = _write_csl_subset(root / "train.tsv")
    config = Config.from_dict({
        "data": {"train": str(root / "train.tsv"), "tokenizer": "char", "shared_vocab": True},
        "model": {"arch": "lstm", "embed_dim": 32, "hidden": 32, "encoder_layers": 1, "decoder_layers": 1,
                  "dropout": 0.0, "share_embeddings": True},
        "train": {"steps": 60, "batch_tokens": 800, "lr": 3e-3, "warmup": 10, "log_every": 10,
                  "eval_every": 0, "save_every": 30, "threads": 1, "progress": False, "seed": 7},
        "decode": {"beam": 1, "max_length": 30},
    })
    out = root / "model"
    messages = []
    trainer = Trainer(config, out, device="cpu", log=messages.append)
    trainer.fit()
    return trainer, out, sources, messages


def _losses(out_dir):
    records = [json.loads(line) for line in (out_dir / LOG_FILE).read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if "loss" in r]


def test_loss_goes_down(csl_run):
    trainer, out, _, _ = csl_run
    losses = _losses(out)
    assert [step for step, _ in losses] == [10, 20, 30, 40, 50, 60]
    first, last = losses[0][1], losses[-1][1]
    assert last < first - 0.5, losses
    assert trainer.step == 60


def test_model_folder_is_complete(csl_run):
    _, out, _, messages = csl_run
    for name in (WEIGHTS_FILE, CONFIG_FILE, SRC_VOCAB_FILE, TGT_VOCAB_FILE, LOG_FILE):
        assert (out / name).is_file(), name
    assert [p.name for p in list_checkpoints(out)] == ["step-0000030", "step-0000060"]
    assert any("vocabulary" in m for m in messages)


def test_loaded_model_translates(csl_run):
    _, out, sources, _ = csl_run
    translator = transduce.load(out, device="cpu")
    outputs = translator.translate(sources[:5], beam=1)
    assert len(outputs) == 5 and all(isinstance(o, str) for o in outputs)
    beam = translator.translate(sources[:3], beam=3)
    assert len(beam) == 3 and all(isinstance(o, str) for o in beam)
    nbest = translator.translate_nbest(sources[:2], nbest=2, beam=3)
    assert [len(row) for row in nbest] == [2, 2]
    assert nbest[0][0].score >= nbest[0][1].score


def test_saved_model_decodes_like_the_trained_one(csl_run):
    trainer, out, sources, _ = csl_run
    loaded = transduce.load(out, device="cpu")
    for (name, a), (_, b) in zip(trainer.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(a.cpu(), b), name
    examples = [Example(trainer.codec.encode_source(s), None, i) for i, s in enumerate(sources[:20])]
    cfg = DecodeConfig(beam=1, max_length=30)
    in_memory = decode_examples(trainer.model, examples, cfg)
    from_disk = decode_examples(loaded.model, examples, cfg)
    assert [h[0].tokens for h in in_memory] == [h[0].tokens for h in from_disk]
    assert [h[0].score for h in in_memory] == pytest.approx([h[0].score for h in from_disk], abs=1e-6)
    # the same through the text interface
    fresh = Translator(trainer.config, trainer.codec, trainer.model, torch.device("cpu"))
    assert fresh.translate(sources[:20], beam=1) == loaded.translate(sources[:20], beam=1)


# ---- the copy task ---------------------------------------------------------------------------
ALPHABET = "abcdefgh"


def _strings(rng, count):
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(3, 8))) for _ in range(count)]


def test_learns_to_copy(tmp_path):
    rng = random.Random(0)
    train_strings, test_strings = _strings(rng, 2000), _strings(rng, 200)
    (tmp_path / "train.tsv").write_text("".join(f"{s}\t{s}\n" for s in train_strings), encoding="utf-8")
    (tmp_path / "test.tsv").write_text("".join(f"{s}\t{s}\n" for s in test_strings), encoding="utf-8")
    config = Config.from_dict({
        "data": {"train": str(tmp_path / "train.tsv"), "tokenizer": "char", "shared_vocab": True},
        "model": {"arch": "lstm", "embed_dim": 64, "hidden": 64, "encoder_layers": 1, "decoder_layers": 1,
                  "dropout": 0.0, "share_embeddings": True},
        "train": {"steps": 400, "batch_tokens": 1000, "lr": 3e-3, "warmup": 20, "log_every": 50,
                  "label_smoothing": 0.0, "eval_every": 0, "save_every": 0, "threads": 1,
                  "progress": False, "seed": 1234},
        "decode": {"beam": 1, "max_length": 20},
    })
    started = time.perf_counter()
    trainer = Trainer(config, tmp_path / "model", device="cpu", log=lambda message: None)
    trainer.fit()
    seconds = time.perf_counter() - started
    assert seconds <= 60, f"training took {seconds:.1f} s"

    translator = transduce.load(tmp_path / "model", device="cpu")
    report, outputs = evaluate(translator, read_pairs(tmp_path / "test.tsv"), beam=1)
    assert report["sentences"] == 200
    assert report["exact_match"] >= 90, (report, outputs[:10])
    assert report["chrf"] >= 90  # (BLEU is 0 here: each output is a single "word", no 4-grams)
    assert report["perplexity"] < 1.5
    # held-out strings, never seen in training, are copied too
    unseen = [s for s in test_strings if s not in set(train_strings)]
    assert len(unseen) > 100
    copied = translator.translate(unseen, beam=1)
    assert sum(c == s for c, s in zip(copied, unseen)) / len(unseen) >= 0.9


def test_bf16_mixed_precision_trains_and_bf16_weights_decode(tmp_path):
    """train.precision=bf16 learns like float32 (same data, seed, budget); a bf16 Translator decodes."""
    _write_csl_subset(tmp_path / "train.tsv", count=200)
    finals = {}
    for precision in ("fp32", "bf16"):
        config = Config.from_dict({
            "data": {"train": str(tmp_path / "train.tsv"), "tokenizer": "char", "shared_vocab": True},
            "model": {"arch": "lstm", "embed_dim": 32, "hidden": 32, "encoder_layers": 1, "decoder_layers": 1,
                      "dropout": 0.0, "share_embeddings": True},
            "train": {"steps": 40, "batch_tokens": 800, "lr": 3e-3, "warmup": 10, "log_every": 10,
                      "eval_every": 0, "save_every": 40, "threads": 1, "progress": False, "seed": 7,
                      "precision": precision},
            "decode": {"beam": 1, "max_length": 20},
        })
        Trainer(config, tmp_path / precision, device="cpu", log=lambda m: None).fit()
        losses = _losses(tmp_path / precision)
        assert losses[-1][1] < losses[0][1] - 0.3, (precision, losses)
        finals[precision] = losses[-1][1]
    assert abs(finals["bf16"] - finals["fp32"]) < 0.1, finals
    translator = transduce.load(tmp_path / "bf16", device="cpu", precision="bf16")
    assert next(translator.model.parameters()).dtype == torch.bfloat16
    outputs = translator.translate(["一种基于深度学习的方法", "网络"], beam=2)
    assert len(outputs) == 2 and all(isinstance(o, str) for o in outputs)


def test_fp16_trains_a_transformer_with_a_gradient_scaler_and_is_refused_for_cpu_lstms(tmp_path):
    """fp16 (for GPUs without bfloat16) runs the loss through a gradient scaler whose state is
    checkpointed; on a CPU it works for Transformers, and LSTMs say why they cannot."""
    _write_csl_subset(tmp_path / "train.tsv", count=200)
    tree = {
        "data": {"train": str(tmp_path / "train.tsv"), "tokenizer": "char", "shared_vocab": True},
        "model": {"arch": "transformer", "embed_dim": 32, "hidden": 32, "heads": 4, "ff_size": 64,
                  "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.0, "share_embeddings": True},
        "train": {"steps": 30, "batch_tokens": 800, "lr": 3e-3, "warmup": 5, "log_every": 5, "eval_every": 0,
                  "save_every": 30, "threads": 1, "progress": False, "precision": "fp16"},
    }
    trainer = Trainer(Config.from_dict(tree), tmp_path / "fp16", device="cpu", log=lambda m: None)
    assert trainer.precision == "fp16" and trainer.scaler.is_enabled()
    trainer.fit()
    losses = _losses(tmp_path / "fp16")
    assert losses[-1][1] < losses[0][1] - 0.3, losses
    state = json.loads((list_checkpoints(tmp_path / "fp16")[-1] / "trainer_state.json").read_text())
    assert state["precision"] == "fp16" and state["scaler"]["scale"] > 0

    tree["model"] = {"arch": "lstm", "embed_dim": 32, "hidden": 32}
    with pytest.raises(ConfigError, match="fp16 is for GPUs"):
        Trainer(Config.from_dict(tree), tmp_path / "lstm", device="cpu", log=lambda m: None)
    tree["train"]["precision"] = "auto"
    assert Trainer(Config.from_dict(tree), tmp_path / "auto", device="cpu", log=lambda m: None).precision == "fp32"


@pytest.mark.parametrize("model", [
    {"arch": "transformer", "embed_dim": 32, "hidden": 32, "heads": 4, "ff_size": 64, "encoder_layers": 2,
     "decoder_layers": 2, "dropout": 0.1, "share_embeddings": True, "source_prior": True},
    {"arch": "gru", "embed_dim": 32, "hidden": 32, "encoder_layers": 1, "decoder_layers": 1, "dropout": 0.1,
     "share_embeddings": True, "source_prior": True, "attention": "bahdanau"},
], ids=["transformer-prior", "gru-prior"])
def test_other_architectures_learn_and_reload(tmp_path, model):
    """Transformer and prior models train through the same loop (loss down), save, and the
    loaded folder decodes exactly like the model in memory."""
    sources = _write_csl_subset(tmp_path / "train.tsv", count=200)
    config = Config.from_dict({
        "data": {"train": str(tmp_path / "train.tsv"), "tokenizer": "char", "shared_vocab": True},
        "model": model,
        "train": {"steps": 40, "batch_tokens": 800, "lr": 3e-3, "warmup": 10, "log_every": 10,
                  "eval_every": 0, "save_every": 40, "threads": 1, "progress": False, "seed": 7},
        "decode": {"beam": 1, "max_length": 20},
    })
    trainer = Trainer(config, tmp_path / "model", device="cpu", log=lambda m: None)
    trainer.fit()
    losses = _losses(tmp_path / "model")
    assert losses[-1][1] < losses[0][1] - 0.3, losses
    loaded = transduce.load(tmp_path / "model", device="cpu")
    fresh = Translator(trainer.config, trainer.codec, trainer.model, torch.device("cpu"))
    for beam in (1, 3):
        assert fresh.translate(sources[:10], beam=beam) == loaded.translate(sources[:10], beam=beam)
