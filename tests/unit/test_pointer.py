"""Pointer-generator copying: the mixture formula on a hand-made case, extended ids, incremental
decoding equal to the full pass with copying and coverage, copied ids fed back as UNK."""
import math

import pytest
import torch

from tests.unit.stepwise import decode_stepwise
from transduce.config import ModelConfig
from transduce.constants import PAD, UNK
from transduce.data.batching import Example, collate
from transduce.models.builder import build_model
from transduce.models.pointer import (
    TINY,
    PointerGenerator,
    extended_size,
    in_vocabulary_ids,
)

V = 10


def test_mixture_on_a_hand_made_case():
    pointer = PointerGenerator(2, 4, torch.arange(4))
    with torch.no_grad():
        pointer.gate.weight.zero_()
        pointer.gate.bias.fill_(math.log(3.0))  # p_gen = 0.75
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4]]))
    attention = torch.tensor([[0.5, 0.25, 0.25, 0.0]])
    src_ext = torch.tensor([[3, 4, 3, PAD]])  # a token in vocabulary twice, one extended word, padding
    with torch.no_grad():
        log_probs = pointer(logits, attention, src_ext, torch.zeros(1, 2), ext_size=5)
    expected = torch.tensor([[0.075, 0.15, 0.225, 0.3 + 0.25 * 0.75, 0.25 * 0.25]])
    assert torch.allclose(log_probs.exp(), expected, atol=1e-6)
    assert abs(float(log_probs.exp().sum()) - 1.0) < 1e-6


def test_zero_probability_is_floored():
    pointer = PointerGenerator(1, 3, torch.arange(3))
    with torch.no_grad():
        out = pointer(torch.zeros(1, 3), torch.tensor([[1.0]]), torch.tensor([[1]]), torch.zeros(1, 1), ext_size=5)
    assert float(out[0, 4]) == pytest.approx(math.log(TINY))


def test_extended_size_and_fallback_ids():
    assert extended_size(10, torch.tensor([[3, 12, 11]])) == 13
    assert extended_size(10, torch.tensor([[3, 4]])) == 10
    assert in_vocabulary_ids(torch.tensor([[2, 3, 4]]), torch.tensor([-1, 1, 2, -1, 0])).tolist() == [[2, UNK, 0]]


def _model(arch="lstm", coverage=False, attention="general", seed=0):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, embed_dim=16, hidden=16, heads=2, ff_size=32, encoder_layers=1, decoder_layers=2,
                      copy=True, coverage=coverage, attention=attention)
    model = build_model(cfg, V, V).eval()
    with torch.no_grad():  # make the coverage terms count
        for name, p in model.named_parameters():
            if "coverage" in name:
                p.normal_()
    return model


def _batch():
    # ids >= V are extended: words outside the vocabulary, copied from the source
    examples = [
        Example([5, UNK, 6, UNK], [UNK, 5], 0, src_ext=[5, V, 6, V + 1], tgt_ext=[V + 1, 5], oov=["x", "y"]),
        Example([UNK, 7], [7, 8, UNK], 1, src_ext=[V, 7], tgt_ext=[7, 8, V], oov=["z"]),
    ]
    return collate(examples)


@pytest.mark.parametrize("arch,coverage,attention", [("lstm", False, "general"), ("gru", True, "bahdanau"),
                                                     ("lstm", True, "dot"), ("transformer", False, "general")])
def test_incremental_equals_full_pass_over_the_extended_vocabulary(arch, coverage, attention):
    model = _model(arch, coverage, attention)
    batch = _batch()
    assert batch.src_ext.tolist() == [[5, V, 6, V + 1], [V, 7, PAD, PAD]]
    assert batch.tgt_out_ext.tolist() == [[V + 1, 5, 3, PAD], [7, 8, V, 3]]
    args = (batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in)
    with torch.no_grad():
        full = model(*args, batch.tgt_mask, src_ext=batch.src_ext)
        scores, coverage_loss = model.training_scores(*args, batch.tgt_mask, batch.src_ext)
    inc = decode_stepwise(model, batch, batch.src_ext)[0][batch.tgt_mask]
    assert full.shape == (7, V + 2)
    assert torch.allclose(full, inc, atol=1e-5)
    assert torch.allclose(full, scores, atol=1e-6)
    assert torch.allclose(full.exp().sum(1), torch.ones(7), atol=1e-5)
    assert (coverage_loss is not None) == coverage
    if coverage:
        assert float(coverage_loss) > 0


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_copied_ids_are_fed_back_as_unk(arch):
    model = _model(arch)
    batch = _batch()
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths, batch.src_ext)
        state = model.init_state(enc)
        a, _ = model.decode_step(torch.tensor([V, V + 1]), enc, state)
        b, _ = model.decode_step(torch.tensor([UNK, UNK]), enc, state)
    assert torch.equal(a, b)


def test_without_extended_ids_in_vocabulary_tokens_are_still_copied():
    model = _model()
    batch = _batch()
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths)
    assert enc.src_ext.tolist() == [[5, UNK, 6, UNK], [UNK, 7, PAD, PAD]]


def test_training_on_extended_targets_lowers_their_loss():
    from transduce.kernels.cross_entropy import label_smoothed_nll

    torch.manual_seed(0)
    model = _model()
    model.train()
    batch = _batch()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        scores, _ = model.training_scores(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in, batch.tgt_mask,
                                          batch.src_ext)
        _, nll = label_smoothed_nll(scores, batch.gold, batch.tgt_mask, 0.0)
        optimizer.zero_grad()
        (nll / 7).backward()
        optimizer.step()
        losses.append(float(nll.detach()) / 7)
    assert losses[-1] < 0.3 * losses[0]
