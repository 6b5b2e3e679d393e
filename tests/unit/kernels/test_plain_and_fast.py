"""The fast paths compute what plain PyTorch computes: the same tiny models, run once with
`kernels.use("torch")` and once with each fast mode, give the same training loss and gradients
and the same decoding log-probabilities (to 1e-5), for every architecture and output layer."""
import pytest
import torch

from tests.unit.stepwise import decode_stepwise
from transduce import kernels
from transduce.config import ModelConfig
from transduce.data.batching import Example, collate
from transduce.models.builder import build_model
from transduce.training.objective import TrainingObjective

V = 23
MODELS = {
    "lstm": dict(arch="lstm"),
    "gru-bahdanau": dict(arch="gru", attention="bahdanau"),
    "lstm-prior": dict(arch="lstm", source_prior=True),
    "gru-copy-coverage": dict(arch="gru", copy=True, coverage=True),
    "transformer": dict(arch="transformer", heads=4, ff_size=48),
    "transformer-post-copy": dict(arch="transformer", heads=4, ff_size=48, norm="post", copy=True),
}


def _batch():
    g = torch.Generator().manual_seed(4)
    examples = []
    for i, (s, t) in enumerate(((7, 5), (3, 6), (5, 2), (1, 4))):
        src = torch.randint(4, V, (s,), generator=g).tolist()
        tgt = torch.randint(4, V, (t,), generator=g).tolist()
        examples.append(Example(src, tgt, i, src_ext=list(src), tgt_ext=list(tgt), oov=[]))
    return collate(examples)


def _model(settings: dict):
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=16, hidden=16, encoder_layers=2, decoder_layers=2, dropout=0.0,
                      attention_dropout=0.0, **settings)
    return build_model(cfg, V, V)


def _training_pass(model, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = TrainingObjective(model, 0.1, 0.5, "fp32")(batch)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def _decoding_pass(model, batch) -> torch.Tensor:
    model.eval()
    return decode_stepwise(model, batch, batch.src_ext)[0]


@pytest.mark.parametrize("mode", ["auto", "onednn", "mkl"])
@pytest.mark.parametrize("name", list(MODELS))
def test_fast_paths_equal_plain_pytorch(name, mode):
    model, batch = _model(MODELS[name]), _batch()
    results = {}
    for kind in ("torch", mode):
        with kernels.using(kind):
            results[kind] = _training_pass(model, batch), _decoding_pass(model, batch)
    (plain_loss, plain_grads), plain_steps = results["torch"]
    (fast_loss, fast_grads), fast_steps = results[mode]
    assert torch.allclose(fast_loss, plain_loss, rtol=1e-5, atol=1e-5)
    assert fast_grads.keys() == plain_grads.keys() and plain_grads
    for key, grad in plain_grads.items():
        assert torch.allclose(fast_grads[key], grad, rtol=1e-5, atol=1e-5), key
    real = batch.tgt_mask
    assert torch.allclose(fast_steps[real], plain_steps[real], rtol=1e-5, atol=1e-5)


def test_plain_pytorch_takes_none_of_the_fast_paths(monkeypatch):
    """With `torch`, not one of the kernels' own functions runs in training or decoding."""
    from transduce.kernels import cross_entropy, linear_maps, recurrent, tables
    touched = []
    for module, name in ((linear_maps, "_onednn"), (cross_entropy, "_LinearCrossEntropy"),
                         (cross_entropy, "_SmoothedCrossEntropy"), (recurrent, "TimeBatchedWeight"),
                         (tables.ProjectionTable, "lookup")):
        monkeypatch.setattr(module, name, lambda *a, _name=name, **k: touched.append(_name))
    batch = _batch()
    with kernels.using("torch"):
        for settings in (MODELS["lstm"], MODELS["transformer"], MODELS["gru-copy-coverage"]):
            model = _model(settings)
            _training_pass(model, batch)
            with torch.no_grad():
                _decoding_pass(model, batch)
    assert touched == []
