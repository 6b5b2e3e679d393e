"""Source and target embeddings, shared when the config says so, and the output projection tied
to the target embedding: the same rules for every architecture."""
from __future__ import annotations

import torch
from torch import nn

from transduce.config import ModelConfig
from transduce.constants import PAD
from transduce.kernels import Linear


def make_embeddings(cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int) -> tuple[nn.Embedding, nn.Embedding]:
    """(source, target) embeddings of size cfg.embed_dim, N(0, E^-1/2), the PAD row zero."""
    E = cfg.embed_dim
    src_embed = nn.Embedding(src_vocab_size, E, padding_idx=PAD)
    if cfg.share_embeddings:
        if src_vocab_size != tgt_vocab_size:
            raise ValueError("model.share_embeddings needs one shared vocabulary (data.shared_vocab: true)")
        tgt_embed = src_embed
    else:
        tgt_embed = nn.Embedding(tgt_vocab_size, E, padding_idx=PAD)
    for emb in dict.fromkeys([src_embed, tgt_embed]):  # in order (a set's order would vary from run to run)
        nn.init.normal_(emb.weight, std=E ** -0.5)
        with torch.no_grad():
            emb.weight[PAD].zero_()
    return src_embed, tgt_embed


def make_output(cfg: ModelConfig, tgt_embed: nn.Embedding, tgt_vocab_size: int) -> nn.Linear:
    """The projection onto the target vocabulary, sharing the target embedding when cfg.tie_output."""
    output = Linear(cfg.hidden, tgt_vocab_size)
    if cfg.tie_output:
        output.weight = tgt_embed.weight
    return output
