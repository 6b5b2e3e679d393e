"""The training objective: under bfloat16 mixed precision the fused output layer computes its
products in bfloat16 (a Transformer's final layer norm hands it float32 features) and its loss
stays close to float32's."""
import torch

from tests.unit.test_transformer import _batch, _model
from transduce.training import objective as objective_module
from transduce.training.objective import TrainingObjective


def test_bf16_runs_the_fused_output_layer_in_bf16_and_matches_fp32(monkeypatch):
    model = _model().train()
    _, batch = _batch()
    seen = []
    real = objective_module.linear_cross_entropy

    def spy(features, *args, **kwargs):
        seen.append(features.dtype)
        return real(features, *args, **kwargs)

    monkeypatch.setattr(objective_module, "linear_cross_entropy", spy)
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(3)  # the same dropout masks
        loss, nll = TrainingObjective(model, 0.1, 0.0, precision)(batch)
        loss.backward()
        losses[precision] = (loss.item(), nll.item(), model.output_projection().weight.grad.clone())
        model.zero_grad(set_to_none=True)
    assert seen == [torch.float32, torch.bfloat16]
    assert abs(losses["bf16"][0] - losses["fp32"][0]) < 0.02 * losses["fp32"][0]
    assert abs(losses["bf16"][1] - losses["fp32"][1]) < 0.02 * losses["fp32"][1]
    grad_bf16, grad_fp32 = losses["bf16"][2], losses["fp32"][2]  # the output layer's, float32 in both
    assert grad_bf16.dtype == torch.float32
    assert torch.allclose(grad_bf16, grad_fp32, atol=0.05 * grad_fp32.abs().max().item())
