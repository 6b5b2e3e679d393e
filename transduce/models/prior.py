"""The source-vocabulary prior of title generation: a title mostly reuses the source's tokens.

For every source, χ is a 0/1 vector over the target vocabulary marking the tokens the source
contains; a learned per-token scale and shift turn it into ŷ = s ⊙ χ + t, and the decoder's
logits y become (y + ŷ) / 2 before the softmax, at every step. ŷ is computed once per source.
"""
from __future__ import annotations

import torch
from torch import nn

from transduce.constants import PAD


class SourcePrior(nn.Module):
    """ŷ = exp(log_scale) ⊙ χ + shift; log_scale and shift start at 0 (s = 1, t = 0).

    `src_to_tgt` maps each source id to the target id of the same token (-1: not in the
    target vocabulary); it is saved with the weights, so a loaded model needs no vocabulary
    lookups. With a shared vocabulary it is the identity.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, src_to_tgt: torch.Tensor | None = None) -> None:
        super().__init__()
        src_to_tgt = default_source_map(src_vocab_size, tgt_vocab_size, src_to_tgt)
        self.tgt_vocab_size = tgt_vocab_size
        self.register_buffer("src_to_tgt", src_to_tgt.long().clone())
        self.log_scale = nn.Parameter(torch.zeros(tgt_vocab_size))
        self.shift = nn.Parameter(torch.zeros(tgt_vocab_size))

    def presence(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """χ: 1 where the target token occurs in the source. Shape: src, src_mask (B, S) -> (B, V)"""
        V = self.tgt_vocab_size
        ids = self.src_to_tgt[src]  # (B, S)
        ids = torch.where(src_mask & ids.ge(0) & src.ne(PAD), ids, V)  # absent tokens go to a spare column
        chi = torch.zeros(src.size(0), V + 1, device=src.device, dtype=self.shift.dtype)
        chi.scatter_(1, ids, 1.0)
        return chi[:, :V]

    def forward(self, src: torch.Tensor, src_mask: torch.Tensor) -> torch.Tensor:
        """ŷ for each source. Shape: src, src_mask (B, S) -> (B, V)"""
        return torch.exp(self.log_scale) * self.presence(src, src_mask) + self.shift


def apply_prior(logits: torch.Tensor, prior: torch.Tensor | None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """(y + ŷ) / 2, or y without a prior. `rows` gives each logit row's source when the logits
    are flattened target positions.

    Shape: logits (B, V) or (N, V); prior (B, V); rows (N,) -> like logits
    """
    if prior is None:
        return logits
    if rows is not None:
        prior = prior[rows]
    return (logits + prior.to(logits.dtype)) / 2


def default_source_map(src_vocab_size: int, tgt_vocab_size: int, src_to_tgt: torch.Tensor | None) -> torch.Tensor:
    """The given map, checked; without one, the identity for one shared vocabulary, else all -1
    (a model about to be loaded: its saved map replaces this one)."""
    if src_to_tgt is None:
        src_to_tgt = torch.arange(src_vocab_size) if src_vocab_size == tgt_vocab_size else \
            torch.full((src_vocab_size,), -1, dtype=torch.long)
    if src_to_tgt.shape != (src_vocab_size,):
        raise ValueError(f"src_to_tgt must have {src_vocab_size} entries, got {tuple(src_to_tgt.shape)}")
    return src_to_tgt


def masked_rows(mask: torch.Tensor) -> torch.Tensor:
    """The batch row of each True position, in the order `tensor[mask]` lists them.
    Shape: (B, T) -> (N,)"""
    B, T = mask.shape
    return torch.arange(B, device=mask.device).unsqueeze(1).expand(B, T)[mask]
