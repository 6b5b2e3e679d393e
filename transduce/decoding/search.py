"""Decode many examples: sentence batches of similar length, greedy or beam, outputs in input order."""
from __future__ import annotations

from typing import Sequence

import torch

from transduce.config import DecodeConfig
from transduce.data.batching import Example, collate, sentence_batches
from transduce.decoding.beam import beam_search
from transduce.decoding.greedy import greedy_search
from transduce.decoding.results import Hypothesis
from transduce.decoding.sampling import sample_search
from transduce.decoding.scoring import max_lengths


def decode_examples(
    model, examples: Sequence[Example], cfg: DecodeConfig, *, nbest: int = 1, device: str | torch.device = "cpu",
    attention: bool = False,
) -> list[list[Hypothesis]]:
    """n-best lists for each example, in the order given. Beam 1 is greedy search; with
    cfg.sample, n independent samples per example (reproducible under cfg.seed). With
    `attention`, each hypothesis carries its attention weights (when the model has them)."""
    results: list[list[Hypothesis]] = [[] for _ in examples]
    position = {id(ex): i for i, ex in enumerate(examples)}
    greedy = cfg.beam == 1 and nbest == 1 and not cfg.sample
    generator = torch.Generator(device=device).manual_seed(cfg.seed) if cfg.sample else None
    common = dict(length_penalty=cfg.length_penalty, length_alpha=cfg.length_alpha, min_length=cfg.min_length,
                  no_repeat_ngram=cfg.no_repeat_ngram, suppress_unk=cfg.suppress_unk, attention=attention)
    # greedy streams every sentence through one running batch of at most batch_size rows
    groups = [sorted(examples, key=lambda e: len(e.src), reverse=True)] if greedy else \
        sentence_batches(list(examples), cfg.batch_size)
    was_training = model.training
    model.eval()
    try:
        for group in groups:
            if not group:
                continue
            batch = collate(group).to(device)
            caps = max_lengths(batch.src_lengths, cfg.max_length, cfg.max_length_ratio)
            if greedy:
                hyps = [[h] for h in greedy_search(model, batch.src, batch.src_mask, batch.src_lengths, caps,
                                                   max_rows=cfg.batch_size, src_ext=batch.src_ext, **common)]
            elif cfg.sample:
                repeat = torch.arange(batch.size, device=batch.src.device).repeat_interleave(nbest)
                on_cpu = repeat.cpu()
                samples = sample_search(model, batch.src[repeat], batch.src_mask[repeat], batch.src_lengths[on_cpu],
                                        caps[on_cpu], temperature=cfg.temperature, top_k=cfg.top_k,
                                        top_p=cfg.top_p, generator=generator,
                                        src_ext=None if batch.src_ext is None else batch.src_ext[repeat], **common)
                hyps = [sorted(samples[i * nbest:(i + 1) * nbest], key=lambda h: -h.score) for i in range(batch.size)]
            else:
                hyps = beam_search(model, batch.src, batch.src_mask, batch.src_lengths, caps,
                                   beam=max(cfg.beam, nbest), nbest=nbest, src_ext=batch.src_ext, **common)
            for ex, h in zip(group, hyps):
                results[position[id(ex)]] = h
    finally:
        model.train(was_training)
    return results
