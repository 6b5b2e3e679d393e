"""One typed configuration tree, read from YAML, overridable with "a.b=v", saved beside the model.

Every option lives in exactly one dataclass field with a default, so a first model needs no
YAML at all, a typo is an error that names the key, and the model folder's `config.json`
is enough to rebuild the model.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from transduce.constants import KERNEL_MODES, TOKENIZER_KINDS


class ConfigError(ValueError):
    """A bad key or value in a configuration, with the dotted key in the message."""


def _check_choice(key: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}")


def _check_positive(key: str, value: float, allow_zero: bool = False) -> None:
    if not value >= 0 or (value == 0 and not allow_zero) or value == float("inf"):  # NaN fails value >= 0
        raise ConfigError(f"{key}: must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")


@dataclass(frozen=True)
class Option:
    """What one field declares beyond its type: help text, limits, choices, and the server's view of it.

    Written once, with `option(...)`, as the field's metadata; `__post_init__` checks the limits, and
    the CLI flags and the server's request schema are made from `options_of(cls)`. `api_le` is the
    server's own cap where a request may ask less than the config allows (a beam of 1000 is a valid
    config but no request to share a server with); `api=False` keeps the option out of requests.
    """

    help: str
    gt: float | None = None  # value > gt
    ge: float | None = None  # value >= ge
    le: float | None = None  # value <= le
    choices: tuple | None = None
    api_le: float | None = None
    api: bool = True
    flag: str | None = None  # the command-line flag, when not --the-field-name
    # filled in by options_of from the field itself
    name: str = ""
    kind: type = object  # int, float, str or bool (besides None, for a field that may be None)
    default: Any = None
    nullable: bool = False

    @property
    def request_le(self) -> float | None:
        """The upper limit of a request's value: the config's, or the server's tighter cap."""
        caps = [cap for cap in (self.le, self.api_le) if cap is not None]
        return min(caps) if caps else None


def option(default: Any, help: str, *, gt: float | None = None, ge: float | None = None, le: float | None = None,
           choices: tuple | None = None, api_le: float | None = None, api: bool = True, flag: str | None = None
           ) -> Any:
    """A dataclass field with its default and its declared `Option`."""
    return field(default=default, metadata={"option": Option(help, gt, ge, le, choices, api_le, api, flag)})


@functools.cache
def options_of(cls: type) -> tuple[Option, ...]:
    """The declared options of a config dataclass whose fields are all `option`s, in field order."""
    hints = _type_hints(cls)
    declared = []
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        kinds = [k for k in typing.get_args(hint) if k is not type(None)] or [hint]
        declared.append(dataclasses.replace(f.metadata["option"], name=f.name, kind=kinds[0], default=f.default,
                                            nullable=type(None) in typing.get_args(hint)))
    return tuple(declared)


def _check_options(section: str, config: Any) -> None:
    """Check each field of `config` against its declared choices or limits."""
    for declared in options_of(type(config)):
        value = getattr(config, declared.name)
        if value is None and declared.nullable:
            continue
        key = f"{section}.{declared.name}"
        if declared.choices is not None:
            _check_choice(key, value, declared.choices)
        elif (declared.gt, declared.ge, declared.le) != (None, None, None):
            _check_range(key, value, declared)


def _check_range(key: str, value: float, declared: Option) -> None:
    gt, ge, le = declared.gt, declared.ge, declared.le
    inside = (gt is None or value > gt) and (ge is None or value >= ge) and (le is None or value <= le)
    if not inside or (isinstance(value, float) and not math.isfinite(value)):  # NaN fails every comparison
        raise ConfigError(f"{key}: must be {_bounds(declared)}, got {value!r}")


def _bounds(declared: Option) -> str:
    """The declared range in words: "> 0", ">= 0", "<= 1", "in (0, 1]", "in [0, 16]"."""
    low = declared.gt if declared.gt is not None else declared.ge
    if declared.le is None:
        return f"{'>' if declared.gt is not None else '>='} {low}"
    if low is None:
        return f"<= {declared.le}"
    return f"in {'(' if declared.gt is not None else '['}{low}, {declared.le}]"


