"""What a search returns for one source sentence, and the buffers searches fill to build it."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from transduce.decoding.scoring import normalise


@dataclass
class Hypothesis:
    """One output: token ids without BOS/EOS, its (normalised) score and raw log-probability.

    `attention`, when asked for and the model provides it, holds one row of weights over the
    source's real positions per generated token, the EOS step included:
    (len(tokens) + 1) x source length.
    """

    tokens: list[int]
    score: float
    log_prob: float
    attention: list[list[float]] | None = None


class StepAttention:
    """Attention weights of a one-row-per-sentence search, recorded step by step and put
    together per sentence at the end.

    Rows join and leave the running batch, so each step records which sentence and which
    output position each of its rows is; nothing is copied to the host before the end.
    """

    def __init__(self) -> None:
        self.steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.available = True  # False once a step came without weights (the model has none)

    def record(self, sentences: torch.Tensor, positions: torch.Tensor, weights: torch.Tensor | None) -> None:
        """Shape: sentences, positions (n,) long; weights (n, S) over the batch's source width"""
        if weights is None:
            self.available = False
        elif self.available:
            self.steps.append((sentences, positions, weights.float()))

    def per_sentence(self, B: int, src_lengths: torch.Tensor) -> list[list[list[float]]] | None:
        """For each of the B sentences, its rows cut to its source length; None without weights.

        Shape: src_lengths (B,)
        """
        if not self.available or not self.steps:
            return None
        width = max(w.size(1) for _, _, w in self.steps)
        sentences = torch.cat([s for s, _, _ in self.steps])  # (M,)
        positions = torch.cat([p for _, p, _ in self.steps])
        weights = torch.cat([torch.nn.functional.pad(w, (0, width - w.size(1))) for _, _, w in self.steps])  # (M, S)
        order = (sentences * (int(positions.max()) + 1) + positions).argsort()
        counts = torch.bincount(sentences, minlength=B).tolist()
        rows = weights[order].cpu().split(counts)
        return [r[:, :n].tolist() for r, n in zip(rows, src_lengths.tolist())]


def hypotheses_from_buffers(
    out: torch.Tensor, total: torch.Tensor, lengths: torch.Tensor, length_penalty: str, length_alpha: float = 0.6,
    attention: list[list[list[float]]] | None = None,
) -> list[Hypothesis]:
    """One hypothesis per row of the buffers a one-row-per-sentence search fills.

    Shape: out (B, L) tokens (EOS where ended), total (B,) summed log-probs, lengths (B,) tokens incl. EOS
    """
    out, total, lengths = out.tolist(), total.tolist(), lengths.tolist()
    attention = attention or [None] * len(out)
    return [
        Hypothesis(row[: n - 1], normalise(score, n, length_penalty, length_alpha), score, weights)
        for row, score, n, weights in zip(out, total, lengths, attention)
    ]
