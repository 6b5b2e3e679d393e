"""The typed config tree: defaults, YAML in, "a.b=v" overrides, errors that name the key, JSON round trip."""
import dataclasses
import json

import pytest

from transduce.config import (
    Config,
    ConfigError,
    DataConfig,
    DecodeConfig,
    ModelConfig,
    TrainConfig,
    options_of,
)


def test_defaults_build_without_any_file():
    cfg = Config()
    assert isinstance(cfg.data, DataConfig)
    assert isinstance(cfg.model, ModelConfig)
    assert isinstance(cfg.train, TrainConfig)
    assert isinstance(cfg.decode, DecodeConfig)
    assert cfg.model.arch == "lstm"
    assert cfg.train.adam_betas == (0.9, 0.98)
    assert Config.from_dict(None) == cfg
    assert Config.from_dict({}) == cfg


def test_yaml_load(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "data:\n  tokenizer: word\n  max_vocab: 1000\n"
        "model:\n  arch: gru\n  hidden: 64\n  embed_dim: 64\n  attention: bahdanau\n"
        "train:\n  lr: 3.0e-4\n  steps: 10\n  adam_betas: [0.8, 0.99]\n"
        "decode:\n  beam: 3\n",
        encoding="utf-8",
    )
    cfg = Config.load(path)
    assert cfg.data.tokenizer == "word"
    assert cfg.data.max_vocab == 1000
    assert cfg.model.arch == "gru" and cfg.model.hidden == 64 and cfg.model.attention == "bahdanau"
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.train.steps == 10
    assert cfg.train.adam_betas == (0.8, 0.99)
    assert cfg.decode.beam == 3
    # untouched fields keep their defaults
    assert cfg.model.encoder_layers == ModelConfig().encoder_layers


def test_empty_yaml_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert Config.load(path) == Config()


