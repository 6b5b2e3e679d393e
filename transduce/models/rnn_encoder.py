"""Multi-layer, optionally bidirectional RNN encoder over padded batches, without packing.

Each direction of each layer is torch's fused single-layer RNN run over the whole padded
batch, which is much faster on CPU than packed sequences. Padding is handled by where it
sits: the forward direction reads real tokens first (pads come after and are never used);
the backward direction reads each sequence reversed within its own length, so it too sees
real tokens before pads. Final states are read at each sequence's own last position.
"""
from __future__ import annotations

import torch
from torch import nn

from transduce.kernels import Dropout


def reverse_within_length(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """Index that reverses each row's first `length` positions and leaves pads in place.

    Shape: lengths (B,) -> (B, S) long
    """
    positions = torch.arange(width, device=lengths.device).unsqueeze(0)  # (1, S)
    flipped = lengths.unsqueeze(1) - 1 - positions  # (B, S)
    return torch.where(flipped >= 0, flipped, positions)


class RNNEncoder(nn.Module):
    """Embedded source (B, S, E) -> states (B, S, H) and each layer's final state (B, H)."""

    def __init__(self, kind: str, input_size: int, hidden: int, layers: int, bidirectional: bool, dropout: float):
        super().__init__()
        rnn_cls = nn.LSTM if kind == "lstm" else nn.GRU
        size = hidden // 2 if bidirectional else hidden
        self.bidirectional = bidirectional
        self.forward_rnns = nn.ModuleList(
            rnn_cls(input_size if i == 0 else hidden, size, batch_first=True) for i in range(layers)
        )
        self.backward_rnns = nn.ModuleList(
            rnn_cls(input_size if i == 0 else hidden, size, batch_first=True) for i in range(layers)
        ) if bidirectional else None
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Shape: x (B, S, E), lengths (B,) -> memory (B, S, H), finals: per layer (B, H)."""
        B, S, _ = x.shape
        lengths = lengths.to(x.device)
        last = (lengths - 1).view(B, 1, 1)  # the final position of each sequence
        reverse = reverse_within_length(lengths, S).unsqueeze(2) if self.bidirectional else None  # (B, S, 1)
        finals = []
        for i, fwd in enumerate(self.forward_rnns):
            if i > 0:
                x = self.dropout(x)
            out, _ = fwd(x)  # (B, S, H/dirs)
            final = out.gather(1, last.expand(-1, 1, out.size(2))).squeeze(1)  # (B, H/dirs)
            if self.bidirectional:
                back, _ = self.backward_rnns[i](x.gather(1, reverse.expand(-1, -1, x.size(2))))
                back = back.gather(1, reverse.expand(-1, -1, back.size(2)))  # back to source order
                out = torch.cat([out, back], dim=2)  # (B, S, H)
                final = torch.cat([final, back[:, 0]], dim=1)  # the backward pass ends at position 0
            finals.append(final)
            x = out
        return x, finals
