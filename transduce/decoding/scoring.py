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
        ratio_caps = torch.tensor([max(1, math.ceil(max_length_ratio * int(n) - 1e-9)) for n in src_lengths])
        caps = torch.minimum(caps, ratio_caps)
    return caps


def constrain(
    log_probs: torch.Tensor, step: int | torch.Tensor, min_length: int, at_cap: torch.Tensor
) -> torch.Tensor:
    """Apply the rules every search shares, in place, and return `log_probs`.

    PAD and BOS are never outputs; EOS is not allowed before `min_length` tokens (`step` is
    the tokens generated so far, one number or one per row); a row that reached its length
    cap may only end (the cap wins over `min_length`).
    Shape: log_probs (N, V), step int or (N,), at_cap (N,) bool
    """
    log_probs[:, PAD] = float("-inf")
    log_probs[:, BOS] = float("-inf")
    capped = bool(at_cap.any())
    eos = log_probs[at_cap, EOS].clone() if capped else None
    if min_length > 0:
        if isinstance(step, int):
            if step < min_length:
                log_probs[:, EOS] = float("-inf")
        else:
            log_probs[step < min_length, EOS] = float("-inf")
    if capped:
        log_probs[at_cap] = float("-inf")
        log_probs[at_cap, EOS] = eos
    return log_probs


def normalise(log_prob: float, length: int, penalty: str) -> float:
    """Length-normalised score; `length` counts the generated tokens including EOS."""
    if penalty == "avg":
        return log_prob / max(length, 1)
    return log_prob
