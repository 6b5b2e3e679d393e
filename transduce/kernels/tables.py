"""Tables of projections computed once for every vocabulary entry and looked up when decoding.

A decoder step of an RNN projects its input token's embedding into the first layer's gates; when
decoding (no gradients, no dropout) the projection of every entry can be computed once and read
by index, so a step spends no product on its input token. The table is recomputed whenever one of
the weights it came from changes (data pointer and version counter); weights made under
`torch.inference_mode()` have no version counter to key on, so there, and with the fast paths
off, tokens are projected one by one.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from transduce.kernels import switch


class ProjectionTable:
    """`lookup(tokens, project, weights)`: project(all entries)[tokens], kept while `weights` stand."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.table: torch.Tensor | None = None

    @staticmethod
    def usable(weights: Sequence[torch.Tensor], training: bool) -> bool:
        """Whether a lookup may stand in for the projection now."""
        return switch.fast() and not training and not torch.is_grad_enabled() \
            and not any(w.is_inference() for w in weights)

    def lookup(self, tokens: torch.Tensor, project: Callable[[], torch.Tensor],
               weights: Sequence[torch.Tensor]) -> torch.Tensor:
        """Shape: tokens (...) -> (..., G); project() gives the (V, G) table."""
        key = tuple((w.data_ptr(), w._version) for w in weights)
        if self.key != key:
            self.table, self.key = project(), key
        return self.table[tokens]

    def forget(self) -> None:
        """Drop the table: an optimizer may change weights in place without moving their versions."""
        self.key = self.table = None
