"""Cross entropy over real (non-pad) target tokens, with label smoothing."""
from __future__ import annotations

import torch


def label_smoothed_nll(
    log_probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, smoothing: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed smoothed loss and summed plain NLL over the positions where mask is True.

    Smoothing spreads `smoothing` of the target mass uniformly over the vocabulary.
    Shape: log_probs (B, T, V), or (N, V) already restricted to the mask; target, mask (B, T)
        -> two scalars
    """
    lp = log_probs[mask] if log_probs.dim() == 3 else log_probs  # (N, V): pads never reach the loss
    gold = target[mask]  # (N,)
    nll = -lp.gather(1, gold.unsqueeze(1)).squeeze(1)  # (N,)
    if smoothing > 0:
        loss = (1.0 - smoothing) * nll - smoothing * lp.mean(dim=1)
    else:
        loss = nll
    return loss.sum(), nll.sum()
