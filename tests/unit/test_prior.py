"""The source-vocabulary prior: χ marks the source's tokens in the target vocabulary, ŷ = s ⊙ χ + t,
and the logits become (y + ŷ) / 2, in training and at every decoding step, for RNNs and Transformers."""
import pytest
import torch

from tests.unit.stepwise import decode_stepwise
from transduce.config import ModelConfig
from transduce.constants import PAD, UNK
from transduce.data.batching import Example, collate
from transduce.models.builder import build_model
from transduce.models.prior import SourcePrior, apply_prior, masked_rows


def test_presence_and_formula_on_a_hand_made_case():
    # source vocabulary of 6, target of 5; source ids 4, 5 are target ids 4 and (absent)
    src_to_tgt = torch.tensor([-1, 1, 2, 3, 4, -1])
    prior = SourcePrior(6, 5, src_to_tgt)
    with torch.no_grad():
        prior.log_scale.copy_(torch.log(torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])))
        prior.shift.copy_(torch.tensor([0.5, -0.5, 0.0, 0.25, -1.0]))
    src = torch.tensor([[4, 5, 4, PAD], [UNK, 5, PAD, PAD]])
    mask = src.ne(PAD)
    chi = prior.presence(src, mask)
    assert chi.tolist() == [[0, 0, 0, 0, 1], [0, 1, 0, 0, 0]]
    y_hat = prior(src, mask)
    expected = torch.tensor([[0.5, -0.5, 0.0, 0.25, 4.0], [0.5, 1.5, 0.0, 0.25, -1.0]])
    assert torch.allclose(y_hat, expected)
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(apply_prior(logits, y_hat), (logits + expected) / 2)
    rows = torch.tensor([1, 1, 0])
    assert torch.allclose(apply_prior(logits[rows], y_hat, rows), (logits[rows] + expected[rows]) / 2)


def test_starts_as_scale_one_shift_zero_and_learns():
    prior = SourcePrior(5, 5)
    assert torch.equal(prior.src_to_tgt, torch.arange(5))
    src = torch.tensor([[4, 2]])
    assert prior(src, src.ne(0)).tolist() == [[0, 0, 1, 0, 1]]
    assert len(list(prior.parameters())) == 2


def test_masked_rows():
    mask = torch.tensor([[True, True, False], [True, False, False]])
    assert masked_rows(mask).tolist() == [0, 0, 1]


def _examples():
    g = torch.Generator().manual_seed(0)
    return [Example(torch.randint(4, 12, (s,), generator=g).tolist(), torch.randint(4, 12, (t,), generator=g).tolist(), i)
            for i, (s, t) in enumerate([(6, 3), (2, 5), (4, 4)])]


@pytest.mark.parametrize("arch", ["lstm", "gru", "transformer"])
def test_model_with_prior_decodes_incrementally_as_the_full_pass(arch):
    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, embed_dim=16, hidden=16, heads=2, ff_size=32, encoder_layers=1, decoder_layers=1,
                      source_prior=True)
    model = build_model(cfg, 12, 12).eval()
    with torch.no_grad():
        model.prior.log_scale.normal_()
        model.prior.shift.normal_()
    assert model.output_projection() is None  # the trainer must score through training_scores
    batch = collate(_examples())
    with torch.no_grad():
        full = model(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
        logits, aux = model.training_scores(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths)
        inc = decode_stepwise(model, batch)[0][batch.tgt_mask]
        # the prior moved the scores: without it they differ
        plain = apply_prior(model.output(model.features(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in,
                                                         batch.tgt_mask)), None)
    assert aux is None
    assert torch.allclose(full, inc, atol=1e-5)
    assert torch.allclose(torch.log_softmax(logits, -1), full, atol=1e-5)
    rows = masked_rows(batch.tgt_mask)
    assert torch.allclose(logits, (plain + enc.prior[rows]) / 2, atol=1e-5)
