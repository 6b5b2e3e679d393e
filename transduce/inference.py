"""Translator: a model folder loaded once, text in, text out. Used by the CLI, evaluation and the API.

Loading (`model_folder`) reads `config.json`, the vocabularies, the tokenizers and
`model.safetensors`: JSON and tensors only, so opening a model never executes code from it. A
folder written by `transduce quantize` loads the same way and decodes with int8 modules on the CPU.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from transduce.config import Config, DecodeConfig
from transduce.data.codec import TextCodec
from transduce.decoding.results import Hypothesis
from transduce.decoding.search import decode_examples
from transduce.model_folder import ModelLoadError, load_model_folder
from transduce.models.ensemble import Ensemble


@dataclass
class Translation:
    """One output text with its score; `tokens` are the target tokens (for display).

    `attention`, when asked for: one row per target token and one for the end of the output,
    each with one weight per source token of `source_tokens` (an empty source reads as one
    end-of-sentence token, so its rows hold one weight); None when the model has none.
    """

    text: str
    score: float
    tokens: list[str]
    source_tokens: list[str] = field(default_factory=list)
    attention: list[list[float]] | None = None


class TranslatorBase:
    """What every translator shares (ours and `export.ctranslate2`'s): the model's saved decoding
    settings, replaced per call, and the best output of each text. A subclass sets `config` and
    defines `translate_nbest(texts, *, nbest, **options)`."""

    config: Config

    def decode_options(self, **overrides) -> DecodeConfig:
        """The model's saved decoding settings with the given ones replaced (None = keep), checked."""
        return self.config.override({f"decode.{k}": v for k, v in overrides.items() if v is not None}).decode

    def translate(self, texts: Sequence[str], *, beam: int | None = None, **options) -> list[str]:
        """The best translation of each text."""
        return [row[0].text if row else "" for row in self.translate_nbest(texts, beam=beam, **options)]


class Translator(TranslatorBase):
    """Load once, translate many times; safe to call from several threads (one decode at a time)."""

    def __init__(self, config: Config, codec: TextCodec, model: torch.nn.Module, device: torch.device):
        self.config, self.codec, self.model, self.device = config, codec, model.eval(), device
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, directory: str | Path, device: str = "auto", precision: str = "fp32") -> "Translator":
        """Load a model folder. precision="bf16" keeps a bfloat16 copy of the weights for decoding
        (faster products on CPUs and GPUs with bfloat16 support; scores stay float32)."""
        loaded = load_model_folder(directory, device, precision)
        return cls(loaded.config, loaded.codec, loaded.model, loaded.device)

    @classmethod
    def from_dirs(cls, directories: Sequence[str | Path], device: str = "auto", precision: str = "fp32"
                  ) -> "Translator":
        """Several model folders decoding as one ensemble (their next-token probabilities averaged).

        The folders must share their tokenizers and vocabularies, and copy or not alike; the first
        folder's settings (decoding defaults, source length) serve for all."""
        directories = list(directories)
        if not directories:
            raise ModelLoadError("an ensemble needs at least one model folder")
        members = [cls.from_dir(d, device, precision) for d in directories]
        first = members[0]
        if len(members) == 1:
            return first
        for directory, other in zip(directories[1:], members[1:]):
            problem = _ensemble_mismatch(first, other)
            if problem:
                raise ModelLoadError(f"{directory}: cannot join an ensemble with {directories[0]} ({problem})")
        return cls(first.config, first.codec, Ensemble([m.model for m in members]), first.device)

    def translate_nbest(
        self, texts: Sequence[str], *, nbest: int = 1, attention: bool = False, **options
    ) -> list[list[Translation]]:
        """n-best translations of each text, best first, with attention weights when asked.

        Options: the fields of DecodeConfig (beam, max_length, length_penalty, no_repeat_ngram,
        suppress_unk, sample, ...)."""
        cfg = self.decode_options(**options)
        copy = self.config.model.copy
        examples = [self.codec.example(text, None, i, copy=copy) for i, text in enumerate(texts)]
        with self._lock:
            hyps = decode_examples(self.model, examples, cfg, nbest=nbest, device=self.device, attention=attention)
        sources = [self.codec.source_tokens(text) for text in texts]
        return [[self._to_translation(h, source, ex.oov) for h in row] for source, ex, row in zip(sources, examples, hyps)]

    def _to_translation(self, hyp: Hypothesis, source_tokens: list[str], oov: list[str] | None) -> Translation:
        """`oov`: the words a copy model may have copied from this source (ids from len(vocabulary) on)."""
        return Translation(self.codec.decode_target(hyp.tokens, oov), hyp.score,
                           self.codec.target_tokens(hyp.tokens, oov), source_tokens, hyp.attention)


def _ensemble_mismatch(first: Translator, other: Translator) -> str | None:
    """Why two loaded models cannot decode together, or None."""
    a, b = first.codec, other.codec
    if a.cfg.tokenizer != b.cfg.tokenizer:
        return f"tokenizer {b.cfg.tokenizer} against {a.cfg.tokenizer}"
    for side, x, y in (("source", a.src_tok, b.src_tok), ("target", a.tgt_tok, b.tgt_tok)):
        if getattr(x, "model_proto", None) != getattr(y, "model_proto", None):
            return f"another {side} SentencePiece model"
    if a.src_vocab != b.src_vocab or a.tgt_vocab != b.tgt_vocab:
        return "other vocabularies"
    if first.config.model.copy != other.config.model.copy:
        return "one copies from the source, the other does not"
    return None


def load(directory: str | Path | Sequence[str | Path], device: str = "auto", precision: str = "fp32"
         ) -> Translator:
    """`transduce.load("runs/x")`: the model folder written by training, ready to translate;
    `transduce.load(["runs/a", "runs/b"])`: several, decoding as one ensemble."""
    if isinstance(directory, (str, Path)):
        return Translator.from_dir(directory, device, precision)
    return Translator.from_dirs(directory, device, precision)
