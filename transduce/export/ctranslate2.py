"""Export a Transformer model folder to CTranslate2, and translate text with the exported folder.

CTranslate2 (C++, int8 or float) runs the same network as `models/transformer.py` once our
weights sit on its Transformer spec. What the mapping has to respect (each point checked
numerically against CTranslate2 4.x by tests/unit/test_export_ctranslate2.py):

- embeddings are multiplied by sqrt(d_model) in both (CTranslate2's `scale_embeddings`);
- positions count from 0 in ours. CTranslate2's own sinusoids have our layout ([sin | cos]
  halves, frequencies 10000^(-i / (d/2 - 1))) but count from 1, which changes every output:
  so our table is stored as its `position_encodings` (row p for position p), for learned
  positions and sinusoidal ones alike. The sinusoidal table covers the longest source
  (data.max_source_length), the longest output (decode.max_length) and model.max_positions;
- self-attention: our fused (3H, H) product holds q, k, v in that order, CTranslate2's
  `linear[0]`; cross-attention: `query` is `linear[0]`, `key_value` (k then v) `linear[1]`;
  the output projection is `linear[-1]`;
- LayerNorm epsilon: torch's (1e-5), written to the config (CTranslate2's converters differ);
- pre-norm: our final encoder / decoder norms are the spec's `layer_norm`; post-norm has none
  (each block's norm follows its residual sum in both);
- ReLU feed-forward; the output projection keeps its bias, also when tied to the embedding;
- vocabularies: our token lists as they are: ids 0-3 are <pad> <unk> <s> </s>, the names
  CTranslate2 expects for unknown, start and end; decoding starts from <s>; sources get
  neither <s> nor </s> (as ours). CTranslate2 does not decode an empty source (nor one that
  starts with <s> or </s>), where ours decodes "</s>": the one output that differs.

The source prior and the pointer-generator's copy mixture have no CTranslate2 counterpart:
such models are refused.

Exported folder: CTranslate2's files (model.bin, config.json, vocabularies) plus a `transduce/`
folder with our config, vocabularies and tokenizers, which `CTranslate2Translator` reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from transduce.config import Config, DecodeConfig, ModelConfig
from transduce.constants import BOS_TOKEN, CONFIG_FILE, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN
from transduce.data.codec import TextCodec
from transduce.decoding.scoring import max_lengths, normalise
from transduce.inference import ModelLoadError, Translation, Translator, TranslatorBase
from transduce.models.transformer import sinusoidal_positions

try:
    import ctranslate2
    from ctranslate2.converters import Converter
    from ctranslate2.specs import TransformerSpec, common_spec
    from ctranslate2.specs.model_spec import ACCEPTED_MODEL_TYPES
except ImportError:  # optional: `pip install transduce[export]`
    ctranslate2 = None
    Converter = object
    ACCEPTED_MODEL_TYPES = ()

CODEC_DIR = "transduce"  # our config, vocabularies and tokenizers inside an exported folder


class ExportError(ValueError):
    """A model CTranslate2 cannot express, a bad option, or the library missing."""


def _require_ctranslate2() -> None:
    if ctranslate2 is None:
        raise ExportError("CTranslate2 export needs the ctranslate2 package: pip install 'transduce[export]'")


def check_exportable(cfg: ModelConfig) -> None:
    """Refuse what CTranslate2's Transformer cannot run, saying why."""
    if cfg.arch != "transformer":
        raise ExportError(f"CTranslate2 export handles Transformer models; this one is {cfg.arch!r}")
    if cfg.copy:
        raise ExportError("model.copy: CTranslate2 cannot express the pointer-generator's copy mixture "
                          "(copying from the source); this model cannot be exported")
    if cfg.source_prior:
        raise ExportError("model.source_prior: CTranslate2 cannot express the source-vocabulary prior "
                          "added to the output logits; this model cannot be exported")


