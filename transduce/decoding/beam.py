"""Batched beam search: many sentences x beam in one tensor, incremental, finished hypotheses set aside.

Each step scores every extension of every live beam, keeps the 2K best per sentence, sets
aside those among the first K that end with EOS (as fairseq does), and continues with the K
best that do not. A sentence leaves the batch once it holds K finished hypotheses or reaches
its length cap; the decoder state follows the survivors (`reorder`), and so do the tokens
(and, when asked, the attention weights) each live beam has generated. The first step scores
one row per sentence, its K beams being identical until they extend: K times fewer rows for
one step of a short output's dozen or two.
"""
from __future__ import annotations

import torch

from transduce.constants import BOS, EOS
from transduce.decoding.results import Hypothesis
from transduce.decoding.scoring import constrain, normalise


@torch.inference_mode()
def beam_search(
    model, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, caps: torch.Tensor,
    beam: int = 5, nbest: int = 1, length_penalty: str = "avg", min_length: int = 0, *, length_alpha: float = 0.6,
    no_repeat_ngram: int = 0, suppress_unk: bool = False, attention: bool = False,
    src_ext: torch.Tensor | None = None,
) -> list[list[Hypothesis]]:
    """The `nbest` best hypotheses of each sentence, best first.

    Copy models read `src_ext`, the extended ids of the source tokens.
    Shape: src, src_mask, src_ext (B, S); src_lengths, caps (B,)
    """
    B, K, device = src.size(0), beam, src.device
    first_enc = model.encode(src, src_mask, src_lengths, src_ext)
    enc = first_enc.repeat_rows(K)  # (B*K, ...): the K beams of a sentence are consecutive rows
    # the first step runs one row per sentence (its K beams are identical until they extend)
    state = model.init_state(first_enc)
    sentences = list(range(B))  # original sentence of each live group of K rows
    live_caps = caps.to(device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # all beams start identical: only the first may extend
    history = torch.empty((B * K, 0), dtype=torch.long, device=device)
    weights = None  # (n*K, t, S) attention weights of each live beam's tokens, when asked
    src_width = src_lengths.tolist()
    prev = torch.full((B,), BOS, dtype=torch.long, device=device)
    finished: list[list[Hypothesis]] = [[] for _ in range(B)]
    t = 0
    while sentences:
        n = len(sentences)
        lp, state = model.decode_step(prev, enc if t else first_enc, state)  # (n*R, V), R = K, or 1 at first
        V, R = lp.size(-1), lp.size(0) // n
        at_cap = (live_caps <= t).repeat_interleave(R)
        lp = constrain(lp.float(), t, min_length, at_cap, suppress_unk=suppress_unk, history=history if t else None,
                       no_repeat_ngram=no_repeat_ngram)
        step_weights = state.attention.float() if attention and state.attention is not None else None  # (n*R, S)
        if step_weights is not None and R < K:
            step_weights = step_weights.repeat_interleave(K, dim=0)  # (n*K, S)
        if step_weights is not None and weights is None:
            weights = step_weights.new_empty((n * K, 0, step_weights.size(1)))
        candidates = (scores.unsqueeze(2) + lp.view(n, R, V)).view(n, K * V)
        top_scores, top_ids = candidates.topk(min(2 * K, K * V), dim=1)  # (n, 2K)
        top_beams, top_tokens = top_ids // V, top_ids % V
        is_eos = top_tokens.eq(EOS) & torch.isfinite(top_scores)

        # set aside hypotheses that end here, among the first K candidates only
        ended = is_eos[:, :K].nonzero().tolist()
        if ended:
            ended_at = [i * K + int(top_beams[i, r]) for i, r in ended]
            ended_scores = top_scores[[i for i, _ in ended], [r for _, r in ended]].tolist()
            ended_weights = [None] * len(ended)
            if step_weights is not None:  # the beam's rows, then the EOS step's row
                ended_weights = torch.cat([weights[ended_at], step_weights[ended_at].unsqueeze(1)], dim=1).cpu()
            for (i, _), tokens, total, w in zip(ended, history[ended_at].tolist(), ended_scores, ended_weights):
                j = sentences[i]
                finished[j].append(Hypothesis(tokens, normalise(total, len(tokens) + 1, length_penalty, length_alpha),
                                              total, None if w is None else w[:, : src_width[j]].tolist()))

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
        if step_weights is not None:
            weights = torch.cat([weights[rows], step_weights[rows].unsqueeze(1)], dim=1)  # (n'*K, t, S)
        state = state.reorder(rows if R == K else rows // K)  # this step's state is not needed again
        if len(keep) < n:
            enc = enc.select((keep_t.unsqueeze(1) * K + torch.arange(K, device=device)).view(-1))
            sentences = [sentences[i] for i in keep]
            live_caps = live_caps[keep_t]
        scores = scores[keep_t]
        prev = tokens[keep_t].view(-1)
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]
