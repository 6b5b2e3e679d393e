"""Ensembles: several models of one vocabulary decode as one, averaging their next-token probabilities.

Independently trained models make different errors; averaging their distributions at every step
(as fairseq's and OpenNMT-py's ensembles do) turns several runs into one better decoder without
training anything. Each member keeps its own encoder output and decoder state, and every search
(greedy, beam, sampling) drives the ensemble through the same protocol as one model
(`models/base.py`). Copy models average their extended distributions: the members share the
vocabulary, so a batch's extended ids mean the same words for all of them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

import torch
from torch import nn

from transduce.models.base import DecoderState, EncoderState


def mean_of_probabilities(log_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """log(mean_i exp(log_probs_i)), computed stably. Shape: n x (..., V) -> (..., V)"""
    if len(log_probs) == 1:
        return log_probs[0]
    stacked = torch.stack([lp.float() for lp in log_probs])
    return torch.logsumexp(stacked, dim=0) - math.log(len(log_probs))


Moved = TypeVar("Moved", bound="_MemberWise")


@dataclass
class _MemberWise:
    """Members moved together: each moves its own rows the same way."""

    members: tuple

    def _each(self: Moved, move: Callable) -> Moved:
        """This kind of object over `move(member)` of every member."""
        return type(self)(tuple(move(m) for m in self.members))

    def select(self: Moved, indices: torch.Tensor) -> Moved:
        return self._each(lambda m: m.select(indices))

    def rearranged(self: Moved, sources: torch.Tensor) -> Moved:
        return self._each(lambda m: m.rearranged(sources))

    def put(self: Moved, slots: torch.Tensor, other: Moved) -> Moved:
        return type(self)(tuple(m.put(slots, o) for m, o in zip(self.members, other.members)))


@dataclass
class EnsembleEncoderOutput(_MemberWise):
    """One encoder output per member, moved together."""

    members: tuple[EncoderState, ...]

    def repeat_rows(self, times: int) -> "EnsembleEncoderOutput":
        return self._each(lambda m: m.repeat_rows(times))


@dataclass
class EnsembleState(_MemberWise):
    """One decoder state per member, moved together; `attention` is the members' mean (for plots)."""

    members: tuple[DecoderState, ...]

    @property
    def attention(self) -> torch.Tensor | None:
        weights = [m.attention.float() for m in self.members if m.attention is not None]
        return torch.stack(weights).mean(0) if weights else None

    def reorder(self, indices: torch.Tensor) -> "EnsembleState":
        return self._each(lambda m: m.reorder(indices))

    def reserve(self, columns: int) -> "EnsembleState":
        return self._each(lambda m: m.reserve(columns))


class Ensemble(nn.Module):
    """Models that share their vocabularies (and copying, or not), as one Seq2Seq for decoding and scoring."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    def encode(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, src_ext: torch.Tensor | None = None
    ) -> EnsembleEncoderOutput:
        return EnsembleEncoderOutput(tuple(m.encode(src, src_mask, src_lengths, src_ext) for m in self.members))

    def init_state(self, enc: EnsembleEncoderOutput) -> EnsembleState:
        return EnsembleState(tuple(m.init_state(e) for m, e in zip(self.members, enc.members)))

    def decode_step(self, prev_tokens: torch.Tensor, enc: EnsembleEncoderOutput, state: EnsembleState
                    ) -> tuple[torch.Tensor, EnsembleState]:
        """The log of the members' mean next-token probabilities. Shape: prev_tokens (B,) -> (B, V), state"""
        steps = [m.decode_step(prev_tokens, e, s) for m, e, s in zip(self.members, enc.members, state.members)]
        return mean_of_probabilities([lp for lp, _ in steps]), EnsembleState(tuple(s for _, s in steps))

    def forward(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
        tgt_mask: torch.Tensor | None = None, normalize: bool = True,
    ) -> torch.Tensor:
        """Teacher forcing: the log of the members' mean probabilities (always normalised).
        Shape: tgt_in (B, T) -> (B, T, V), or (N, V) at the tgt_mask positions"""
        return mean_of_probabilities([m(src, src_mask, src_lengths, tgt_in, tgt_mask, normalize=True)
                                      for m in self.members])

    def training_scores(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
        tgt_mask: torch.Tensor, src_ext: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        """The mixture's log-probabilities at the real target positions (a log-softmax leaves them
        as they are), and no auxiliary loss: an ensemble is scored, not trained. Shape: -> (N, V)"""
        scores = [torch.log_softmax(m.training_scores(src, src_mask, src_lengths, tgt_in, tgt_mask, src_ext)[0].float(),
                                    dim=-1) for m in self.members]
        return mean_of_probabilities(scores), None

    def output_projection(self) -> None:
        """None: the mixture of several output layers is no one linear map."""
        return None