def export_ctranslate2(model_dir: str | Path, out_dir: str | Path, quantization: str | None = None,
                       *, force: bool = False) -> Path:
    """Write the Transformer in `model_dir` as a CTranslate2 model folder `out_dir` and return it.

    `quantization`: CTranslate2's weight type (int8, int8_float32, int16, float16, bfloat16,
    float32, ...); None keeps float32. An existing `out_dir` is replaced only with `force`.
    """
    _require_ctranslate2()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if quantization is not None and quantization not in ACCEPTED_MODEL_TYPES:
        raise ExportError(f"quantization must be one of {', '.join(ACCEPTED_MODEL_TYPES)}, got {quantization!r}")
    if not (model_dir / CONFIG_FILE).is_file():
        raise ModelLoadError(f"{model_dir}: not a model folder (no {CONFIG_FILE})")
    check_exportable(Config.load(model_dir / CONFIG_FILE).model)  # before loading any weights
    if out_dir.exists() and not force:
        raise ExportError(f"{out_dir} already exists (force=True replaces it)")
    translator = Translator.from_dir(model_dir, device="cpu")
    converter = TransformerConverter(translator.model, translator.codec, translator.config)
    converter.convert(str(out_dir), quantization=quantization, force=force)
    (out_dir / CODEC_DIR).mkdir()
    translator.config.save(out_dir / CODEC_DIR / CONFIG_FILE)
    translator.codec.save(out_dir / CODEC_DIR)
    return out_dir


class TransformerConverter(Converter):
    """Our `TransformerSeq2Seq` onto `ctranslate2.specs.TransformerSpec` (`convert` is the library's)."""

    def __init__(self, model: nn.Module, codec: TextCodec, config: Config) -> None:
        check_exportable(model.cfg)
        self.model, self.codec, self.data, self.decode = model, codec, config.data, config.decode

    def _load(self) -> "TransformerSpec":
        model, cfg = self.model, self.model.cfg
        spec = TransformerSpec.from_config((cfg.encoder_layers, cfg.decoder_layers), cfg.heads,
                                           pre_norm=cfg.norm == "pre", activation=common_spec.Activation.RELU)
        for side, embed, layers, final_norm in (
            (spec.encoder, model.src_embed, model.encoder_layers, model.encoder_norm),
            (spec.decoder, model.tgt_embed, model.decoder_layers, model.decoder_norm),
        ):
            embeddings = side.embeddings[0] if side is spec.encoder else side.embeddings
            embeddings.weight = _array(embed.weight)
            side.scale_embeddings = True  # ours: embedding * sqrt(d_model)
            side.position_encodings.encodings = self._positions(side is spec.encoder)
            if cfg.norm == "pre":
                _set_norm(side.layer_norm, final_norm)
            for layer_spec, layer in zip(side.layer, layers):
                if side is spec.encoder:
                    _set_attention(layer_spec.self_attention, layer.sub_attention.norm, layer.attention)
                else:
                    _set_attention(layer_spec.self_attention, layer.sub_self.norm, layer.self_attention)
                    _set_attention(layer_spec.attention, layer.sub_cross.norm, layer.cross_attention)
                _set_norm(layer_spec.ffn.layer_norm, layer.sub_ff.norm)
                _set_linear(layer_spec.ffn.linear_0, layer.feed_forward.inner)
                _set_linear(layer_spec.ffn.linear_1, layer.feed_forward.outer)
        _set_linear(spec.decoder.projection, model.output)
        spec.config.layer_norm_epsilon = model.encoder_layers[0].sub_ff.norm.eps
        spec.config.unk_token, spec.config.bos_token, spec.config.eos_token = UNK_TOKEN, BOS_TOKEN, EOS_TOKEN
        spec.config.decoder_start_token = BOS_TOKEN
        spec.config.add_source_bos = spec.config.add_source_eos = False
        spec.register_source_vocabulary(list(self.codec.src_vocab.tokens))
        spec.register_target_vocabulary(list(self.codec.tgt_vocab.tokens))
        return spec

    def _positions(self, source: bool) -> np.ndarray:
        """Position p's vector in row p (CTranslate2's own sinusoids start from position 1).

        Shape: (rows, H)"""
        cfg = self.model.cfg
        if cfg.positions == "learned":
            return _array((self.model.src_positions if source else self.model.tgt_positions).weight)
        rows = max(cfg.max_positions, self.data.max_source_length, self.decode.max_length + 1)
        return _array(sinusoidal_positions(torch.arange(rows), cfg.hidden))