@dataclass
class DataConfig:
    """Where the pairs come from and how they become token ids."""

    train: str | None = None
    dev: str | None = None
    train_target: str | None = None  # second file when train is the source side of two aligned files
    dev_target: str | None = None
    format: str | None = None  # tsv | jsonl; None = from the file extension
    source_field: str = "source"
    target_field: str = "target"
    on_empty: str = "skip"  # skip | error: pairs with an empty side
    tokenizer: str = "char"  # char | word | code | spm (one kind for both sides)
    spm_vocab_size: int = 8000
    spm_model_type: str = "unigram"  # unigram | bpe
    spm_character_coverage: float = 1.0
    joint_tokenizer: bool = True  # one SentencePiece model trained on both sides
    shared_vocab: bool = False  # one vocabulary for source and target
    min_freq: int = 1
    max_vocab: int | None = None  # per side, specials included
    max_source_length: int = 400  # tokens; longer sources are truncated
    max_target_length: int = 200  # tokens; longer targets are truncated in training

    def __post_init__(self) -> None:
        if self.format is not None:
            _check_choice("data.format", self.format, ("tsv", "jsonl"))
        _check_choice("data.on_empty", self.on_empty, ("skip", "error"))
        _check_choice("data.tokenizer", self.tokenizer, TOKENIZER_KINDS)
        _check_choice("data.spm_model_type", self.spm_model_type, ("unigram", "bpe"))
        _check_positive("data.spm_vocab_size", self.spm_vocab_size)
        _check_positive("data.min_freq", self.min_freq)
        _check_positive("data.max_source_length", self.max_source_length)
        _check_positive("data.max_target_length", self.max_target_length)
        if self.max_vocab is not None and self.max_vocab < 5:
            raise ConfigError(f"data.max_vocab: must be at least 5 (4 specials + 1), got {self.max_vocab}")


@dataclass
class ModelConfig:
    """The network: an attention RNN or a Transformer encoder-decoder, and the title-generation extras."""

    arch: str = "lstm"  # lstm | gru | transformer
    embed_dim: int = 256
    hidden: int = 256  # RNN: encoder output size (both directions together) and decoder size; Transformer: d_model
    encoder_layers: int = 2
    decoder_layers: int = 2
    bidirectional: bool = True  # RNN encoder
    attention: str = "general"  # RNN: dot | general (Luong) | bahdanau (additive)
    input_feeding: bool = True  # RNN
    bridge: bool = True  # RNN: learned map from encoder final states to decoder initial states
    dropout: float = 0.1
    heads: int = 4  # Transformer attention heads
    ff_size: int = 1024  # Transformer feed-forward inner size
    norm: str = "pre"  # Transformer: pre (LayerNorm before each block) | post (after the residual, as in Vaswani)
    positions: str = "sinusoidal"  # Transformer: sinusoidal | learned
    max_positions: int = 1024  # Transformer with learned positions: longest sequence
    attention_dropout: float = 0.1  # Transformer: dropout on attention weights
    init: str = "torch"  # Transformer weights: torch (PyTorch's default) | glorot (Glorot-uniform, as fairseq)
    share_embeddings: bool = False  # source embedding = target embedding (needs data.shared_vocab)
    tie_output: bool = True  # target embedding = output projection (needs embed_dim == hidden)
    source_prior: bool = False  # logits averaged with a learned scale-and-shift of the source's 0/1 token vector
    copy: bool = False  # pointer-generator: copy source tokens, even ones outside the target vocabulary
    coverage: bool = False  # LSTM/GRU copy models: coverage vector in the attention and coverage loss
    coverage_weight: float = 1.0  # weight of the coverage loss

    def __post_init__(self) -> None:
        _check_choice("model.arch", self.arch, ("lstm", "gru", "transformer"))
        _check_choice("model.attention", self.attention, ("dot", "general", "bahdanau"))
        _check_choice("model.norm", self.norm, ("pre", "post"))
        _check_choice("model.positions", self.positions, ("sinusoidal", "learned"))
        _check_choice("model.init", self.init, ("glorot", "torch"))
        for key in ("embed_dim", "hidden", "encoder_layers", "decoder_layers", "heads", "ff_size", "max_positions"):
            _check_positive(f"model.{key}", getattr(self, key))
        _check_positive("model.coverage_weight", self.coverage_weight, allow_zero=True)
        if self.arch != "transformer" and self.bidirectional and self.hidden % 2:
            raise ConfigError(f"model.hidden: must be even with a bidirectional encoder, got {self.hidden}")
        for key in ("dropout", "attention_dropout"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"model.{key}: must be in [0, 1), got {getattr(self, key)}")
        if self.tie_output and self.embed_dim != self.hidden:
            raise ConfigError(
                f"model.tie_output needs model.embed_dim == model.hidden (got {self.embed_dim} and {self.hidden})"
            )
        if self.arch == "transformer":
            if self.embed_dim != self.hidden:
                raise ConfigError(f"model.embed_dim must equal model.hidden for a Transformer "
                                  f"(got {self.embed_dim} and {self.hidden})")
            if self.hidden % self.heads:
                raise ConfigError(f"model.hidden ({self.hidden}) must be a multiple of model.heads ({self.heads})")
        if self.coverage and not self.copy:
            raise ConfigError("model.coverage needs model.copy: true")
        if self.coverage and self.arch == "transformer":
            raise ConfigError("model.coverage: coverage is available for lstm and gru models")


