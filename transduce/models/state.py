"""Explicit decoding states: everything a decoder step needs, and nothing hidden in modules.

Search only ever calls `select(indices)` on these (to repeat a source for each beam, to
follow the surviving beams after pruning, to drop finished sentences) and `cat(other)` (to
let new sentences into a running batch when others have finished).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


def _select(t: torch.Tensor | None, indices: torch.Tensor, dim: int = 0) -> torch.Tensor | None:
    return None if t is None else t.index_select(dim, indices)


def _pad_source(t: torch.Tensor, width: int) -> torch.Tensor:
    """Pad dim 1 (source positions) with zeros / False up to `width`."""
    if t.size(1) == width:
        return t
    pad = t.new_zeros((t.size(0), width - t.size(1)) + tuple(t.shape[2:]))
    return torch.cat([t, pad], dim=1)


def _cat_rows(a: torch.Tensor | None, b: torch.Tensor | None, width: int | None = None) -> torch.Tensor | None:
    if a is None or b is None:
        return None
    if width is not None:
        a, b = _pad_source(a, width), _pad_source(b, width)
    return torch.cat([a, b], dim=0)


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

    def cat(self, other: "EncoderOutput") -> "EncoderOutput":
        """Rows of both, sources padded to the wider one (padded positions are masked)."""
        width = max(self.memory.size(1), other.memory.size(1))
        return EncoderOutput(
            memory=_cat_rows(self.memory, other.memory, width),
            keys=_cat_rows(self.keys, other.keys, width),
            src_mask=_cat_rows(self.src_mask, other.src_mask, width),
            final=tuple(_cat_rows(a, b) for a, b in zip(self.final, other.final)),
            final_cell=None if self.final_cell is None else tuple(
                _cat_rows(a, b) for a, b in zip(self.final_cell, other.final_cell)),
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

    def cat(self, other: "RNNState") -> "RNNState":
        """Rows of both states (attention weights padded to the wider source)."""
        width = None
        if self.attention is not None and other.attention is not None:
            width = max(self.attention.size(1), other.attention.size(1))
        return RNNState(
            hidden=tuple(_cat_rows(a, b) for a, b in zip(self.hidden, other.hidden)),
            cell=None if self.cell is None else tuple(_cat_rows(a, b) for a, b in zip(self.cell, other.cell)),
            feed=_cat_rows(self.feed, other.feed),
            attention=_cat_rows(self.attention, other.attention, width),
        )
