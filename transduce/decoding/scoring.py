"""Small pieces that search shares: length limits, forbidden tokens, length normalisation."""
from __future__ import annotations

import math

import torch

from transduce.constants import BOS, EOS, PAD, UNK
from transduce.decoding.ngram import block_repeated_ngrams


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
    log_probs: torch.Tensor, step: int | torch.Tensor, min_length: int, at_cap: torch.Tensor, *,
    suppress_unk: bool = False, history: torch.Tensor | None = None, no_repeat_ngram: int = 0,
) -> torch.Tensor:
    """Apply the rules every search shares, in place, and return `log_probs`.

    PAD and BOS are never outputs, nor UNK with `suppress_unk`; with `no_repeat_ngram` n > 0,
    no token may repeat an n-gram of the row's own `history`; EOS is not allowed before
    `min_length` tokens (`step` is the tokens generated so far, one number or one per row)
    unless these rules left the row nothing else; a row that reached its length cap may only
    end (the cap wins over `min_length`).
    Shape: log_probs (N, V), step int or (N,), at_cap (N,) bool, history (N, T) with the
    first `step` tokens of each row generated
    """
    log_probs[:, PAD] = float("-inf")
    log_probs[:, BOS] = float("-inf")
    if suppress_unk:
        log_probs[:, UNK] = float("-inf")
    if no_repeat_ngram > 0 and history is not None:
        block_repeated_ngrams(log_probs, history, step, no_repeat_ngram)
    capped = bool(at_cap.any())
    eos = log_probs[at_cap, EOS].clone() if capped else None
    if min_length > 0 and not (isinstance(step, int) and step >= min_length):
        early = torch.as_tensor(step < min_length, device=log_probs.device)  # () or (N,)
        eos_before = log_probs[:, EOS].clone()
        log_probs[:, EOS] = torch.where(early, float("-inf"), eos_before)
        stuck = log_probs.amax(dim=1) == float("-inf")  # ending beats emitting PAD (amax: one fast pass)
        log_probs[:, EOS] = torch.where(stuck, eos_before, log_probs[:, EOS])
    if capped:
        log_probs[at_cap] = float("-inf")
        log_probs[at_cap, EOS] = eos
    return log_probs


def normalise(log_prob: float, length: int, penalty: str, alpha: float = 0.6) -> float:
    """Length-normalised score; `length` counts the generated tokens including EOS.

    avg: log_prob / length; gnmt: log_prob / ((5 + length) / 6) ** alpha (Wu et al. 2016: a
    milder push towards longer outputs than avg, none at alpha 0); none: log_prob.
    """
    if penalty == "avg":
        return log_prob / max(length, 1)
    if penalty == "gnmt":
        return log_prob / ((5 + length) / 6) ** alpha
    return log_prob
