"""The int8 scheme and modules: per-row rounding, and int8 layers that compute with the stored
integers (not re-rounded ones) close to the float layers they replace."""
import torch
from torch import nn
from torch.ao.nn.quantized import dynamic as qdynamic

from transduce.models.int8 import (
    MIN_FEATURES,
    dequantize_rows,
    int8_linear,
    int8_linear_wanted,
    quantize_rows,
    swap_modules,
)


def test_quantize_rows_round_trip():
    weight = torch.tensor([[0.5, -1.0, 0.25], [0.0, 0.0, 0.0], [2.0, 1.0, -0.5]])
    qweight, scale = quantize_rows(weight)
    assert qweight.tolist()[0] == [64, -127, 32] and qweight.tolist()[1] == [0, 0, 0]
    assert torch.allclose(scale, torch.tensor([1 / 127, 1e-12 / 127, 2 / 127]))
    assert torch.allclose(dequantize_rows(qweight, scale), weight, atol=1 / 127)


def test_int8_linear_holds_the_stored_integers_and_is_close_to_float():
    torch.manual_seed(0)
    linear = nn.Linear(32, 16)
    qweight, scale = quantize_rows(linear.weight)
    module = int8_linear(linear, qweight, scale)
    packed = module.weight()
    assert packed.dtype == torch.qint8 and torch.equal(packed.int_repr(), qweight)
    assert torch.allclose(packed.q_per_channel_scales().float(), scale)
    x = torch.randn(5, 32)
    with torch.no_grad():
        assert (module(x) - linear(x)).abs().max() < 0.05


def test_swap_modules_replaces_only_the_layers_given_and_wide_enough():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16), nn.Linear(16, MIN_FEATURES - 1))
    assert int8_linear_wanted(model[0]) and not int8_linear_wanted(model[3])
    int8_of = {id(model[0].weight): quantize_rows(model[0].weight)}
    swap_modules(model, int8_of)
    assert isinstance(model[0], qdynamic.Linear)
    assert type(model[2]) is nn.Linear and type(model[3]) is nn.Linear
