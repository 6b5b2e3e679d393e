"""Greedy search: the most probable token at each step, one incremental step per token.

With `max_rows`, the batch runs as a stream: at most `max_rows` sentences decode at once, and
whenever half of them have finished, the next sentences are encoded and join the running
batch (their encoder outputs and states are concatenated in through `cat`). The long tail of
a batch, where a few sentences keep going while the rest wait, disappears. Each row keeps
its sentence's index, so outputs (and, when asked, attention weights) land in per-sentence
buffers whichever rows come and go.
"""
from __future__ import annotations

import torch

from transduce.constants import BOS, EOS
from transduce.decoding.results import (
    Hypothesis,
    StepAttention,
    hypotheses_from_buffers,
)
from transduce.decoding.scoring import constrain

DROP_MULTIPLE = 8  # finished rows leave the batch by this many at a time


@torch.inference_mode()
def greedy_search(
    model, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, caps: torch.Tensor,
    length_penalty: str = "avg", min_length: int = 0, max_rows: int | None = None, *, length_alpha: float = 0.6,
    no_repeat_ngram: int = 0, suppress_unk: bool = False, attention: bool = False,
    src_ext: torch.Tensor | None = None,
) -> list[Hypothesis]:
    """Decode a batch; finished sentences leave it, so later steps cost less.

    Sentences enter in row order (sort them by length, longest first, for little padding).
    Copy models read `src_ext`, the extended ids of the source tokens.
    Shape: src, src_mask, src_ext (B, S); src_lengths, caps (B,)
    """
    B, device = src.size(0), src.device
    max_rows = max_rows or B
    caps = caps.to(device)
    out = torch.full((B, int(caps.max()) + 1), EOS, dtype=torch.long, device=device)
    total = torch.zeros(B, dtype=torch.float64, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)  # generated tokens incl. EOS
    rows = torch.empty(0, dtype=torch.long, device=device)  # original sentence of each live row
    steps = torch.empty(0, dtype=torch.long, device=device)  # tokens generated so far, per live row
    prev = torch.empty(0, dtype=torch.long, device=device)
    alive = torch.empty(0, dtype=torch.bool, device=device)  # finished rows wait to be dropped together
    enc = state = None
    admitted = iterations = 0
    recorder = StepAttention() if attention else None
    while True:
        room = max_rows - rows.numel()
        if admitted < B and room > 0 and (not rows.numel() or room >= max_rows // 2):
            new = torch.arange(admitted, min(B, admitted + room), device=device)
            admitted += new.numel()
            width = int(src_lengths[new.cpu()].max())
            new_enc = model.encode(src[new, :width], src_mask[new, :width], src_lengths[new.cpu()],
                                   None if src_ext is None else src_ext[new, :width])
            new_state = model.init_state(new_enc).reserve(int(caps[new].max()) + 1)  # + EOS
            enc, state = (new_enc, new_state) if enc is None else (enc.cat(new_enc), state.cat(new_state))
            rows = torch.cat([rows, new])
            steps = torch.cat([steps, torch.zeros_like(new)])
            prev = torch.cat([prev, torch.full_like(new, BOS)])
            alive = torch.cat([alive, torch.ones_like(new, dtype=torch.bool)])
        lp, state = model.decode_step(prev, enc, state)  # (n, V)
        history = out[rows, :iterations] if no_repeat_ngram else None  # (n, iterations), each row's first `steps`
        lp = constrain(lp.float(), steps, min_length, caps[rows] <= steps, suppress_unk=suppress_unk,
                       history=history, no_repeat_ngram=no_repeat_ngram)
        best, tok = lp.max(dim=-1)  # (n,)
        live_rows, live_steps = rows[alive], steps[alive]
        if recorder is not None:
            recorder.record(live_rows, live_steps, None if state.attention is None else state.attention[alive])
        out[live_rows, live_steps] = tok[alive]
        total[live_rows] += best[alive].double()
        steps = steps + 1
        iterations += 1
        ended = tok.eq(EOS) & alive
        if bool(ended.any()):
            lengths[rows[ended]] = steps[ended]
            alive = alive & ~ended
            dead = rows.numel() - int(alive.sum())
            # drop finished rows by multiples of 8 (all of them at the end): the batch then takes
            # few distinct sizes, so kernels built for one size serve many steps
            drop = dead if dead == rows.numel() else dead - dead % DROP_MULTIPLE
            if drop:
                finished = (~alive).nonzero().flatten()
                kept_dead = finished[: dead - drop]
                keep = torch.sort(torch.cat([alive.nonzero().flatten(), kept_dead])).values
                rows, steps, tok, alive = rows[keep], steps[keep], tok[keep], alive[keep]
                if not rows.numel() and admitted >= B:
                    break
                enc, state = enc.select(keep), state.reorder(keep)
        prev = tok
    weights_by_sentence = recorder.per_sentence(B, src_lengths) if recorder is not None else None
    return hypotheses_from_buffers(out, total, lengths, length_penalty, length_alpha, weights_by_sentence)
