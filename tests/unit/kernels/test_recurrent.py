"""The time-batched weight gradient equals plain autograd's, step by step or not."""
import torch

from transduce.kernels.recurrent import TimeBatchedWeight


def _recurrence(weight, x0, batched: bool):
    wrapped = TimeBatchedWeight(weight) if batched else None
    h, outs = x0, []
    for _ in range(6):
        y = wrapped.product(h) if batched else h @ weight.t()  # (B, 2H)
        h = torch.tanh(y[:, :4] + y[:, 4:])
        outs.append(y)
    return sum((o ** 2).sum() * (i + 1) for i, o in enumerate(outs))


def test_gradients_equal_plain_autograd():
    torch.manual_seed(0)
    weight = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    grads = []
    for batched in (False, True):
        weight.grad = x0.grad = None
        _recurrence(weight, x0, batched).backward()
        grads.append((weight.grad.clone(), x0.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-10)


def test_two_passes_before_one_backward_accumulate():
    torch.manual_seed(1)
    weight = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(3, 4, dtype=torch.float64)
    (_recurrence(weight, x0, False) + _recurrence(weight, x0 * 2, False)).backward()
    expected = weight.grad.clone()
    weight.grad = None
    (_recurrence(weight, x0, True) + _recurrence(weight, x0 * 2, True)).backward()
    torch.testing.assert_close(weight.grad, expected, rtol=1e-10, atol=1e-10)


def test_add_and_no_grad_path():
    torch.manual_seed(2)
    weight = torch.randn(5, 3)
    x, bias = torch.randn(2, 3), torch.randn(5)
    with torch.no_grad():
        wrapped = TimeBatchedWeight(weight)
        assert not wrapped.tracked
        torch.testing.assert_close(wrapped.product(x, bias), x @ weight.t() + bias)
    tracked = TimeBatchedWeight(weight.requires_grad_())
    assert tracked.tracked
    torch.testing.assert_close(tracked.product(x, bias), x @ weight.t() + bias)
