"""Pointer-generator copying (See et al. 2017): mix the vocabulary distribution with the
attention over source positions, so a source token can be copied even when the target
vocabulary does not hold it.

Source tokens outside the target vocabulary get temporary ids V, V+1, ... per example (the
data side fills `Batch.src_ext` / `tgt_out_ext`); the mixture is a distribution over that
extended vocabulary. Search sees only its log-probabilities; a copied id >= V is fed back to
the decoder as UNK.
"""
from __future__ import annotations

import torch
from torch import nn

from transduce.constants import UNK
from transduce.kernels import Linear

TINY = 1e-12  # floor of the mixture's probabilities: log(0) would be -inf


class PointerGenerator(nn.Module):
    """p_gen = σ(w · [context; decoder state; output] + b); P = p_gen P_vocab + (1 - p_gen) Σ attention."""

    def __init__(self, gate_input_size: int, vocab_size: int, src_to_tgt: torch.Tensor) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.gate = Linear(gate_input_size, 1)
        self.register_buffer("src_to_tgt", src_to_tgt.long().clone())  # saved with the weights

    def source_ids(self, src: torch.Tensor, src_ext: torch.Tensor | None) -> torch.Tensor:
        """The extended ids to copy into: the data's, or else the in-vocabulary ones."""
        return src_ext if src_ext is not None else in_vocabulary_ids(src, self.src_to_tgt)

    def forward(
        self, logits: torch.Tensor, attention: torch.Tensor, src_ext: torch.Tensor, gate_input: torch.Tensor,
        ext_size: int,
    ) -> torch.Tensor:
        """Log-probabilities over the extended vocabulary (`ext_size` columns: the batch's widest).

        Shape: logits (N, V); attention (N, S) over source positions (0 on padding); src_ext (N, S)
            extended ids of the source tokens; gate_input (N, G) -> (N, ext_size)
        """
        p_gen = torch.sigmoid(self.gate(gate_input).float())  # (N, 1)
        vocab = torch.softmax(logits.float(), dim=-1) * p_gen  # (N, V)
        probs = torch.nn.functional.pad(vocab, (0, ext_size - vocab.size(1)))  # (N, V')
        probs = probs.scatter_add(1, src_ext, attention.float() * (1.0 - p_gen))
        return torch.log(probs.clamp_min(TINY))


def extended_size(vocab_size: int, src_ext: torch.Tensor) -> int:
    """V plus the temporary ids a batch uses."""
    return max(vocab_size, int(src_ext.max()) + 1) if src_ext.numel() else vocab_size


def in_vocabulary_ids(src: torch.Tensor, src_to_tgt: torch.Tensor) -> torch.Tensor:
    """Extended ids when the data gave none: each source token's target id, UNK where absent
    (such a model can still copy every token the target vocabulary knows)."""
    ids = src_to_tgt[src]
    return torch.where(ids.ge(0), ids, torch.full_like(ids, UNK))


def output_scores(
    logits: torch.Tensor, pointer: PointerGenerator | None, src_ext: torch.Tensor | None, rows: torch.Tensor | None,
    attention: torch.Tensor | None, gate_input: torch.Tensor | None, normalize: bool = True,
) -> torch.Tensor:
    """A decoder's scores from its logits: log-probabilities (or the logits themselves with
    normalize=False), or for a copy model the mixture's log-probabilities over the extended
    vocabulary (`src_ext` of the whole batch; `rows` picks each logit row's source, None: one each).

    Shape: logits (N, V); src_ext (B, S); rows (N,); attention (N, S); gate_input (N, G) -> (N, V or V')
    """
    if pointer is None:
        return torch.log_softmax(logits, dim=-1) if normalize else logits
    ids = src_ext if rows is None else src_ext[rows]
    return pointer(logits, attention, ids, gate_input, extended_size(pointer.vocab_size, src_ext))
