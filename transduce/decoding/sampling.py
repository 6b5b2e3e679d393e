"""Sampling: draw each next token from the model's distribution, sharpened by a temperature
and restricted to the top-k tokens and/or the smallest set holding top-p of the mass.

Runs on the same incremental steps as greedy and beam search; a seeded generator makes the
draws reproducible. Scores are the model's own (untempered, unrestricted) log-probabilities.
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


def restrict(log_probs: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Log-weights to sample from: tempered, with tokens outside top-k / top-p set to -inf.

    Shape: (N, V) -> (N, V)
    """
    # shifted so the best token scores 0, and the temperature kept above float32's smallest normal
    # number: any temperature, however small, leaves the best token finite (then it is greedy)
    scores = (log_probs - log_probs.max(dim=1, keepdim=True).values) / max(temperature, 1e-30)
    if 0 < top_k < scores.size(1):
        kth = scores.topk(top_k, dim=1).values[:, -1:]  # (N, 1)
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = scores.sort(dim=1, descending=True)
        probs = torch.softmax(sorted_scores, dim=1)
        mass_before = probs.cumsum(dim=1) - probs  # mass of the tokens ranked above each one
        drop_sorted = mass_before >= top_p
        drop_sorted[:, 0] = False  # the most probable token is always kept (even when top_p rounds to 0)
        drop = torch.zeros_like(drop_sorted).scatter(1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


@torch.inference_mode()
def sample_search(
    model, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, caps: torch.Tensor, *,
    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
    length_penalty: str = "avg", length_alpha: float = 0.6, min_length: int = 0, no_repeat_ngram: int = 0,
    suppress_unk: bool = False, attention: bool = False,
    src_ext: torch.Tensor | None = None,
) -> list[Hypothesis]:
    """One sample per sentence (copy models read `src_ext`, the extended source ids).
    Shape: src, src_mask, src_ext (B, S); src_lengths, caps (B,)"""
    B, device = src.size(0), src.device
    enc = model.encode(src, src_mask, src_lengths, src_ext)
    caps = caps.to(device)
    state = model.init_state(enc).reserve(int(caps.max()) + 1)  # + EOS
    rows = torch.arange(B, device=device)
    out = torch.full((B, int(caps.max()) + 1), EOS, dtype=torch.long, device=device)
    total = torch.zeros(B, dtype=torch.float64, device=device)
    lengths = torch.zeros(B, dtype=torch.long, device=device)
    prev = torch.full((B,), BOS, dtype=torch.long, device=device)
    recorder = StepAttention() if attention else None
    t = 0
    while True:
        lp, state = model.decode_step(prev, enc, state)  # (n, V)
        lp = constrain(lp.float(), t, min_length, caps[rows] <= t, suppress_unk=suppress_unk,
                       history=out[rows, :t] if no_repeat_ngram else None, no_repeat_ngram=no_repeat_ngram)
        weights = torch.softmax(restrict(lp, temperature, top_k, top_p), dim=1)
        tok = torch.multinomial(weights, 1, generator=generator).squeeze(1)  # (n,)
        if recorder is not None:
            recorder.record(rows, torch.full_like(rows, t), state.attention)
        out[rows, t] = tok
        total[rows] += lp.gather(1, tok.unsqueeze(1)).squeeze(1).double()
        t += 1
        ended = tok.eq(EOS)
        if bool(ended.any()):
            lengths[rows[ended]] = t
            keep = (~ended).nonzero().flatten()
            if not keep.numel():
                break
            rows, tok = rows[keep], tok[keep]
            enc, state = enc.select(keep), state.reorder(keep)
        prev = tok
    weights_by_sentence = recorder.per_sentence(B, src_lengths) if recorder is not None else None
    return hypotheses_from_buffers(out, total, lengths, length_penalty, length_alpha, weights_by_sentence)
