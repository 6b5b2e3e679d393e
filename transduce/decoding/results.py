"""What a search returns for one source sentence."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Hypothesis:
    """One output: token ids without BOS/EOS, its (normalised) score and raw log-probability."""

    tokens: list[int]
    score: float
    log_prob: float
