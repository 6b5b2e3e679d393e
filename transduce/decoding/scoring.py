"""Small pieces that search shares: length limits, forbidden tokens, length normalisation."""
from __future__ import annotations

import math

import torch

from transduce.constants import BOS, EOS, PAD


def max_lengths(src_lengths: torch.Tensor, max_length: int, max_length_ratio: float | None) -> torch.Tensor:
    """Per-sentence cap on generated tokens (EOS excluded): absolute, and as a ratio of the source.

    Shape: src_lengths (B,) -> (B,) long
    """
    caps = torch.full_like(src_lengths, max_length)
    if max_length_ratio is not None:
        ratio_caps = torch.tensor([max(1, math.ceil(max_length_ratio * int(n))) for n in src_lengths])
        caps = torch.minimum(caps, ratio_caps)
    return caps


def forbid_specials(log_probs: torch.Tensor) -> torch.Tensor:
    """PAD and BOS are never outputs: they get -inf, in place. Shape: (..., V)."""
    log_probs[..., PAD] = float("-inf")
    log_probs[..., BOS] = float("-inf")
    return log_probs


def force_eos(log_probs: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows that reached their length cap may only end. Shape: log_probs (N, V), rows (N,) bool."""
    if bool(rows.any()):
        eos = log_probs[rows, EOS].clone()
        log_probs[rows] = float("-inf")
        log_probs[rows, EOS] = eos
    return log_probs


def normalise(log_prob: float, length: int, penalty: str) -> float:
    """Length-normalised score; `length` counts the generated tokens including EOS."""
    if penalty == "avg":
        return log_prob / max(length, 1)
    return log_prob
