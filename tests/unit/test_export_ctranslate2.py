"""CTranslate2 export: tiny Transformers trained for 60 steps (pre- and post-norm, sinusoidal and
learned positions, shared, tied and untied embeddings) decode greedily to the very outputs of our
own search once exported, teacher-forced log-probabilities agree, and models CTranslate2 cannot
express are refused with a reason."""
import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("ctranslate2")

from transduce.config import Config, DecodeConfig, options_of  # noqa: E402
from transduce.constants import CONFIG_FILE  # noqa: E402
from transduce.data.codec import TextCodec  # noqa: E402
from transduce.data.readers import Pair  # noqa: E402
from transduce.export import ctranslate2 as ctranslate2_module  # noqa: E402
from transduce.export.ctranslate2 import (  # noqa: E402
    DECODE_FIELDS,
    CTranslate2Translator,
    ExportError,
    export_ctranslate2,
)
from transduce.inference import Translator  # noqa: E402
from transduce.training.trainer import Trainer  # noqa: E402

WORDS = ["cat", "dog", "house", "tree", "red", "blue", "small", "big", "runs", "sleeps", "the", "a"]
MAX_LENGTH = 40

CASES = {
    "pre-sinusoidal-shared": dict(norm="pre", positions="sinusoidal", share_embeddings=True, tie_output=True),
    "post-sinusoidal-tied": dict(norm="post", positions="sinusoidal", share_embeddings=False, tie_output=True),
    "pre-learned-untied": dict(norm="pre", positions="learned", share_embeddings=False, tie_output=False),
}


def _sentences(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))) for _ in range(count)]


def _config(train_path, **model) -> Config:
    return Config.from_dict({
        "data": {"train": str(train_path), "tokenizer": "char", "shared_vocab": model["share_embeddings"]},
        "model": {"arch": "transformer", "embed_dim": 32, "hidden": 32, "heads": 4, "ff_size": 64,
                  "encoder_layers": 2, "decoder_layers": 2, "max_positions": 128, "dropout": 0.0,
                  "attention_dropout": 0.0, **model},
        "train": {"steps": 60, "batch_tokens": 1200, "lr": 1e-2, "warmup": 5, "log_every": 10, "eval_every": 0,
                  "save_every": 0, "threads": 1, "progress": False, "seed": 3},
        "decode": {"beam": 1, "max_length": MAX_LENGTH},
    })


@dataclass
class Exported:
    root: Path  # holds model/ (ours) and ct2/ (exported)
    ours: Translator
    theirs: CTranslate2Translator


@pytest.fixture(scope="module", params=list(CASES))
def exported(request, tmp_path_factory) -> Exported:
    """One model trained on a copying task, loaded by us and, exported, by CTranslate2."""
    root = tmp_path_factory.mktemp(request.param)
    (root / "train.tsv").write_text("".join(f"{s}\t{s}\n" for s in _sentences(0, 400)), encoding="utf-8")
    Trainer(_config(root / "train.tsv", **CASES[request.param]), root / "model", device="cpu",
            log=lambda message: None).fit()
    theirs = CTranslate2Translator(export_ctranslate2(root / "model", root / "ct2"), intra_threads=1)
    return Exported(root, Translator.from_dir(root / "model", device="cpu"), theirs)


TEXTS = _sentences(1, 30)


def test_greedy_outputs_equal_ours(exported):
    expected = exported.ours.translate(TEXTS, beam=1)
    assert len(set(expected)) > 2  # the model says different things for different inputs
    assert exported.theirs.translate(TEXTS, beam=1) == expected


def test_length_caps_from_a_ratio_match_ours(exported):
    """max_length_ratio gives each sentence its own cap (CTranslate2 decodes each cap apart)."""
    options = dict(beam=1, max_length_ratio=0.5)
    assert exported.theirs.translate(TEXTS, **options) == exported.ours.translate(TEXTS, **options)


def test_scores_agree_with_ours(exported):
    """Teacher-forced: CTranslate2's log-probabilities of our outputs (their end token included)
    sum to our raw scores. Searched: the normalised scores are close (CTranslate2 renormalises
    after removing <pad> and <s>; outputs cut at max_length lack the end token's term)."""
    ours, theirs = exported.ours, exported.theirs
    raw = [row[0] for row in ours.translate_nbest(TEXTS, beam=1, length_penalty="none")]
    sources = [theirs.codec.source_tokens(text) for text in TEXTS]
    forced = theirs.translator.score_batch(sources, [t.tokens for t in raw])
    for hyp, result in zip(raw, forced):
        assert sum(result.log_probs) == pytest.approx(hyp.score, abs=1e-3)
    pairs = zip(ours.translate_nbest(TEXTS, beam=1), theirs.translate_nbest(TEXTS, beam=1))
    ended = [(a[0].score, b[0].score) for a, b in pairs if len(a[0].tokens) < MAX_LENGTH]
    assert len(ended) >= 5
    assert all(abs(a - b) < 0.05 for a, b in ended), ended


