"""Greedy search: the most probable token at each step, one incremental step per token."""
from __future__ import annotations

import torch

from transduce.constants import BOS, EOS
from transduce.decoding.results import Hypothesis
from transduce.decoding.scoring import constrain, normalise


@torch.inference_mode()
def greedy_search(
    model, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, caps: torch.Tensor,
    length_penalty: str = "avg", min_length: int = 0,
) -> list[Hypothesis]:
    """Decode a batch; finished sentences leave the batch so later steps cost less.

    Shape: src, src_mask (B, S); src_lengths, caps (B,)
    """
    B, device = src.size(0), src.device
    enc = model.encode(src, src_mask, src_lengths)
    state = model.init_state(enc)
    caps = caps.to(device)
    rows = torch.arange(B, device=device)  # original sentence of each live row
    out = torch.full((B, int(caps.max()) + 1), EOS, dtype=torch.long, device=device)
    total = torch.zeros(B, dtype=torch.float64, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)  # generated tokens incl. EOS
    prev = torch.full((B,), BOS, dtype=torch.long, device=device)
    live_caps = caps
    t = 0
    while True:
        lp, state = model.decode_step(prev, enc, state)  # (n, V)
        lp = constrain(lp.float(), t, min_length, live_caps <= t)
        best, tok = lp.max(dim=-1)  # (n,)
        out[rows, t] = tok
        total[rows] += best.double()
        t += 1
        ended = tok.eq(EOS)
        if bool(ended.any()):
            lengths[rows[ended]] = t
            keep = (~ended).nonzero().flatten()
            if not keep.numel():
                break
            rows, live_caps, tok = rows[keep], live_caps[keep], tok[keep]
            enc, state = enc.select(keep), state.select(keep)
        prev = tok
    out, total, lengths = out.tolist(), total.tolist(), lengths.tolist()
    return [
        Hypothesis(out[r][: lengths[r] - 1], normalise(total[r], lengths[r], length_penalty), total[r])
        for r in range(B)
    ]
