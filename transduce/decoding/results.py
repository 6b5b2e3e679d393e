"""What a search returns for one source sentence."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from transduce.decoding.scoring import normalise


@dataclass
class Hypothesis:
    """One output: token ids without BOS/EOS, its (normalised) score and raw log-probability."""

    tokens: list[int]
    score: float
    log_prob: float


def hypotheses_from_buffers(
    out: torch.Tensor, total: torch.Tensor, lengths: torch.Tensor, length_penalty: str
) -> list[Hypothesis]:
    """One hypothesis per row of the buffers a one-row-per-sentence search fills.

    Shape: out (B, L) tokens (EOS where ended), total (B,) summed log-probs, lengths (B,) tokens incl. EOS
    """
    out, total, lengths = out.tolist(), total.tolist(), lengths.tolist()
    return [
        Hypothesis(row[: n - 1], normalise(score, n, length_penalty), score)
        for row, score, n in zip(out, total, lengths)
    ]
