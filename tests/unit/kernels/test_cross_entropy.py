"""Label-smoothed cross entropy over real target tokens."""
import math

import pytest
import torch
import torch.nn.functional as F

from transduce.kernels.cross_entropy import label_smoothed_nll


def _case():
    # B=2, T=3, V=4; the last position of row 1 is padding
    probs = torch.tensor([
        [[0.7, 0.1, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]],
        [[0.4, 0.3, 0.2, 0.1], [0.05, 0.05, 0.1, 0.8], [0.97, 0.01, 0.01, 0.01]],
    ], dtype=torch.float64)
    target = torch.tensor([[0, 2, 3], [1, 3, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    return probs.log(), target, mask


def test_matches_a_hand_computation():
    log_probs, target, mask = _case()
    eps = 0.1
    loss, nll = label_smoothed_nll(log_probs, target, mask, eps)
    # by hand: (1 - eps) * -log p(gold) + eps * mean over the vocabulary of -log p(v)
    rows = [
        ([0.7, 0.1, 0.1, 0.1], 0), ([0.25] * 4, 2), ([0.1, 0.2, 0.3, 0.4], 3),
        ([0.4, 0.3, 0.2, 0.1], 1), ([0.05, 0.05, 0.1, 0.8], 3),
    ]
    want_nll = sum(-math.log(p[g]) for p, g in rows)
    want_loss = sum((1 - eps) * -math.log(p[g]) + eps * sum(-math.log(q) for q in p) / 4 for p, g in rows)
    assert nll.item() == pytest.approx(want_nll, rel=1e-12)
    assert loss.item() == pytest.approx(want_loss, rel=1e-12)
    assert loss.dim() == 0 and nll.dim() == 0


def test_masked_positions_are_ignored():
    log_probs, target, mask = _case()
    base = label_smoothed_nll(log_probs, target, mask, 0.2)
    # anything at the padded position changes nothing: its gold id, its log-probabilities
    changed = log_probs.clone()
    changed[1, 2] = torch.tensor([-50.0, -1e-9, -30.0, -40.0])
    target2 = target.clone()
    target2[1, 2] = 2
    again = label_smoothed_nll(changed, target2, mask, 0.2)
    assert again[0].item() == base[0].item() and again[1].item() == base[1].item()
    # and -inf at a padded position does not leak into the sum
    changed[1, 2] = float("-inf")
    assert torch.isfinite(label_smoothed_nll(changed, target2, mask, 0.2)[0])


def test_masked_rows_input_gives_the_same_loss():
    log_probs, target, mask = _case()
    full = label_smoothed_nll(log_probs, target, mask, 0.1)
    rows = label_smoothed_nll(log_probs[mask], target, mask, 0.1)  # (N, V), as the model returns with tgt_mask
    assert torch.allclose(full[0], rows[0]) and torch.allclose(full[1], rows[1])


def test_no_smoothing_equals_nll_loss_sum():
    torch.manual_seed(0)
    log_probs = torch.log_softmax(torch.randn(3, 5, 7), dim=-1)
    target = torch.randint(0, 7, (3, 5))
    mask = torch.rand(3, 5) > 0.3
    loss, nll = label_smoothed_nll(log_probs, target, mask, 0.0)
    want = F.nll_loss(log_probs[mask], target[mask], reduction="sum")
    assert torch.allclose(loss, want, atol=1e-6)
    assert torch.allclose(nll, want, atol=1e-6)
    # padded positions as ignore_index give the same sum
    ignored = F.nll_loss(log_probs.reshape(-1, 7), target.masked_fill(~mask, -100).reshape(-1),
                         ignore_index=-100, reduction="sum")
    assert torch.allclose(loss, ignored, atol=1e-6)


def test_smoothing_raises_loss_on_a_confident_correct_prediction():
    log_probs = torch.tensor([[0.97, 0.01, 0.01, 0.01]]).log()
    target = torch.tensor([0])
    mask = torch.tensor([True])
    plain, nll0 = label_smoothed_nll(log_probs, target, mask, 0.0)
    smoothed, nll1 = label_smoothed_nll(log_probs, target, mask, 0.1)
    assert smoothed > plain
    assert nll0 == nll1  # the plain NLL is reported unchanged


def test_gradients_reach_only_real_positions():
    log_probs, target, mask = _case()
    log_probs = log_probs.clone().requires_grad_(True)
    loss, _ = label_smoothed_nll(log_probs, target, mask, 0.1)
    loss.backward()
    assert torch.all(log_probs.grad[1, 2] == 0)
    assert torch.all(log_probs.grad[0].abs().sum(-1) > 0)


def test_fused_gradient_equals_autograd_of_the_plain_formula():
    torch.manual_seed(0)
    scores = torch.randn(7, 11, dtype=torch.float64, requires_grad=True)
    gold = torch.randint(0, 11, (7,))
    mask = torch.ones(7, dtype=torch.bool)
    loss, nll = label_smoothed_nll(scores, gold, mask, 0.1)  # scores are logits: normalised inside
    (0.7 * loss + 0.3 * nll).backward()
    fused = scores.grad.clone()
    scores.grad = None
    lp = torch.log_softmax(scores, dim=1)
    plain_nll = -lp.gather(1, gold.unsqueeze(1)).squeeze(1)
    plain_loss = (0.9 * plain_nll - 0.1 * lp.mean(dim=1)).sum()
    (0.7 * plain_loss + 0.3 * plain_nll.sum()).backward()
    assert loss.item() == pytest.approx(plain_loss.item(), rel=1e-12)
    assert nll.item() == pytest.approx(plain_nll.sum().item(), rel=1e-12)
    torch.testing.assert_close(fused, scores.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk", [50, 1 << 20])
def test_linear_cross_entropy_equals_projection_then_loss(chunk):
    from transduce.kernels.cross_entropy import linear_cross_entropy

    torch.manual_seed(0)
    h = torch.randn(37, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(11, 8, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(11, dtype=torch.float64, requires_grad=True)
    gold = torch.randint(0, 11, (37,))
    loss, nll = linear_cross_entropy(h, weight, bias, gold, 0.1, chunk_elements=chunk)
    (0.5 * loss).backward()
    fused = [t.grad.clone() for t in (h, weight, bias)]
    for t in (h, weight, bias):
        t.grad = None
    plain_loss, plain_nll = label_smoothed_nll(h @ weight.t() + bias, gold, torch.ones(37, dtype=torch.bool), 0.1)
    (0.5 * plain_loss).backward()
    assert loss.item() == pytest.approx(plain_loss.item(), rel=1e-12)
    assert nll.item() == pytest.approx(plain_nll.item(), rel=1e-12)
    for got, t in zip(fused, (h, weight, bias)):
        torch.testing.assert_close(got, t.grad, rtol=1e-10, atol=1e-12)
