"""Config → model: the one place that knows which class builds which architecture."""
from __future__ import annotations

import torch
from torch import nn

from transduce.config import ModelConfig
from transduce.models.rnn import RNNSeq2Seq
from transduce.models.transformer import TransformerSeq2Seq

ARCHITECTURES = {"lstm": RNNSeq2Seq, "gru": RNNSeq2Seq, "transformer": TransformerSeq2Seq}


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int,
                src_to_tgt: torch.Tensor | None = None) -> nn.Module:
    """`src_to_tgt` (source id -> target id of the same token, -1 if none) feeds the source prior
    and copying; a loaded model reads it from its weights instead."""
    return ARCHITECTURES[cfg.arch](cfg, src_vocab_size, tgt_vocab_size, src_to_tgt)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
