"""The training loss of one batch as a module, so that DistributedDataParallel can wrap it
(DDP synchronises the gradients of whatever its wrapped module's forward computed)."""
from __future__ import annotations

import torch

from transduce.data.batching import Batch
from transduce.kernels import label_smoothed_nll, linear_cross_entropy

AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingObjective(torch.nn.Module):
    """forward(batch) -> (summed smoothed loss, summed NLL) over the batch's target tokens."""

    def __init__(self, model: torch.nn.Module, smoothing: float, coverage_weight: float, precision: str):
        super().__init__()
        self.model, self.smoothing, self.coverage_weight = model, smoothing, coverage_weight
        self.autocast_dtype = AUTOCAST[precision]

    def forward(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """A model whose output is a plain linear map + softmax gets the fused projection-and-loss
        (the (N, V) logits never materialise); others (source prior, copying) give their scores,
        copy models are scored on the extended ids, plus the weighted coverage loss."""
        projection = self.model.output_projection()
        device_type = batch.src.device.type
        with torch.autocast(device_type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            if projection is not None:
                features = self.model.features(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in,
                                               batch.tgt_mask)  # (N, H)
            else:
                scores, auxiliary = self.model.training_scores(batch.src, batch.src_mask, batch.src_lengths,
                                                               batch.tgt_in, batch.tgt_mask, batch.src_ext)
        if projection is not None:
            if self.autocast_dtype is not None:
                # a final layer norm gives float32 under autocast, and the output layer's three products
                # would run in float32 (a third of a bfloat16 Transformer step on the CPU): they run in
                # the mixed precision, as autocast runs every other linear map; softmax and loss stay float32
                features = features.to(self.autocast_dtype)
            return linear_cross_entropy(features, projection.weight, projection.bias,
                                        batch.tgt_out[batch.tgt_mask], self.smoothing)
        loss, nll = label_smoothed_nll(scores, batch.gold, batch.tgt_mask, self.smoothing)
        if auxiliary is not None:
            loss = loss + self.coverage_weight * auxiliary.float()
        return loss, nll