@dataclass
class TrainConfig:
    """Optimisation, batching, evaluation and checkpoint periods."""

    steps: int = 3000
    batch_tokens: int = 2048  # padded tokens per batch: sentences x max(source, target) length
    accumulate: int = 1  # batches per optimizer update
    lr: float = 1e-3
    schedule: str = "inverse_sqrt"  # inverse_sqrt (linear warm-up, then 1/sqrt) | constant
    warmup: int = 300
    adam_betas: tuple[float, float] = (0.9, 0.98)
    weight_decay: float = 0.0
    label_smoothing: float = 0.1
    clip_norm: float = 1.0  # 0 disables clipping
    seed: int = 1234
    pool_batches: int = 100  # batches per length-sorted pool (streaming buckets)
    log_every: int = 25
    eval_every: int = 500  # 0 disables dev evaluation during training
    save_every: int = 500
    keep_checkpoints: int = 3  # the newest K step checkpoints are kept (and the best one, in checkpoints/best)
    dev_bleu: bool = True  # decode the dev set (greedy) at each evaluation
    dev_max_sentences: int = 500
    eval_metric: str = "loss"  # what "best" means: loss | bleu | chrf | rougeL (dev figures)
    patience: int = 0  # stop after this many evaluations without a better eval_metric; 0 = never stop early
    final_weights: str = "best"  # what model.safetensors holds at the end: best (by eval_metric) | last
    threads: int | None = None  # torch CPU threads; None = torch's default
    # auto: bf16 on a GPU that supports it, else fp32 | fp32 | bf16 (bfloat16 products, float32 weights
    # and loss) | fp16 (float16 products with a gradient scaler; for GPUs without bfloat16)
    precision: str = "auto"
    progress: bool = True  # tqdm bar
    tensorboard: bool = False  # also write the logged figures as TensorBoard events under RUN/tensorboard
    # a trained model folder to start from (fine-tuning): its tokenizers, vocabularies and weights;
    # data.tokenizer, data.shared_vocab and the model settings other than dropout must match it
    init_from: str | None = None
    # which CPU kernels compute float32 linear maps and their gradients: auto (the fast paths, weight
    # gradients by a fixed rule of CPU features and shape) | onednn | mkl | torch (plain PyTorch throughout)
    kernels: str = "auto"

    def __post_init__(self) -> None:
        self.adam_betas = tuple(self.adam_betas)  # YAML/JSON give lists
        _check_choice("train.schedule", self.schedule, ("inverse_sqrt", "constant"))
        _check_choice("train.precision", self.precision, ("auto", "fp32", "bf16", "fp16"))
        _check_choice("train.kernels", self.kernels, KERNEL_MODES)
        _check_choice("train.eval_metric", self.eval_metric, ("loss", "bleu", "chrf", "rougeL"))
        _check_choice("train.final_weights", self.final_weights, ("best", "last"))
        if self.eval_metric != "loss" and not self.dev_bleu:
            raise ConfigError(f"train.eval_metric: {self.eval_metric} needs the dev set decoded (train.dev_bleu: true)")
        for key in ("steps", "batch_tokens", "accumulate", "lr", "pool_batches", "log_every", "keep_checkpoints"):
            _check_positive(f"train.{key}", getattr(self, key))
        for key in ("warmup", "clip_norm", "eval_every", "save_every", "weight_decay", "dev_max_sentences",
                    "patience"):
            _check_positive(f"train.{key}", getattr(self, key), allow_zero=True)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing: must be in [0, 1), got {self.label_smoothing}")


