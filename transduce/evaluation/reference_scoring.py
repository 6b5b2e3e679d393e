"""Teacher-forced scoring of references: the NLL behind dev loss and perplexity."""
from __future__ import annotations

from typing import Iterable

import torch

from transduce.data.batching import Example, collate, token_batches
from transduce.kernels import label_smoothed_nll


@torch.inference_mode()
def reference_nll(model, examples: Iterable[Example], batch_tokens: int, device="cpu") -> tuple[float, int]:
    """Summed negative log-likelihood of the references and their token count (EOS included)."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    try:
        for group in token_batches(examples, batch_tokens, shuffle=False):
            batch = collate(group).to(device)
            scores, _ = model.training_scores(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in,
                                              batch.tgt_mask, batch.src_ext)  # (N, V), normalised by the loss
            _, nll = label_smoothed_nll(scores, batch.gold, batch.tgt_mask, 0.0)
            total += float(nll)
            tokens += batch.num_tgt_tokens
    finally:
        model.train(was_training)
    return total, tokens
