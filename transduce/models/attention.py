"""Attention over encoder states: Luong dot / general (multiplicative) and Bahdanau (additive).

Each kind splits its work in two: `precompute(memory)` runs once per source (the projection
of the encoder states), `forward(query, ...)` runs once per decoder step and touches only the
new query, so a step costs O(S), never O(S x T).
"""
from __future__ import annotations

import torch
from torch import nn

from transduce.kernels import Linear


class Attention(nn.Module):
    """Scores a decoder query against every source position; padded positions get weight 0."""

    def __init__(self, kind: str, hidden: int, coverage: bool = False) -> None:
        super().__init__()
        self.kind = kind
        if coverage:  # See et al.: the attention so far enters the scores, to discourage repeats
            self.coverage_proj = Linear(1, hidden, bias=False) if kind == "bahdanau" else None
            self.coverage_weight = nn.Parameter(torch.zeros(1)) if kind != "bahdanau" else None
        if kind == "general":
            self.key_proj = Linear(hidden, hidden, bias=False)
        elif kind == "bahdanau":
            self.key_proj = Linear(hidden, hidden, bias=False)
            self.query_proj = Linear(hidden, hidden, bias=True)
            self.v = Linear(hidden, 1, bias=False)
        elif kind != "dot":
            raise ValueError(f"unknown attention {kind!r} (valid: dot, general, bahdanau)")

    def precompute(self, memory: torch.Tensor) -> torch.Tensor:
        """Keys for every source position. Shape: memory (B, S, H) -> (B, S, H)."""
        return memory if self.kind == "dot" else self.key_proj(memory)

    def forward(
        self, query: torch.Tensor, keys: torch.Tensor, memory: torch.Tensor, src_mask: torch.Tensor,
        coverage: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Context vector and weights for one step; `coverage` (the summed earlier weights) is a
        feature of the additive score, a learned scaled term of the multiplicative ones.

        Shape: query (B, H), keys (B, S, H), memory (B, S, H), src_mask (B, S), coverage (B, S)
            -> context (B, H), weights (B, S)
        """
        if self.kind == "bahdanau":
            summed = keys + self.query_proj(query).unsqueeze(1)  # (B, S, H)
            if coverage is not None:
                summed = summed + self.coverage_proj(coverage.unsqueeze(2).to(summed.dtype))
            scores = self.v(torch.tanh(summed)).squeeze(2)  # (B, S)
        else:
            scores = torch.bmm(keys, query.unsqueeze(2)).squeeze(2)  # (B, S)
            if coverage is not None:
                scores = scores + self.coverage_weight * coverage
        scores = scores.masked_fill(~src_mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)  # (B, S)
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, H)
        return context, weights
