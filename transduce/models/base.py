"""The Seq2Seq protocol that search, training and inference are written against.

Search never asks which model it drives: it calls `encode` once, `init_state` once, then
`decode_step` with only the newest token, and moves rows of the encoder output and the state
(`select`, `reorder`, `rearranged`, `repeat_rows`, `put`) as sentences finish, beams are pruned
and new sentences take finished ones' rows. Reference scoring and training call the teacher-forced
methods. Every member any of them uses is declared here; tests/unit/test_base.py checks that each
model, encoder output and state class provides them all.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class EncoderState(Protocol):
    """What the encoder computed once per source (`EncoderOutput`, `TransformerMemory`), with the
    row moves search makes."""

    def select(self, indices: torch.Tensor) -> "EncoderState":
        """Rows `indices` (m,), in any order, repeats allowed; this object stays valid."""

    def rearranged(self, sources: torch.Tensor) -> "EncoderState":
        """`select(sources)` when this object is not used again: rows may be moved in place."""

    def repeat_rows(self, times: int) -> "EncoderState":
        """Each row `times` times in a row, as `select(arange(B).repeat_interleave(times))` (a
        source for each of its beams)."""

    def put(self, slots: torch.Tensor, other: "EncoderState") -> "EncoderState":
        """Rows `slots` (n,) replaced by other's n rows (new sentences in the rows of finished
        ones), sources padded to the wider of the two; this object is not used again."""


@runtime_checkable
class DecoderState(Protocol):
    """Everything the next decoder step needs (`RNNState`, `TransformerState`), with the row moves
    search makes."""

    @property
    def attention(self) -> torch.Tensor | None:
        """(B, S) the last step's attention weights, for plots and the web page; None when the
        model has none."""

    def select(self, indices: torch.Tensor) -> "DecoderState":
        """Rows `indices` (m,), in any order, repeats allowed; this state stays valid (another
        step may still branch from it)."""

    def reorder(self, indices: torch.Tensor) -> "DecoderState":
        """`select` when this state is not used again: its memory may be reused."""

    def rearranged(self, sources: torch.Tensor) -> "DecoderState":
        """`reorder(sources)`, moving only the rows that change, in place."""

    def reserve(self, columns: int) -> "DecoderState":
        """The same state, prepared for up to `columns` more steps (a cache sized once)."""

    def put(self, slots: torch.Tensor, other: "DecoderState") -> "DecoderState":
        """Rows `slots` (n,) taken by other's n rows (fresh sentences in a running batch, which
        may have fed fewer tokens); this state is not used again."""


@runtime_checkable
class Seq2Seq(Protocol):
    """What search and reference scoring drive: any model, or an `Ensemble` of them."""

    training: bool  # nn.Module's: search and scoring switch to eval() and back

    def train(self, mode: bool = True) -> "Seq2Seq": ...

    def eval(self) -> "Seq2Seq": ...

    def encode(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, src_ext: torch.Tensor | None = None
    ) -> EncoderState:
        """Shape: src, src_mask (B, S); src_lengths (B,); src_ext (B, S) extended ids, read by copy models."""

    def init_state(self, enc: EncoderState) -> DecoderState:
        """The state before the first token (BOS is fed by the first `decode_step`)."""

    def decode_step(
        self, prev_tokens: torch.Tensor, enc: EncoderState, state: DecoderState
    ) -> tuple[torch.Tensor, DecoderState]:
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
        mixture, a prior, an ensemble): training then fuses projection and loss over `features`."""


@runtime_checkable
class TrainableSeq2Seq(Seq2Seq, Protocol):
    """A model the trainer fits (RNN, Transformer): an ensemble is only decoded and scored."""

    def features(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced decoder outputs before the output projection, read when
        `output_projection()` is not None. Shape: tgt_in (B, T) -> (B, T, H), or (N, H) at tgt_mask"""

    def scores(
        self, out: torch.Tensor, enc: EncoderState, rows: torch.Tensor | None = None,
        attention: torch.Tensor | None = None, gate_input: torch.Tensor | None = None, normalize: bool = True,
    ) -> torch.Tensor:
        """Decoder outputs -> log-probabilities (logits with normalize=False; a copy mixture's
        log-probabilities always): the one output layer `decode_step` and the teacher-forced
        passes share. Shape: out (N, H); rows (N,) each output's row of enc (None: N == B);
        attention (N, S), gate_input (N, G) for copying -> (N, V) or (N, V')"""
