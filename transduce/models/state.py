"""Explicit decoding states: everything a decoder step needs, and nothing hidden in modules.

Search only ever calls `select(indices)` on these: to repeat a source for each beam, to
follow the surviving beams after pruning, and to drop finished sentences.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _select(t: torch.Tensor | None, indices: torch.Tensor, dim: int = 0) -> torch.Tensor | None:
    return None if t is None else t.index_select(dim, indices)


@dataclass
class EncoderOutput:
    """What the encoder computed once per source and every decoder step reads.

    Shape:
        memory: (B, S, H) encoder states; keys: (B, S, A) their attention projection
        src_mask: (B, S) True on real tokens; final: per decoder layer (B, H) initial states
        final_cell: same for LSTM cells, None for GRU
    """

    memory: torch.Tensor
    keys: torch.Tensor
    src_mask: torch.Tensor
    final: tuple[torch.Tensor, ...]
    final_cell: tuple[torch.Tensor, ...] | None

    def select(self, indices: torch.Tensor) -> "EncoderOutput":
        return EncoderOutput(
            memory=_select(self.memory, indices),
            keys=_select(self.keys, indices),
            src_mask=_select(self.src_mask, indices),
            final=tuple(_select(h, indices) for h in self.final),
            final_cell=None if self.final_cell is None else tuple(_select(c, indices) for c in self.final_cell),
        )


@dataclass
class RNNState:
    """Recurrent decoder state after some steps.

    Shape:
        hidden, cell: per layer (B, H) (cell is None for GRU); feed: (B, H) the last attentional
        output, fed back as input (input feeding); attention: (B, S) the last attention weights
    """

    hidden: tuple[torch.Tensor, ...]
    cell: tuple[torch.Tensor, ...] | None
    feed: torch.Tensor
    attention: torch.Tensor | None = None

    def select(self, indices: torch.Tensor) -> "RNNState":
        return RNNState(
            hidden=tuple(h.index_select(0, indices) for h in self.hidden),
            cell=None if self.cell is None else tuple(c.index_select(0, indices) for c in self.cell),
            feed=self.feed.index_select(0, indices),
            attention=_select(self.attention, indices),
        )