def test_int_accepted_where_float_expected():
    cfg = Config.from_dict({"train": {"lr": 1}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


def test_unknown_key_names_the_dotted_key(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("model:\n  hiden: 64\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"model\.hiden"):
        Config.load(path)
    with pytest.raises(ConfigError, match=r"model\.hiden"):
        Config.from_dict({"model": {"hiden": 64}})


def test_unknown_key_error_names_the_file(tmp_path):
    path = tmp_path / "typo.yaml"
    path.write_text("model:\n  hiden: 64\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        Config.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "tree, key",
    [
        ({"model": {"hidden": "big"}}, "model.hidden"),
        ({"model": {"bidirectional": "yes"}}, "model.bidirectional"),
        ({"train": {"lr": "fast"}}, "train.lr"),
        ({"train": {"steps": 1.5}}, "train.steps"),
        ({"train": {"adam_betas": [0.9]}}, "train.adam_betas"),
        ({"data": {"max_vocab": "many"}}, "data.max_vocab"),
        ({"model": {"hidden": True}}, "model.hidden"),
    ],
)
def test_wrong_type_names_the_key(tree, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config.from_dict(tree)


def test_unknown_section():
    with pytest.raises(ConfigError, match="modle"):
        Config.from_dict({"modle": {"hidden": 64}})
    with pytest.raises(ConfigError, match="modle"):
        Config().override(["modle.hidden=64"])


def test_override_scientific_notation():
    # PyYAML (YAML 1.1) reads 5e-4, without a dot, as a string; a float field must accept it
    cfg = Config().override(["model.hidden=64", "model.embed_dim=64", "train.lr=5e-4", "data.max_vocab=null"])
    assert cfg.model.hidden == 64
    assert cfg.train.lr == pytest.approx(5e-4)
    assert cfg.data.max_vocab is None


def test_yaml_scientific_notation(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  lr: 5e-4\n", encoding="utf-8")
    assert Config.load(path).train.lr == pytest.approx(5e-4)


def test_override_assignments():
    base = Config()
    # (embed_dim follows hidden: the default tied output projection needs them equal)
    cfg = base.override(["model.hidden=64", "model.embed_dim=64", "train.lr=0.0005", "data.max_vocab=null"])
    assert cfg.model.hidden == 64 and isinstance(cfg.model.hidden, int)
    assert cfg.train.lr == pytest.approx(5e-4) and isinstance(cfg.train.lr, float)
    assert cfg.data.max_vocab is None
    # a new config: the original is untouched
    assert base.model.hidden == ModelConfig().hidden
    # a later assignment overrides an earlier one; strings and booleans parse as YAML
    cfg = base.override(["model.hidden=64", "model.hidden=128", "model.embed_dim=128",
                         "model.arch=gru", "model.bidirectional=false", "data.max_vocab=100"])
    assert cfg.model.hidden == 128 and cfg.model.arch == "gru" and cfg.model.bidirectional is False
    assert cfg.data.max_vocab == 100


@pytest.mark.parametrize(
    "assignment, fragment",
    [
        ("model.hiden=64", r"model\.hiden"),
        ("model.hidden", "section.key=value"),
        ("hidden=64", "section.key"),
        ("model.hidden=big", r"model\.hidden"),
        ("model.attention=foo", r"model\.attention"),
    ],
)
def test_override_errors(assignment, fragment):
    with pytest.raises(ConfigError, match=fragment):
        Config().override([assignment])


def test_choice_validation():
    with pytest.raises(ConfigError, match=r"model\.attention.*foo"):
        Config.from_dict({"model": {"attention": "foo"}})
    with pytest.raises(ConfigError, match=r"model\.arch"):
        ModelConfig(arch="mamba")
    with pytest.raises(ConfigError, match=r"data\.tokenizer"):
        DataConfig(tokenizer="bytes")
    with pytest.raises(ConfigError, match=r"train\.schedule"):
        TrainConfig(schedule="cosine")


@pytest.mark.parametrize(
    "tree, key",
    [
        ({"model": {"hidden": 0}}, "model.hidden"),
        ({"model": {"dropout": 1.0}}, "model.dropout"),
        ({"model": {"hidden": 33, "embed_dim": 33}}, "model.hidden"),  # odd with a bidirectional encoder
        ({"model": {"hidden": 64}}, "model.tie_output"),  # tied output needs embed_dim == hidden
        ({"train": {"label_smoothing": 1.0}}, "train.label_smoothing"),
        ({"train": {"warmup": -1}}, "train.warmup"),
        ({"data": {"max_vocab": 4}}, "data.max_vocab"),
    ],
)
def test_value_validation_names_the_key(tree, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        Config.from_dict(tree)


def test_save_load_round_trip(tmp_path):
    cfg = Config().override([
        "model.hidden=64", "model.embed_dim=64", "model.arch=gru", "train.lr=5.0e-4",
        "train.adam_betas=[0.85, 0.995]", "data.max_vocab=null", "data.train=some/file.tsv",
        "decode.max_length_ratio=1.5",
    ])
    path = tmp_path / "config.json"
    cfg.save(path)
    tree = json.loads(path.read_text(encoding="utf-8"))  # JSON on disk
    assert tree == json.loads(json.dumps(cfg.to_dict()))
    assert set(tree) == {"data", "model", "train", "decode", "serve"}
    assert not (tmp_path / "config.json.tmp").exists()
    loaded = Config.load(path)
    assert loaded == cfg
    assert loaded.to_dict() == cfg.to_dict()


def test_adam_betas_stay_a_tuple_through_json(tmp_path):
    cfg = Config().override(["train.adam_betas=[0.8, 0.9]"])
    assert cfg.train.adam_betas == (0.8, 0.9) and isinstance(cfg.train.adam_betas, tuple)
    path = tmp_path / "config.json"
    cfg.save(path)
    assert json.loads(path.read_text())["train"]["adam_betas"] == [0.8, 0.9]
    loaded = Config.load(path)
    assert isinstance(loaded.train.adam_betas, tuple)
    assert loaded.train.adam_betas == (0.8, 0.9)
    # also when built directly from a list
    assert TrainConfig(adam_betas=[0.7, 0.8]).adam_betas == (0.7, 0.8)


def test_load_errors_name_the_file(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        Config.load(missing)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="bad.yaml"):
        Config.load(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="scalar.yaml"):
        Config.load(scalar)


@pytest.mark.parametrize("assignment", ["train.lr=nan", "train.lr=.nan", "train.clip_norm=nan",
                                        "decode.max_length_ratio=nan"])
def test_nan_is_rejected(assignment):
    with pytest.raises(ConfigError, match=assignment.split("=")[0].replace(".", r"\.")):
        Config().override([assignment])


@pytest.mark.parametrize("assignment", ["decode.length_penalty=wu", "decode.length_alpha=-0.5",
                                        "decode.length_alpha=nan", "decode.no_repeat_ngram=-1",
                                        "decode.suppress_unk=maybe"])
def test_decode_rule_validation_names_the_key(assignment):
    with pytest.raises(ConfigError, match=assignment.split("=")[0].replace(".", r"\.")):
        Config().override([assignment])


def test_decode_rules_from_overrides():
    cfg = Config().override(["decode.length_penalty=gnmt", "decode.length_alpha=1", "decode.no_repeat_ngram=3",
                             "decode.suppress_unk=true"]).decode
    assert (cfg.length_penalty, cfg.length_alpha, cfg.no_repeat_ngram, cfg.suppress_unk) == ("gnmt", 1.0, 3, True)
    assert DecodeConfig().length_penalty == "avg" and DecodeConfig().no_repeat_ngram == 0


def test_model_extras_validation():
    with pytest.raises(ConfigError, match=r"model\.norm"):
        ModelConfig(arch="transformer", norm="sandwich")
    with pytest.raises(ConfigError, match=r"model\.positions"):
        ModelConfig(arch="transformer", positions="rotary")
    with pytest.raises(ConfigError, match=r"model\.coverage needs model\.copy"):
        ModelConfig(coverage=True)
    with pytest.raises(ConfigError, match=r"model\.attention_dropout"):
        ModelConfig(attention_dropout=1.0)


def _outside(declared):
    """Values just beyond each declared limit of an option."""
    values = []
    if declared.gt is not None:
        values.append(declared.gt)
    if declared.ge is not None:
        values.append(declared.ge - 1)
    if declared.le is not None:
        values.append(declared.le + 1)
    return values


@pytest.mark.parametrize("declared", options_of(DecodeConfig), ids=lambda d: d.name)
def test_decode_validation_follows_the_declared_limits(declared):
    for value in _outside(declared):
        with pytest.raises(ConfigError, match=rf"decode\.{declared.name}: must be"):
            DecodeConfig(**{declared.name: value})
    for value in [declared.gt, declared.ge, declared.le]:  # on the limit: allowed, except past gt
        if value is not None and value != declared.gt:
            assert getattr(DecodeConfig(**{declared.name: value}), declared.name) == value
    if declared.choices is not None:
        for choice in declared.choices:
            DecodeConfig(**{declared.name: choice})
        with pytest.raises(ConfigError, match=rf"decode\.{declared.name}: 'nope' is not one of"):
            DecodeConfig(**{declared.name: "nope"})
    if declared.kind is float:
        for value in (float("nan"), float("inf")):
            with pytest.raises(ConfigError, match=rf"decode\.{declared.name}"):
                DecodeConfig(**{declared.name: value})
    assert DecodeConfig(**{declared.name: declared.default}) == DecodeConfig()


def test_every_decode_option_is_declared_with_help_and_a_checked_type():
    declared = options_of(DecodeConfig)
    assert [d.name for d in declared] == [f.name for f in dataclasses.fields(DecodeConfig)]
    for d in declared:
        assert d.help and d.kind in (int, float, str, bool), d
        assert d.default == getattr(DecodeConfig(), d.name)
        assert d.nullable == (d.name == "max_length_ratio")
        if d.api_le is not None:  # a server cap only ever tightens the config's range
            assert d.le is None or d.api_le < d.le
            assert d.request_le == d.api_le
    assert "batch_size" in {d.name for d in declared if not d.api}  # the server sizes its own batches
    assert options_of(DecodeConfig) is declared  # computed once


def test_range_messages_say_the_declared_bounds():
    with pytest.raises(ConfigError, match=r"decode\.top_p: must be in \(0, 1\], got 1\.5"):
        DecodeConfig(top_p=1.5)
    with pytest.raises(ConfigError, match=r"decode\.beam: must be > 0, got 0"):
        DecodeConfig(beam=0)
    with pytest.raises(ConfigError, match=r"decode\.min_length: must be >= 0, got -1"):
        DecodeConfig(min_length=-1)
    with pytest.raises(ConfigError, match=r"decode\.seed: must be in \[0, 9223372036854775807\]"):
        DecodeConfig(seed=-1)


def test_override_takes_a_mapping_of_values_as_they_are():
    base = Config()
    cfg = base.override({"decode.beam": 1, "model.arch": "gru", "decode.max_length_ratio": 1.5})
    assert (cfg.decode.beam, cfg.model.arch, cfg.decode.max_length_ratio) == (1, "gru", 1.5)
    assert base.decode.beam == DecodeConfig().beam and base.model.arch == "lstm"  # the original is untouched
    assert cfg.override({"decode.max_length_ratio": None}).decode.max_length_ratio is None  # None sets None
    assert base.override({}) == base
    # the same checks as a file: types (no YAML parsing of strings), limits, keys
    with pytest.raises(ConfigError, match=r"decode\.beam: expected int"):
        base.override({"decode.beam": "3"})
    with pytest.raises(ConfigError, match=r"decode\.beam: must be > 0"):
        base.override({"decode.beam": 0})
    with pytest.raises(ConfigError, match=r"unknown key 'decode\.beem'"):
        base.override({"decode.beem": 3})
    with pytest.raises(ConfigError, match="section.key"):
        base.override({"beam": 3})
    # strings and a mapping give the same config
    assert base.override(["decode.beam=1", "model.arch=gru"]) == base.override({"decode.beam": 1, "model.arch": "gru"})
