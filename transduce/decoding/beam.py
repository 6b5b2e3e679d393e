"""Batched beam search: many sentences x beam in one tensor, incremental, finished hypotheses set aside.

Each step scores every extension of every live beam, keeps the 2K best per sentence, sets
aside those among the first K that end with EOS (as fairseq does), and continues with the K
best that do not. A sentence leaves the batch once it holds K finished hypotheses or reaches
its length cap; the decoder state follows the survivors through `select` only.
"""
from __future__ import annotations

import torch

from transduce.constants import BOS, EOS
from transduce.decoding.results import Hypothesis
from transduce.decoding.scoring import constrain, normalise


@torch.inference_mode()
def beam_search(
    model, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, caps: torch.Tensor,
    beam: int = 5, nbest: int = 1, length_penalty: str = "avg", min_length: int = 0,
) -> list[list[Hypothesis]]:
    """The `nbest` best hypotheses of each sentence, best first.

    Shape: src, src_mask (B, S); src_lengths, caps (B,)
    """
    B, K, device = src.size(0), beam, src.device
    enc = model.encode(src, src_mask, src_lengths)
    enc = enc.select(torch.arange(B, device=device).repeat_interleave(K))  # (B*K, ...)
    state = model.init_state(enc)
    sentences = list(range(B))  # original sentence of each live group of K rows
    live_caps = caps.to(device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: only the first may extend
    history = torch.empty((B * K, 0), dtype=torch.long, device=device)
    prev = torch.full((B * K,), BOS, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    t = 0
    while sentences:
        n = len(sentences)
        lp, state = model.decode_step(prev, enc, state)  # (n*K, V)
        V = lp.size(-1)
        at_cap = (live_caps <= t).repeat_interleave(K)
        lp = constrain(lp.float(), t, min_length, at_cap)
        candidates = (scores.unsqueeze(2) + lp.view(n, K, V)).view(n, K * V)
        top_scores, top_ids = candidates.topk(min(2 * K, K * V), dim=1)  # (n, 2K)
        top_beams, top_tokens = top_ids // V, top_ids % V
        is_eos = top_tokens.eq(EOS) & torch.isfinite(top_scores)

        # set aside hypotheses that end here, among the first K candidates only
        ended = is_eos[:, :K].nonzero().tolist()
        if ended:
            ended_rows = history[[i * K + int(top_beams[i, r]) for i, r in ended]].tolist()
            ended_scores = top_scores[[i for i, _ in ended], [r for _, r in ended]].tolist()
            for (i, _), tokens, total in zip(ended, ended_rows, ended_scores):
                finished[sentences[i]].append(
                    Hypothesis(tokens, normalise(total, len(tokens) + 1, length_penalty), total)
                )

        # continue with the K best candidates that do not end
        live_scores = top_scores.masked_fill(is_eos, float("-inf"))
        scores, pick = live_scores.topk(K, dim=1)  # (n, K)
        beams = top_beams.gather(1, pick)
        tokens = top_tokens.gather(1, pick)
        t += 1

        alive = torch.isfinite(scores[:, 0]).tolist()
        keep = [i for i in range(n) if alive[i] and len(finished[sentences[i]]) < K]
        if not keep:
            break
        keep_t = torch.tensor(keep, device=device)
        rows = (keep_t.unsqueeze(1) * K + beams[keep_t]).view(-1)  # (n'*K,) surviving rows
        history = torch.cat([history[rows], tokens[keep_t].view(-1, 1)], dim=1)
        state = state.select(rows)
        if len(keep) < n:
            enc = enc.select((keep_t.unsqueeze(1) * K + torch.arange(K, device=device)).view(-1))
            sentences = [sentences[i] for i in keep]
            live_caps = live_caps[keep_t]
        scores = scores[keep_t]
        prev = tokens[keep_t].view(-1)
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]
