"""n-gram blocking: forbid a token that would repeat an n-gram the row has already generated.

Outputs of attention models, summaries especially, tend to loop ("the the the", a phrase
twice); forbidding a second copy of any n-gram inside one output (fairseq's and Hugging
Face's `no_repeat_ngram_size`) breaks the loop at its first repetition. Each row is blocked
against its own history only: a beam against its own prefix, a streamed greedy row against
its own sentence.
"""
from __future__ import annotations

import torch


def repeated_ngram_bans(
    history: torch.Tensor, lengths: torch.Tensor | int, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(row, token) pairs that would complete an n-gram already in that row's history.

    Every window of n generated tokens whose first n-1 tokens equal the row's last n-1 tokens
    bans its n-th token. `lengths` says how many leading tokens of each row are generated (the
    rest is padding); one number when all rows have the same length.
    Shape: history (N, T) long, lengths (N,) or int -> rows (M,), tokens (M,)
    """
    N, T = history.shape
    empty = history.new_empty(0)
    if n < 1 or T < n:
        return empty, empty
    if isinstance(lengths, int):
        lengths = torch.full((N,), lengths, dtype=torch.long, device=history.device)
    windows = history.unfold(1, n, 1)  # (N, T-n+1, n)
    starts = torch.arange(T - n + 1, device=history.device)  # (T-n+1,)
    match = starts.unsqueeze(0) <= (lengths - n).unsqueeze(1)  # (N, T-n+1) windows of generated tokens
    if n > 1:
        positions = (lengths - (n - 1)).clamp(min=0).unsqueeze(1) + torch.arange(n - 1, device=history.device)
        suffix = history.gather(1, positions.clamp(max=T - 1))  # (N, n-1) the row's last n-1 tokens
        match &= windows[:, :, :-1].eq(suffix.unsqueeze(1)).all(dim=2)
    rows, starts_hit = match.nonzero(as_tuple=True)  # (M,)
    return rows, windows[rows, starts_hit, n - 1]


def block_repeated_ngrams(
    log_probs: torch.Tensor, history: torch.Tensor, lengths: torch.Tensor | int, n: int
) -> torch.Tensor:
    """Set the log-probability of every token that would repeat an n-gram to -inf, in place.

    Shape: log_probs (N, V), history (N, T), lengths (N,) or int
    """
    rows, tokens = repeated_ngram_bans(history, lengths, n)
    if rows.numel():
        log_probs[rows, tokens] = float("-inf")
    return log_probs