def test_beam_search_and_int8_export(exported, tmp_path):
    rows = exported.theirs.translate_nbest(TEXTS[:5], beam=5, nbest=2)
    assert all(len(row) == 2 and row[0].score >= row[1].score for row in rows)
    int8 = export_ctranslate2(exported.root / "model", tmp_path / "int8", quantization="int8")
    assert (int8 / "model.bin").stat().st_size < (exported.root / "ct2" / "model.bin").stat().st_size
    assert len(CTranslate2Translator(int8, intra_threads=1).translate(TEXTS[:5], beam=1)) == 5


@pytest.mark.parametrize("model,reason", [
    ({"arch": "transformer", "copy": True}, "model.copy: CTranslate2 cannot express"),
    ({"arch": "transformer", "source_prior": True}, "model.source_prior: CTranslate2 cannot express"),
    ({"arch": "lstm"}, "handles Transformer models; this one is 'lstm'"),
])
def test_refuses_what_ctranslate2_cannot_express(tmp_path, model, reason):
    Config.from_dict({"model": model}).save(tmp_path / CONFIG_FILE)  # refused before any weights are read
    with pytest.raises(ExportError, match=reason):
        export_ctranslate2(tmp_path, tmp_path / "ct2")
    assert not (tmp_path / "ct2").exists()


def test_an_existing_output_folder_needs_force(exported, tmp_path):
    with pytest.raises(ExportError, match="already exists"):
        export_ctranslate2(exported.root / "model", tmp_path)
    with pytest.raises(ExportError, match="quantization must be one of"):
        export_ctranslate2(exported.root / "model", tmp_path / "q", quantization="int3")


# ---- every decoding option reaches CTranslate2 ---------------------------------------------
class _RecordingEngine:
    """Stands in for ctranslate2.Translator: records each translate_batch call, answers "a"."""

    def __init__(self):
        self.calls = []

    def translate_batch(self, batch, **options):
        self.calls.append((batch, options))
        return [SimpleNamespace(hypotheses=[["a"]] * options["num_hypotheses"],
                                scores=[-1.0] * options["num_hypotheses"]) for _ in batch]


def _calls_for(settings: dict, monkeypatch) -> list:
    """What CTranslate2 is asked (translate_batch calls and random seeds) for these decode settings."""
    seeds = []
    monkeypatch.setattr(ctranslate2_module.ctranslate2, "set_random_seed", seeds.append)
    config = Config().override({f"decode.{key}": value for key, value in settings.items()})
    theirs = object.__new__(CTranslate2Translator)  # no exported folder: the engine is the recorder
    theirs.config, theirs.translator = config, _RecordingEngine()
    theirs.codec = TextCodec.build(config.data, lambda: [Pair("ab cd", "a b", 1)])
    theirs.translate_nbest(["ab", "abcd ab"], nbest=2)
    return [*theirs.translator.calls, seeds]


def _another_value(declared, current):
    if declared.kind is bool:
        return not current
    if declared.choices is not None:
        return next(choice for choice in declared.choices if choice != current)
    if current is None:
        return declared.kind(2)
    return current + 1 if declared.kind is int else current / 2


BASES = ({}, {"sample": True}, {"length_penalty": "gnmt"})  # some options matter only with another


def test_every_decode_field_is_accounted_for():
    assert set(DECODE_FIELDS) == {f.name for f in dataclasses.fields(DecodeConfig)}
    assert all(DECODE_FIELDS.values())


@pytest.mark.parametrize("declared", options_of(DecodeConfig), ids=lambda d: d.name)
def test_changing_a_decode_field_changes_what_ctranslate2_is_asked(declared, monkeypatch):
    """A field DECODE_FIELDS says is passed changes the call under some settings: none is dropped."""
    if DECODE_FIELDS[declared.name].startswith("ignored:"):
        pytest.skip(DECODE_FIELDS[declared.name])
    for base in BASES:
        current = {**dataclasses.asdict(DecodeConfig()), **base}[declared.name]
        changed = {**base, declared.name: _another_value(declared, current)}
        if _calls_for(base, monkeypatch) != _calls_for(changed, monkeypatch):
            return
    pytest.fail(f"decode.{declared.name} changes nothing CTranslate2 is asked ({DECODE_FIELDS[declared.name]})")
