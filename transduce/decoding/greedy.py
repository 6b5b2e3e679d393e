"""Greedy search: the most probable token at each step, one incremental step per token.

With `max_rows`, the batch runs as a stream: at most `max_rows` sentences decode at once, and
as sentences finish, the next ones are encoded and take their rows (`put` on the encoder output
and the state: nothing else is copied, and a Transformer's newcomers fill their rows' caches
from the first column). The long tail of a batch, where a few sentences keep going while the
rest wait, disappears. Each row keeps its sentence's index, so outputs (and, when asked,
attention weights) land in per-sentence buffers whichever rows come and go.
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

DROP_MULTIPLE = 8  # once every sentence has started, finished rows leave the batch by this many at a time
REFILL = 8  # until then, the next sentences start once this many rows (an eighth of fewer) have finished


def _start(model, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor,
           src_ext: torch.Tensor | None, caps: torch.Tensor, new: torch.Tensor):
    """Encode sentences `new` of the batch and make their fresh decoder states, with room for
    their longest output.
    Shape: src, src_mask, src_ext (B, S); src_lengths, caps (B,); new (n,)
    """
    width = int(src_lengths[new.cpu()].max())
    new_enc = model.encode(src[new, :width], src_mask[new, :width], src_lengths[new.cpu()],
                           None if src_ext is None else src_ext[new, :width])
    return new_enc, model.init_state(new_enc).reserve(int(caps[new].max()) + 1)  # + EOS


def _rows_to_drop(finished: int, rows: int, expired: bool) -> int:
    """How many of the `finished` rows leave the batch once no sentence is left to take them.

    All of them at the end, or once one would outgrow its reserved room; otherwise a multiple of
    DROP_MULTIPLE: the batch then takes few distinct sizes, so kernels built for one size serve
    many steps."""
    return finished if finished == rows or expired else finished - finished % DROP_MULTIPLE


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
    max_rows = min(max_rows or B, B)
    caps = caps.to(device)
    out = torch.full((B, int(caps.max()) + 1), EOS, dtype=torch.long, device=device)
    total = torch.zeros(B, dtype=torch.float64, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)  # generated tokens incl. EOS
    rows = torch.empty(0, dtype=torch.long, device=device)  # original sentence of each row
    steps = torch.empty(0, dtype=torch.long, device=device)  # tokens generated so far, per row
    prev = torch.empty(0, dtype=torch.long, device=device)
    alive = torch.empty(0, dtype=torch.bool, device=device)  # finished rows wait to be replaced or dropped
    enc = state = None
    admitted = 0
    recorder = StepAttention() if attention else None
    refill = max(1, min(REFILL, max_rows // 8))

    while True:
        free = (~alive).nonzero().flatten()  # rows whose sentence has finished
        # a finished row still feeds a token per step: it leaves before outgrowing its reserved room
        expired = bool((steps[free] > caps[rows[free]]).any())
        if admitted < B and (not rows.numel() or free.numel() >= refill or expired):
            if not rows.numel():  # the first sentences
                new = torch.arange(max_rows, device=device)
                enc, state = _start(model, src, src_mask, src_lengths, src_ext, caps, new)
                rows, steps, alive = new, torch.zeros_like(new), torch.ones_like(new, dtype=torch.bool)
                prev = torch.full_like(new, BOS)
            else:  # the next sentences take the rows of finished ones
                slots = free[: B - admitted]
                new = torch.arange(admitted, admitted + slots.numel(), device=device)
                new_enc, new_state = _start(model, src, src_mask, src_lengths, src_ext, caps, new)
                enc, state = enc.put(slots, new_enc), state.put(slots, new_state)
                rows, steps = rows.index_put((slots,), new), steps.index_fill(0, slots, 0)
                alive, prev = alive.index_fill(0, slots, True), prev.index_fill(0, slots, BOS)
            admitted += new.numel()
        elif admitted >= B and free.numel():  # no sentence left to take their rows: drop them
            drop = _rows_to_drop(free.numel(), rows.numel(), expired)
            if drop == rows.numel():
                break
            if drop:
                keep = torch.sort(torch.cat([alive.nonzero().flatten(), free[: free.numel() - drop]])).values
                rows, steps, prev, alive = rows[keep], steps[keep], prev[keep], alive[keep]
                enc, state = enc.select(keep), state.reorder(keep)
        lp, state = model.decode_step(prev, enc, state)  # (n, V)
        history = out[rows, :int(steps.max())] if no_repeat_ngram else None  # (n, t), each row's first `steps`
        lp = constrain(lp.float(), steps, min_length, caps[rows] <= steps, suppress_unk=suppress_unk,
                       history=history, no_repeat_ngram=no_repeat_ngram)
        best, tok = lp.max(dim=-1)  # (n,)
        live_rows, live_steps = rows[alive], steps[alive]
        if recorder is not None:
            recorder.record(live_rows, live_steps, None if state.attention is None else state.attention[alive])
        out[live_rows, live_steps] = tok[alive]
        total[live_rows] += best[alive].double()
        steps = steps + 1
        ended = tok.eq(EOS) & alive
        if bool(ended.any()):
            lengths[rows[ended]] = steps[ended]
            alive = alive & ~ended
        prev = tok
    weights_by_sentence = recorder.per_sentence(B, src_lengths) if recorder is not None else None
    return hypotheses_from_buffers(out, total, lengths, length_penalty, length_alpha, weights_by_sentence)