@dataclass
class DecodeConfig:
    """Search settings used by translate, evaluate, the server and dev evaluation.

    Each option is declared here once (`option`): the flags of `transduce translate` / `evaluate`
    and the fields of the server's request are made from these declarations."""

    beam: int = option(5, "beam size (1 = greedy)", gt=0, api_le=32)
    max_length: int = option(200, "most tokens to generate (end of sentence excluded)", gt=0, api_le=1024)
    max_length_ratio: float | None = option(None, "also cap at ceil(ratio x source length)", gt=0, api_le=100)
    min_length: int = option(0, "tokens to generate before the end is allowed", ge=0, api_le=1024)
    length_penalty: str = option("avg", "score normalisation: avg (log-prob / length), "
                                 "gnmt (log-prob / ((5 + length) / 6) ** alpha), none", choices=("avg", "gnmt", "none"))
    length_alpha: float = option(0.6, "alpha of length_penalty gnmt", ge=0, api_le=10)
    no_repeat_ngram: int = option(0, "n > 0: no output repeats one of its own n-grams (0 = off)", ge=0, api_le=16)
    suppress_unk: bool = option(False, "never output the unknown token")
    # the server makes its own batches (serve.max_batch_size): a request does not size them
    batch_size: int = option(64, "sentences per decode batch", gt=0, api=False)
    sample: bool = option(False, "draw tokens instead of searching")
    temperature: float = option(1.0, "sampling temperature", gt=0, api_le=100)
    top_k: int = option(0, "sample among the k most probable tokens (0 = all)", ge=0, api_le=1_000_000)
    top_p: float = option(1.0, "sample among the most probable tokens holding this mass (1 = all)", gt=0, le=1)
    seed: int = option(0, "sampling seed: the same seed gives the same samples", ge=0, le=2**63 - 1)

    def __post_init__(self) -> None:
        _check_options("decode", self)


@dataclass
class ServeConfig:
    """The HTTP service: where it listens, how it gathers requests into batches, what it accepts.

    Declared with `option` as DecodeConfig is: the flags of `transduce serve` are made from these."""

    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only; anything wider wants an "
                       "API key)")
    port: int = option(8000, "port", gt=0, le=65535)
    batching: bool = option(True, "gather concurrent requests into one decode batch")
    max_batch_size: int = option(32, "texts decoded together", gt=0)
    max_wait_ms: float = option(5.0, "how long a request waits for others to join its batch", ge=0)
    max_texts: int = option(64, "texts per request", gt=0)
    max_input_chars: int = option(2000, "characters per text", gt=0)
    max_body_bytes: int = option(1 << 20, "request body size in bytes (413 beyond)", gt=0)
    timeout_s: float = option(30.0, "seconds per request (504 beyond)", gt=0, flag="--timeout")

    def __post_init__(self) -> None:
        _check_options("serve", self)


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """JSON, written atomically (the model folder must never hold half a config)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def from_dict(cls, tree: dict | None) -> "Config":
        return _build(cls, tree or {}, "")

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        """Read YAML or JSON (JSON is YAML)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
        try:
            tree = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if tree is not None and not isinstance(tree, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections")
        try:
            return cls.from_dict(tree)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def override(self, assignments: Iterable[str] | Mapping[str, Any]) -> "Config":
        """A new config with some values replaced, checked as a loaded file is: the one way to change one.

        `assignments`: "section.key=value" strings (as --set gives them; values parsed as YAML), or
        a {"section.key": value} mapping (values used as they are; None sets None)."""
        tree = self.to_dict()
        pairs = assignments.items() if isinstance(assignments, Mapping) else map(_parse_assignment, assignments)
        for key, value in pairs:
            parts = key.strip().split(".")
            if len(parts) != 2:
                raise ConfigError(f"{key!r}: the key must be section.key, e.g. model.hidden")
            section, name = parts
            if section not in tree:
                raise ConfigError(f"unknown section {section!r} (valid: {', '.join(tree)})")
            if name not in tree[section]:
                raise ConfigError(f"unknown key '{key}' (valid: {', '.join(tree[section])})")
            tree[section][name] = value
        return Config.from_dict(tree)


def _parse_assignment(assignment: str) -> tuple[str, Any]:
    """"section.key=value" -> (key, value parsed as YAML; an unparsable value stays a string)."""
    key, sep, raw = assignment.partition("=")
    if not sep:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value")
    try:
        return key, yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        return key, raw


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """A dataclass's field types, resolved once (resolving them is most of the cost of a rebuild)."""
    return typing.get_type_hints(cls)


def _build(cls: type, tree: dict, prefix: str) -> Any:
    if not isinstance(tree, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {type(tree).__name__}")
    hints = _type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in tree.items():
        if key not in fields:
            raise ConfigError(f"unknown key '{prefix}{key}' (valid: {', '.join(fields)})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(f"{prefix}{key}", value, hint)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix.rstrip('.')}: {exc}") from None


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check a value against a field's type; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(key, v, a) for v, a in zip(value, args))
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 5e-4 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, str):
            return value
    type_name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{key}: expected {type_name}, got {value!r}")
