"""Cross entropy over real (non-pad) target tokens, with label smoothing; with the fast paths on,
in fused passes.

The scores may be unnormalised logits or log-probabilities (a model whose output is already a
distribution, such as a copy mixture): the loss normalises them either way. The fused forward and
backward each read the (N, V) scores a small number of times instead of the many passes of
log_softmax + gather + mean and their backwards, which dominate training time at large V; the
fused output layer (`linear_cross_entropy`) never holds the whole (N, V) logits. With the fast
paths off both are `F.cross_entropy` over materialised logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from transduce.kernels import switch
from transduce.kernels.linear_maps import linear, weight_gradient


class _SmoothedCrossEntropy(torch.autograd.Function):
    """Sum over rows of (1 - eps) * (lse - s_gold) + eps * (lse - mean(s)), and of lse - s_gold."""

    @staticmethod
    def forward(ctx, scores: torch.Tensor, gold: torch.Tensor, smoothing: float):
        lse = torch.logsumexp(scores, dim=1)  # (N,)
        nll = lse - scores.gather(1, gold.unsqueeze(1)).squeeze(1)  # (N,)
        loss = nll if smoothing == 0 else (1.0 - smoothing) * nll + smoothing * (lse - scores.mean(dim=1))
        ctx.save_for_backward(scores, gold, lse)
        ctx.smoothing = smoothing
        return loss.sum(), nll.sum()

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, grad_nll: torch.Tensor):
        scores, gold, lse = ctx.saved_tensors
        eps, V = ctx.smoothing, scores.size(1)
        # d loss / d s = softmax(s) - (1 - eps) onehot(gold) - eps / V ; d nll / d s = softmax(s) - onehot(gold)
        total = grad_loss + grad_nll
        grad = torch.exp(scores - lse.unsqueeze(1)).mul_(total)  # (N, V)
        if eps:
            grad.sub_(grad_loss * eps / V)
        rows = torch.arange(scores.size(0), device=scores.device)
        grad[rows, gold] -= grad_loss * (1.0 - eps) + grad_nll
        return grad, None, None


def _plain_cross_entropy(scores: torch.Tensor, gold: torch.Tensor, smoothing: float
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """torch's own: the smoothed sum (differentiable) and the plain NLL sum (not)."""
    loss = F.cross_entropy(scores, gold, reduction="sum", label_smoothing=smoothing)
    nll = F.cross_entropy(scores.detach(), gold, reduction="sum") if smoothing else loss.detach()
    return loss, nll


def smoothed_cross_entropy(scores: torch.Tensor, gold: torch.Tensor, smoothing: float
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed smoothed loss and summed NLL of (N, V) scores against gold ids (N,)."""
    if not switch.fast():
        return _plain_cross_entropy(scores, gold, smoothing)
    return _SmoothedCrossEntropy.apply(scores, gold, smoothing)


def label_smoothed_nll(
    scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, smoothing: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed smoothed loss and summed plain NLL over the positions where mask is True.

    Smoothing spreads `smoothing` of the target mass uniformly over the vocabulary.
    Shape: scores (B, T, V), or (N, V) already restricted to the mask; target, mask (B, T)
        -> two scalars
    """
    rows = scores[mask] if scores.dim() == 3 else scores  # (N, V): pads never reach the loss
    if rows.dtype not in (torch.float32, torch.float64):
        rows = rows.float()  # half-precision scores: the loss itself runs in float32
    return smoothed_cross_entropy(rows, target[mask], smoothing)


class _LinearCrossEntropy(torch.autograd.Function):
    """Output projection + smoothed cross entropy, chunk by chunk, gradients computed on the way.

    The (N, V) logits never exist whole: each chunk of rows is projected, turned into its
    loss and its gradient in place, and multiplied back into the gradients of the features,
    weight and bias. Backward only scales those by the incoming gradient.
    """

    @staticmethod
    def forward(ctx, features, weight, bias, gold, smoothing: float, chunk_elements: int):
        N, V = features.size(0), weight.size(0)
        dtype = features.dtype  # bfloat16 under mixed precision: products in it, softmax in float32
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        w = weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        grad_features = torch.empty_like(features)
        grad_weight = torch.zeros(weight.shape, dtype=acc, device=weight.device)
        grad_bias = torch.zeros(V, dtype=acc, device=weight.device) if bias is not None else None
        loss = features.new_zeros((), dtype=acc)
        nll = features.new_zeros((), dtype=acc)
        step = max(1, chunk_elements // V)
        w_t = w.t().contiguous()  # (H, V): the features' gradient is a product with it
        for start in range(0, N, step):
            h, g = features[start:start + step], gold[start:start + step]
            rows = torch.arange(h.size(0), device=h.device)
            logits = linear(h, w, b).to(acc)  # (c, V)
            logits.sub_(logits.max(dim=1, keepdim=True).values)
            gold_logit = logits[rows, g]
            mean_logit = logits.mean(dim=1)
            probs = logits.exp_()  # in place: logits are not needed any more
            log_norm = probs.sum(dim=1, keepdim=True)
            probs.div_(log_norm)
            log_norm = log_norm.squeeze(1).log_()
            chunk_nll = log_norm - gold_logit
            nll += chunk_nll.sum()
            loss += ((1.0 - smoothing) * chunk_nll + smoothing * (log_norm - mean_logit)).sum()
            grad = probs  # d loss / d logits = softmax - (1 - eps) onehot - eps / V
            if smoothing:
                grad.sub_(smoothing / V)
            grad[rows, g] -= 1.0 - smoothing
            grad_bias is not None and grad_bias.add_(grad.sum(dim=0))
            grad = grad.to(dtype)
            grad_features[start:start + step] = linear(grad, w_t)
            grad_weight.add_(weight_gradient(grad, h).to(acc))
        ctx.save_for_backward(grad_features, grad_weight, grad_bias)
        ctx.has_bias = bias is not None
        ctx.weight_dtype = weight.dtype
        ctx.mark_non_differentiable(nll)
        return loss, nll

    @staticmethod
    def backward(ctx, grad_loss, _grad_nll):
        grad_features, grad_weight, grad_bias = ctx.saved_tensors
        grad_bias = grad_bias * grad_loss if ctx.has_bias else None
        return (grad_features * grad_loss.to(grad_features.dtype), (grad_weight * grad_loss).to(ctx.weight_dtype),
                grad_bias, None, None, None)


def linear_cross_entropy(
    features: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gold: torch.Tensor,
    smoothing: float, chunk_elements: int = 1 << 21,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed smoothed loss (differentiable) and summed NLL (not) of softmax(features W^T + b).

    Shape: features (N, H), weight (V, H), bias (V,), gold (N,) -> two scalars
    """
    if not switch.fast():
        logits = F.linear(features, weight.to(features.dtype), None if bias is None else bias.to(features.dtype))
        return _plain_cross_entropy(logits.float(), gold, smoothing)
    return _LinearCrossEntropy.apply(features, weight, bias, gold, smoothing, chunk_elements)
