"""Config → model: the one place that knows which class builds which architecture."""
from __future__ import annotations

from torch import nn

from transduce.config import ModelConfig
from transduce.models.rnn import RNNSeq2Seq

ARCHITECTURES = {"lstm": RNNSeq2Seq, "gru": RNNSeq2Seq}


def build_model(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> nn.Module:
    return ARCHITECTURES[cfg.arch](cfg, src_vocab_size, tgt_vocab_size)


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters, each shared tensor counted once."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters() if p.requires_grad}.values())
