import torch

from transduce.kernels.dropout import Dropout, dropout_mask


def test_mask_values_and_rate():
    torch.manual_seed(0)
    mask = dropout_mask((200, 500), 0.25, torch.empty(0))
    values = mask.unique()
    assert values.numel() == 2 and values[0] == 0.0
    assert abs(float(values[1]) - 1.0 / 0.75) < 1e-6
    assert abs(float((mask == 0).float().mean()) - 0.25) < 0.01


def test_identity_in_eval_and_at_zero():
    x = torch.randn(4, 6)
    layer = Dropout(0.5).eval()
    assert torch.equal(layer(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_training_keeps_expectation_and_is_seeded():
    x = torch.ones(1000, 100)
    torch.manual_seed(3)
    a = Dropout(0.1).train()(x)
    torch.manual_seed(3)
    b = Dropout(0.1).train()(x)
    assert torch.equal(a, b)
    assert abs(float(a.mean()) - 1.0) < 0.01


def test_neighbouring_elements_drop_independently():
    """Four elements share one 64-bit draw: each piece must be uniform on its own and unrelated."""
    torch.manual_seed(5)
    dropped = dropout_mask((400_000, 4), 0.3, torch.empty(0)) == 0
    rates = dropped.float().mean(dim=0)
    assert torch.all((rates - 0.3).abs() < 0.005), rates
    both = (dropped[:, 0] & dropped[:, 1]).float().mean()
    assert abs(float(both) - 0.09) < 0.003