def _array(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).numpy().copy()


def _set_linear(spec, linear: nn.Linear) -> None:
    spec.weight = _array(linear.weight)  # (out, in), as CTranslate2 stores it
    if linear.bias is not None:
        spec.bias = _array(linear.bias)


def _set_norm(spec, norm: nn.LayerNorm) -> None:
    spec.gamma, spec.beta = _array(norm.weight), _array(norm.bias)


def _set_attention(spec, norm: nn.LayerNorm, attention: nn.Module) -> None:
    """Self-attention: linear[0] = fused qkv; cross-attention: linear[0] = query, linear[1] = k|v."""
    _set_norm(spec.layer_norm, norm)
    if hasattr(attention, "qkv"):
        _set_linear(spec.linear[0], attention.qkv)
    else:
        _set_linear(spec.linear[0], attention.query)
        _set_linear(spec.linear[1], attention.key_value)
    _set_linear(spec.linear[-1], attention.out)


# ---- translating with an exported folder -------------------------------------------------
# How each DecodeConfig field reaches CTranslate2 (in `translate_nbest` and `_search_options`); a
# field it cannot honour would be listed as "ignored: why". The tests check that every field is
# here and that changing any other one changes what CTranslate2 is asked: a field added to
# DecodeConfig cannot be dropped silently.
DECODE_FIELDS = {
    "beam": "beam_size, at least nbest (1 when sampling)",
    "max_length": "max_decoding_length",
    "max_length_ratio": "max_decoding_length of each source: one translate_batch call per length cap",
    "min_length": "min_decoding_length",
    "length_penalty": "length_penalty as an exponent of the length; scores renormalised our way",
    "length_alpha": "length_penalty's exponent under gnmt",
    "no_repeat_ngram": "no_repeat_ngram_size",
    "suppress_unk": "disable_unk",
    "batch_size": "max_batch_size",
    "sample": "sampling_topk, sampling_topp and sampling_temperature with beam_size 1",
    "temperature": "sampling_temperature",
    "top_k": "sampling_topk (0 = all, in both)",
    "top_p": "sampling_topp",
    "seed": "ctranslate2.set_random_seed before each sampled call",
}
# our length penalties as CTranslate2's exponent p (it ranks beams by log-prob / length ** p);
# gnmt's ((5 + length) / 6) ** alpha has no exact counterpart: its beam ranks by length ** alpha
_LENGTH_EXPONENT = {"avg": lambda alpha: 1.0, "none": lambda alpha: 0.0, "gnmt": lambda alpha: alpha}


