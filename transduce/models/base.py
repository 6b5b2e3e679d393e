"""The Seq2Seq protocol that search, training and inference are written against.

Search never asks which model it drives: it calls `encode` once, `init_state` once, then
`decode_step` with only the newest token, and `select` (or `reorder`, `rearranged`) on the encoder
output and the state.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch


class DecoderState(Protocol):
    attention: torch.Tensor | None  # (B, S) last attention weights, for plots and the web page

    def select(self, indices: torch.Tensor) -> "DecoderState": ...

    def reorder(self, indices: torch.Tensor) -> "DecoderState":
        """`select` when this state is not used again: its memory may be reused."""

    def rearranged(self, sources: torch.Tensor) -> "DecoderState":
        """`reorder(sources)`, moving only the rows that change, in place."""

    def reserve(self, columns: int) -> "DecoderState":
        """The same state, prepared for up to `columns` more steps (a cache sized once)."""


class EncoderState(Protocol):
    src_mask: torch.Tensor

    def select(self, indices: torch.Tensor) -> "EncoderState": ...

    def rearranged(self, sources: torch.Tensor) -> "EncoderState":
        """`select(sources)` when this object is not used again: rows may be moved in place."""

    def repeat_rows(self, times: int) -> "EncoderState":
        """Each row `times` times in a row, as `select(arange(B).repeat_interleave(times))`."""


class Seq2Seq(Protocol):
    def encode(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, src_ext: torch.Tensor | None = None
    ) -> EncoderState:
        """Shape: src, src_mask (B, S); src_lengths (B,); src_ext (B, S) extended ids, read by copy models."""

    def init_state(self, enc: Any) -> DecoderState: ...

    def decode_step(self, prev_tokens: torch.Tensor, enc: Any, state: Any) -> tuple[torch.Tensor, Any]:
        """Shape: prev_tokens (B,) -> log_probs (B, V), next state. A copy model's V covers the
        batch's extended vocabulary; ids >= the vocabulary size are fed back as UNK."""

    def forward(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
        tgt_mask: torch.Tensor | None = None, normalize: bool = True,
    ) -> torch.Tensor:
        """Teacher forcing. Shape: tgt_in (B, T) -> log_probs (B, T, V), or (N, V) at the tgt_mask
        positions; normalize=False may return unnormalised scores (logits)."""

    def training_scores(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
        tgt_mask: torch.Tensor, src_ext: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(N, V) scores of the real target positions for the loss (logits, or log-probabilities
        of a copy mixture) and a summed auxiliary loss (coverage) or None."""

    def output_projection(self) -> torch.nn.Linear | None:
        """The final linear map when log_probs = log_softmax(linear(features)), else None (a copy
        mixture): training then fuses projection and loss over `features(...)` (N, H)."""

    def eval(self) -> Any: ...
