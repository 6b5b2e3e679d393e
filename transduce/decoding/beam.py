"""Batched beam search: many sentences x beam in one tensor, incremental, finished hypotheses set aside.

Each step scores every extension of every live beam, keeps the 2K best per sentence, sets
aside those among the first K that end with EOS (as fairseq does), and continues with the K
best that do not. A sentence leaves the batch once it holds K finished hypotheses or reaches
its length cap; the decoder state follows the survivors, and so do the tokens (and, when
asked, the attention weights) each live beam has generated. The first step scores one row per
sentence, its K beams being identical until they extend: K times fewer rows for one step of a
short output's dozen or two.

Moving the caches is the largest cost after the products, so little moves: a surviving beam
keeps the slot (and the cache row) of the beam it extends whenever it is that beam's first
survivor, and the last sentences take the rows of those that finish; only the other rows are
copied, in place (`rearranged`). Candidates are ranked by blocks of the vocabulary
(`best_extensions`) rather than by a top-k over all K x V of them.
"""
from __future__ import annotations

import torch

from transduce.constants import BOS, EOS
from transduce.decoding.results import Hypothesis
from transduce.decoding.scoring import constrain, normalise


BLOCK = 64  # vocabulary entries per block in `best_extensions`


def best_extensions(scores: torch.Tensor, log_probs: torch.Tensor, count: int) -> tuple[torch.Tensor, ...]:
    """The `count` best extensions of each sentence's beams (beam score + the next token's
    log-probability), best first: their scores, beams and tokens.

    A full top-k over K x V candidates per sentence is the most expensive step of a search
    after the products. Instead, each beam's vocabulary is cut into blocks of BLOCK entries and
    only the `count` blocks with the best maxima are searched: every one of the `count` best
    extensions lies in one of them (a block left out has `count` blocks above it, each with an
    extension at least as good). The result is the same as the full top-k's, up to the order of
    equal scores.
    Shape: scores (n, K), log_probs (n * R, V) with R = K, or R = 1 when every sentence's beams
    are one row (the first step) -> (n, count) each
    """
    n, K = scores.shape
    R, V = log_probs.size(0) // n, log_probs.size(1)
    if V < 4 * BLOCK or count > R * -(-V // BLOCK):  # small vocabularies, fewer blocks than wanted: the plain top-k
        candidates = (scores.unsqueeze(2) + log_probs.view(n, R, V)).view(n, K * V)
        top_scores, top_ids = candidates.topk(count, dim=1)
        return top_scores, top_ids // V, top_ids % V
    whole, rest = divmod(V, BLOCK)
    maxima = log_probs[:, : whole * BLOCK].unflatten(1, (whole, BLOCK)).amax(dim=2)  # (n * R, blocks)
    if rest:
        maxima = torch.cat([maxima, log_probs[:, whole * BLOCK:].amax(dim=1, keepdim=True)], dim=1)
    blocks = maxima.size(1)
    best = (scores[:, :R].unsqueeze(2) + maxima.view(n, R, blocks)).view(n, R * blocks).topk(count, dim=1).indices
    beams, block = best // blocks, best % blocks  # (n, count)
    columns = block.unsqueeze(2) * BLOCK + torch.arange(BLOCK, device=scores.device)  # (n, count, BLOCK)
    rows = torch.arange(n, device=scores.device).unsqueeze(1) * R + beams
    entries = log_probs.reshape(-1)[rows.unsqueeze(2) * V + columns.clamp(max=V - 1)]
    entries = entries.masked_fill(columns >= V, float("-inf"))  # past the last block's end
    top_scores, at = (scores.gather(1, beams).unsqueeze(2) + entries).view(n, -1).topk(count, dim=1)
    picked = at // BLOCK
    return top_scores, beams.gather(1, picked), block.gather(1, picked) * BLOCK + at % BLOCK


def placed(keep: list[int], n: int) -> list[int]:
    """The new order of the sentences `keep` (positions among n): each stays at its position,
    unless that is past the new end; those fill the positions of the sentences that left."""
    m, kept = len(keep), set(keep)
    movers = iter(i for i in keep if i >= m)
    return [i if i in kept else next(movers) for i in range(m)]


def beam_slots(origins: torch.Tensor) -> torch.Tensor:
    """Which of its K surviving extensions each beam slot of a sentence takes: the first
    extension of beam j goes to slot j, so that the beam's cache stays in its row, and the
    others fill the slots of beams that had none, in order. Only those move (`rearranged`).
    Shape: origins (n, K), the beam each extension extends -> (n, K) an extension per slot
    """
    K = origins.size(1)
    order = torch.arange(K, device=origins.device)
    same = origins.unsqueeze(2) == origins.unsqueeze(1)  # (n, K, K)
    first = ~(same & (order.unsqueeze(1) > order)).any(dim=2)  # no earlier extension of the same beam
    extended = (origins.unsqueeze(2) == order).any(dim=1)  # (n, K): slot j's beam has an extension
    free = (extended.long() * K + order).argsort(dim=1)  # slots without one first, in order
    later = (~first).long().cumsum(dim=1) - 1  # rank of each extension that is not its beam's first
    slot = torch.where(first, origins, free.gather(1, later.clamp(min=0)))
    return torch.empty_like(slot).scatter_(1, slot, order.expand_as(slot))


def _set_aside(
    finished: list[list[Hypothesis]], ended: list[list[int]], sentences: list[int], K: int, top_scores: torch.Tensor,
    top_beams: torch.Tensor, history: torch.Tensor, weights: torch.Tensor | None, step_weights: torch.Tensor | None,
    src_width: list[int], length_penalty: str, length_alpha: float,
) -> None:
    """File the hypotheses that end at this step under their sentences in `finished`, scored.

    `ended`: the [live sentence, candidate] pairs whose candidate (among the first K) is EOS.
    Shape: top_scores, top_beams (n, 2K); history (n*K, t); weights (n*K, t, S), step_weights (n*K, S)
    """
    ended_at = [i * K + int(top_beams[i, r]) for i, r in ended]
    ended_scores = top_scores[[i for i, _ in ended], [r for _, r in ended]].tolist()
    ended_weights = [None] * len(ended)
    if step_weights is not None:  # the beam's rows, then the EOS step's row
        ended_weights = torch.cat([weights[ended_at], step_weights[ended_at].unsqueeze(1)], dim=1).cpu()
    for (i, _), tokens, total, w in zip(ended, history[ended_at].tolist(), ended_scores, ended_weights):
        j = sentences[i]
        finished[j].append(Hypothesis(tokens, normalise(total, len(tokens) + 1, length_penalty, length_alpha),
                                      total, None if w is None else w[:, : src_width[j]].tolist()))


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
        top_scores, top_beams, top_tokens = best_extensions(scores, lp, min(2 * K, K * V))  # (n, 2K) each
        is_eos = top_tokens.eq(EOS) & torch.isfinite(top_scores)

        # set aside hypotheses that end here, among the first K candidates only
        ended = is_eos[:, :K].nonzero().tolist()
        if ended:
            _set_aside(finished, ended, sentences, K, top_scores, top_beams, history, weights, step_weights,
                       src_width, length_penalty, length_alpha)

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
        placement = placed(keep, n)  # the old position of each sentence kept
        order = torch.tensor(placement, device=device)
        slots = beam_slots(beams[order]) if R == K else torch.arange(K, device=device).expand(len(keep), K)
        beams, tokens, scores = (x[order].gather(1, slots) for x in (beams, tokens, scores))
        rows = (order.unsqueeze(1) * K + beams).view(-1)  # (n'*K,) the row each surviving beam extends
        history = torch.cat([history[rows], tokens.view(-1, 1)], dim=1)
        if step_weights is not None:
            weights = torch.cat([weights[rows], step_weights[rows].unsqueeze(1)], dim=1)  # (n'*K, t, S)
        # this step's state is not needed again; after the first step, most rows stay where they are
        state = state.rearranged(rows) if R == K else state.reorder(rows // K)
        if len(keep) < n:
            enc = enc.rearranged((order.unsqueeze(1) * K + torch.arange(K, device=device)).view(-1))
            sentences = [sentences[i] for i in placement]
            live_caps = live_caps[order]
        prev = tokens.view(-1)
    return [sorted(hyps, key=lambda h: -h.score)[:nbest] for hyps in finished]
