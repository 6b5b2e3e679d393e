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
from typing import Sequence

import torch
from torch import nn


def mean_of_probabilities(log_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """log(mean_i exp(log_probs_i)), computed stably. Shape: n x (..., V) -> (..., V)"""
    if len(log_probs) == 1:
        return log_probs[0]
    stacked = torch.stack([lp.float() for lp in log_probs])
    return torch.logsumexp(stacked, dim=0) - math.log(len(log_probs))


@dataclass
class EnsembleEncoderOutput:
    """One encoder output per member, moved together."""

    members: tuple

    @property
    def src_mask(self) -> torch.Tensor:
        return self.members[0].src_mask

    def select(self, indices: torch.Tensor) -> "EnsembleEncoderOutput":
        return EnsembleEncoderOutput(tuple(m.select(indices) for m in self.members))

    def rearranged(self, sources: torch.Tensor) -> "EnsembleEncoderOutput":
        return EnsembleEncoderOutput(tuple(m.rearranged(sources) for m in self.members))

    def repeat_rows(self, times: int) -> "EnsembleEncoderOutput":
        return EnsembleEncoderOutput(tuple(m.repeat_rows(times) for m in self.members))

    def put(self, slots: torch.Tensor, other: "EnsembleEncoderOutput") -> "EnsembleEncoderOutput":
        return EnsembleEncoderOutput(tuple(m.put(slots, o) for m, o in zip(self.members, other.members)))


@dataclass
class EnsembleState:
    """One decoder state per member, moved together; `attention` is the members' mean (for plots)."""

    members: tuple

    @property
    def attention(self) -> torch.Tensor | None:
        weights = [m.attention.float() for m in self.members if m.attention is not None]
        return torch.stack(weights).mean(0) if weights else None

    def select(self, indices: torch.Tensor) -> "EnsembleState":
        return EnsembleState(tuple(m.select(indices) for m in self.members))

    def reorder(self, indices: torch.Tensor) -> "EnsembleState":
        return EnsembleState(tuple(m.reorder(indices) for m in self.members))

    def rearranged(self, sources: torch.Tensor) -> "EnsembleState":
        return EnsembleState(tuple(m.rearranged(sources) for m in self.members))

    def reserve(self, columns: int) -> "EnsembleState":
        return EnsembleState(tuple(m.reserve(columns) for m in self.members))

    def put(self, slots: torch.Tensor, other: "EnsembleState") -> "EnsembleState":
        return EnsembleState(tuple(m.put(slots, o) for m, o in zip(self.members, other.members)))


class Ensemble(nn.Module):
    """Models that share their vocabularies (and copying, or not), as one Seq2Seq for decoding and scoring."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(models)

    def encode(self, src, src_mask, src_lengths, src_ext=None) -> EnsembleEncoderOutput:
        return EnsembleEncoderOutput(tuple(m.encode(src, src_mask, src_lengths, src_ext) for m in self.members))

    def init_state(self, enc: EnsembleEncoderOutput) -> EnsembleState:
        return EnsembleState(tuple(m.init_state(e) for m, e in zip(self.members, enc.members)))

    def decode_step(self, prev_tokens: torch.Tensor, enc: EnsembleEncoderOutput, state: EnsembleState
                    ) -> tuple[torch.Tensor, EnsembleState]:
        steps = [m.decode_step(prev_tokens, e, s) for m, e, s in zip(self.members, enc.members, state.members)]
        return mean_of_probabilities([lp for lp, _ in steps]), EnsembleState(tuple(s for _, s in steps))

    def forward(self, src, src_mask, src_lengths, tgt_in, tgt_mask=None, normalize: bool = True) -> torch.Tensor:
        """Teacher forcing: the log of the members' mean probabilities (always normalised)."""
        return mean_of_probabilities([m(src, src_mask, src_lengths, tgt_in, tgt_mask, normalize=True)
                                      for m in self.members])

    def training_scores(self, src, src_mask, src_lengths, tgt_in, tgt_mask, src_ext=None):
        """The mixture's log-probabilities at the real target positions (a log-softmax leaves them
        as they are), and no auxiliary loss: an ensemble is scored, not trained."""
        scores = [torch.log_softmax(m.training_scores(src, src_mask, src_lengths, tgt_in, tgt_mask, src_ext)[0].float(),
                                    dim=-1) for m in self.members]
        return mean_of_probabilities(scores), None

    def output_projection(self) -> None:
        return None