class CTranslate2Translator(TranslatorBase):
    """An exported folder loaded once: text in, text out, tokenized and detokenized by our codec,
    so outputs and scores compare with `inference.Translator`'s.

    Scores are normalised our way. They differ from ours by small amounts: CTranslate2
    renormalises after removing <pad> and <s> (ours only removes them), and an output cut at
    max_length lacks the end token's log-probability (ours forces the end token). An empty
    source gives an empty output (CTranslate2 does not decode it; ours decodes "</s>").
    Sampling seeds CTranslate2 with decode.seed, but its worker threads keep their generators:
    only a process's first call gives the same samples run after run.
    """

    def __init__(self, directory: str | Path, device: str = "cpu", compute_type: str = "default",
                 intra_threads: int = 0, inter_threads: int = 1) -> None:
        _require_ctranslate2()
        directory = Path(directory)
        if not (directory / CODEC_DIR / CONFIG_FILE).is_file():
            raise ModelLoadError(f"{directory}: not a folder written by export_ctranslate2 (no {CODEC_DIR}/)")
        self.config = Config.load(directory / CODEC_DIR / CONFIG_FILE)
        self.codec = TextCodec.load(self.config.data, directory / CODEC_DIR)
        self.translator = ctranslate2.Translator(str(directory), device=device, compute_type=compute_type,
                                                 intra_threads=intra_threads, inter_threads=inter_threads)

    def translate_nbest(self, texts: Sequence[str], *, nbest: int = 1, **options) -> list[list[Translation]]:
        """n-best translations of each text, best first. Options: the fields of DecodeConfig."""
        cfg = self.decode_options(**options)
        sources = [self.codec.source_tokens(text) for text in texts]
        lengths = torch.tensor([max(len(tokens), 1) for tokens in sources])  # an empty source counts as "</s>"
        caps = max_lengths(lengths, cfg.max_length, cfg.max_length_ratio).tolist()
        rows: list[list[Translation]] = [[] for _ in texts]
        for cap in sorted(set(caps)):  # one call per length cap: one call unless max_length_ratio is set
            chosen = [i for i, c in enumerate(caps) if c == cap]
            batch = [sources[i] for i in chosen]
            outs = self.translator.translate_batch(batch, **self._search_options(cfg, nbest, cap))
            for i, out in zip(chosen, outs):
                row = [self._translation(tokens, score, sources[i], cap, cfg)
                       for tokens, score in zip(out.hypotheses, out.scores)]
                rows[i] = sorted(row, key=lambda t: -t.score)  # samples come unordered; gnmt ranks our way
        return rows

    def _search_options(self, cfg: DecodeConfig, nbest: int, cap: int) -> dict:
        options = dict(beam_size=max(cfg.beam, nbest), num_hypotheses=nbest, max_batch_size=cfg.batch_size,
                       max_input_length=0, max_decoding_length=cap, min_decoding_length=cfg.min_length,
                       length_penalty=_length_exponent(cfg), no_repeat_ngram_size=cfg.no_repeat_ngram,
                       disable_unk=cfg.suppress_unk, suppress_sequences=[[PAD_TOKEN], [BOS_TOKEN]],
                       return_scores=True)
        if cfg.sample:
            ctranslate2.set_random_seed(cfg.seed)
            options.update(beam_size=1, sampling_topk=cfg.top_k, sampling_topp=cfg.top_p,
                           sampling_temperature=cfg.temperature)
        return options

    def _translation(self, tokens: list[str], score: float, source: list[str], cap: int,
                     cfg: DecodeConfig) -> Translation:
        """CTranslate2 returns log-prob / length ** p, its length counting the end token when one
        was generated (not when the output reached `cap`): undone, then normalised our way."""
        log_prob = score * (len(tokens) + (len(tokens) < cap)) ** _length_exponent(cfg)
        ids = [self.codec.tgt_vocab.token_to_id(token) for token in tokens]
        return Translation(self.codec.decode_target(ids),
                           normalise(log_prob, len(tokens) + 1, cfg.length_penalty, cfg.length_alpha),
                           self.codec.target_tokens(ids), source)


def _length_exponent(cfg: DecodeConfig) -> float:
    """Greedy search and sampling rank nothing, so their scores come back as plain sums."""
    return 0.0 if cfg.beam == 1 or cfg.sample else _LENGTH_EXPONENT[cfg.length_penalty](cfg.length_alpha)


__all__ = ["CODEC_DIR", "CTranslate2Translator", "DECODE_FIELDS", "ExportError", "TransformerConverter",
           "check_exportable", "export_ctranslate2"]
