"""The oneDNN linear agrees with torch's: outputs, and the gradients of input, weight and bias;
weight gradients go to the library the switch's rule names."""
import copy

import pytest
import torch

from transduce import kernels
from transduce.kernels.linear_maps import Linear, linear, weight_gradient


@pytest.mark.parametrize("shape", [(7, 5), (3, 4, 5), (0, 5)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_linear_equals_torch_with_gradients(shape, with_bias):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g, requires_grad=True)
    w = torch.randn(6, 5, generator=g, requires_grad=True)
    b = torch.randn(6, generator=g, requires_grad=True) if with_bias else None
    out = linear(x, w, b)
    ref = torch.nn.functional.linear(x, w, b)
    assert torch.allclose(out, ref, atol=1e-5)
    upstream = torch.randn(ref.shape, generator=g)
    grads = torch.autograd.grad((out * upstream).sum(), [x, w] + ([b] if with_bias else []))
    ref_grads = torch.autograd.grad((ref * upstream).sum(), [x, w] + ([b] if with_bias else []))
    for a, r in zip(grads, ref_grads):
        assert torch.allclose(a, r, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(linear(x, w, b), ref, atol=1e-5)


def test_module_keeps_nn_linear_names_and_strided_inputs_work():
    layer = Linear(4, 3)
    assert set(layer.state_dict()) == {"weight", "bias"}
    x = torch.randn(5, 8)[:, ::2]  # not contiguous
    with torch.no_grad():
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-6)


def test_bfloat16_and_autocast_take_torchs_path():
    layer = Linear(4, 3)
    x = torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(x).dtype == torch.bfloat16
    assert linear(x.bfloat16(), layer.weight.bfloat16()).dtype == torch.bfloat16


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")
def test_training_products_go_through_onednn():
    x = torch.randn(4, 5, requires_grad=True)
    w = torch.randn(6, 5, requires_grad=True)
    assert type(linear(x, w).grad_fn).__name__ == "_OneDNNLinearBackward"


@pytest.mark.parametrize("leading", [(9,), (2, 5)])
def test_weight_gradient_sums_over_rows(leading):
    g = torch.Generator().manual_seed(1)
    grad, x = torch.randn(*leading, 6, generator=g), torch.randn(*leading, 4, generator=g)
    ref = grad.reshape(-1, 6).t() @ x.reshape(-1, 4)
    assert torch.allclose(weight_gradient(grad, x), ref, atol=1e-5)
    assert torch.allclose(weight_gradient(grad.bfloat16(), x.bfloat16()).float(), ref, atol=0.2)


def test_evaluation_without_gradients_packs_the_weight_once_and_follows_its_updates():
    g = torch.Generator().manual_seed(0)
    layer = Linear(16, 24)
    x = torch.randn(3, 5, 16, generator=g)
    layer.eval()
    with torch.inference_mode():
        out = layer(x)
        packed = layer.__dict__.get("packed")
        assert packed is not None and layer(x).equal(out) and layer.__dict__.get("packed") is packed  # reordered once
    copied = copy.deepcopy(layer)  # copies leave the packed weight behind
    assert "packed" not in copied.__dict__ and copied.weight.equal(layer.weight)
    assert torch.allclose(out, torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)
    with torch.no_grad():
        layer.weight.mul_(2)  # an optimizer step or a weight load
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)
    torch.nn.Sequential(layer).train()  # training drops the packed copy and computes with the weight itself
    assert "packed" not in layer.__dict__
    layer(x).sum().backward()
    assert layer.weight.grad is not None


def test_a_layer_made_in_inference_mode_computes_without_packing():
    """Inference-mode weights have no version counter to key a packed copy on."""
    x = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        layer = Linear(16, 8).eval()
        out = layer(x)
    assert "packed" not in layer.__dict__
    assert torch.allclose(out, torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)


@pytest.mark.parametrize("mode", ["onednn", "mkl", "auto", "torch"])
def test_every_mode_gives_the_same_weight_gradient_up_to_rounding(mode):
    g = torch.Generator().manual_seed(2)
    grad, x = torch.randn(300, 96, generator=g), torch.randn(300, 80, generator=g)
    ref = grad.t().double() @ x.double()
    with kernels.using(mode):
        assert torch.allclose(weight_gradient(grad, x).double(), ref, atol=1e-4)


def test_which_library_computes_a_weight_gradient_is_a_rule_of_shape_and_cpu(monkeypatch):
    """MKL's product reads grad^T in place (a strided operand); oneDNN's is handed the transposes."""
    from transduce.kernels import linear_maps as linear_module
    seen = []
    real = linear_module._onednn
    monkeypatch.setattr(linear_module, "_onednn", lambda *a: seen.append(a[0].shape) or real(*a))
    wide, narrow = torch.randn(1000, 256), torch.randn(1000, 64)  # 1000 rows: 2 x 1000 x 256 x 64 > 30 MFLOP
    with kernels.using(kernels.KernelPolicy("auto", True, "by_shape", "AVX512")):
        monkeypatch.setattr(kernels.switch, "BY_SHAPE_ABOVE_FLOPS", 1_000_000)
        weight_gradient(wide, narrow)  # 256 outputs >= 64 inputs: MKL
        assert seen == []
        weight_gradient(narrow, wide)  # 64 outputs < 256 inputs: oneDNN
        assert seen == [(64, 1000)]
        weight_gradient(wide[:10], narrow[:10])  # small: oneDNN
        assert seen[-1] == (256, 10)
    seen.clear()
    with kernels.using("mkl"):
        weight_gradient(narrow, wide)
    with kernels.using("torch"):
        weight_gradient(narrow, wide)
    assert seen == []
    with kernels.using("onednn"):
        weight_gradient(wide, narrow)
    assert seen == [(256, 1000)]


def test_auto_settles_by_the_cpu_alone(monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert kernels.resolve("auto").weight_gradients == "onednn"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert kernels.resolve("auto").weight_gradients == "by_shape"
    assert kernels.resolve("torch").fast is False and kernels.resolve("mkl").weight_gradients == "mkl"
    with pytest.raises(ValueError, match="not one of"):
        kernels.resolve("fastest")


def test_plain_mode_computes_with_torchs_own_linear():
    x, w = torch.randn(4, 5, requires_grad=True), torch.randn(6, 5, requires_grad=True)
    with kernels.using("torch"):
        out = linear(x, w)
        layer = Linear(5, 6).eval()
        with torch.no_grad():
            layer(x)
    assert type(out.grad_fn).__name__ != "_OneDNNLinearBackward" and "packed" not in layer.__dict__
