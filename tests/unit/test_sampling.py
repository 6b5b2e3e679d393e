"""Sampling: top-k / top-p restrict exactly, draws stay inside, a seed reproduces them."""
import pytest
import torch

from transduce.config import DecodeConfig, ModelConfig
from transduce.constants import BOS, EOS, PAD
from transduce.data.batching import Example
from transduce.decoding.sampling import restrict
from transduce.decoding.search import decode_examples
from transduce.models.rnn import RNNSeq2Seq

V = 12


def test_restrict_top_k_and_top_p_by_hand():
    log_probs = torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]]).log()
    kept = torch.isfinite(restrict(log_probs, 1.0, 2, 1.0))
    assert kept.tolist() == [[True, True, False, False, False]]
    # top-p 0.85: 0.5 + 0.3 = 0.8 < 0.85, so the third token is needed, the fourth is not
    kept = torch.isfinite(restrict(log_probs, 1.0, 0, 0.85))
    assert kept.tolist() == [[True, True, True, False, False]]
    kept = torch.isfinite(restrict(log_probs, 1.0, 0, 0.01))  # the best token always stays
    assert kept.tolist() == [[True, False, False, False, False]]
    tempered = torch.softmax(restrict(log_probs, 0.5, 0, 1.0), dim=1)
    expected = torch.tensor([[0.5, 0.3, 0.1, 0.06, 0.04]]) ** 2
    torch.testing.assert_close(tempered, expected / expected.sum())


def _model_and_examples():
    torch.manual_seed(0)
    model = RNNSeq2Seq(ModelConfig(hidden=16, embed_dim=16, dropout=0.0), V, V).eval()
    examples = [Example(torch.randint(4, V, (n,)).tolist(), None, i) for i, n in enumerate([5, 3, 7, 2])]
    return model, examples


@pytest.mark.parametrize("top_k, top_p", [(2, 1.0), (0, 0.5), (3, 0.7)])
def test_samples_never_leave_the_allowed_set(top_k, top_p):
    model, examples = _model_and_examples()
    cfg = DecodeConfig(sample=True, top_k=top_k, top_p=top_p, max_length=8, seed=3)
    for seed in range(5):
        rows = decode_examples(model, examples, DecodeConfig(**{**vars(cfg), "seed": seed}), nbest=2)
        for ex, row in zip(examples, rows):
            for hyp in row:
                sequence = hyp.tokens + ([EOS] if len(hyp.tokens) < 8 else [])
                src = torch.tensor([ex.src])
                tgt_in = torch.tensor([[BOS] + hyp.tokens[: len(sequence) - 1]])
                with torch.no_grad():
                    lp = model(src, src.ne(PAD), torch.tensor([len(ex.src)]), tgt_in)[0]  # (T, V)
                lp[:, [PAD, BOS]] = float("-inf")
                allowed = torch.isfinite(restrict(lp, 1.0, top_k, top_p))
                for t, token in enumerate(sequence):
                    if t < 8:  # at the cap EOS is forced whatever its rank
                        assert allowed[t, token], (t, token, hyp.tokens)


def test_a_seed_reproduces_samples_and_another_seed_differs():
    model, examples = _model_and_examples()

    def draw(seed):
        cfg = DecodeConfig(sample=True, temperature=1.5, max_length=10, seed=seed)
        return [[h.tokens for h in row] for row in decode_examples(model, examples, cfg, nbest=3)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_near_zero_temperature_is_greedy():
    model, examples = _model_and_examples()
    greedy = decode_examples(model, examples, DecodeConfig(beam=1, max_length=10))
    sampled = decode_examples(model, examples, DecodeConfig(sample=True, temperature=1e-4, max_length=10, seed=1))
    assert [r[0].tokens for r in sampled] == [r[0].tokens for r in greedy]


def test_a_subnormal_temperature_still_samples_the_best_token():
    """1 / 5e-324 overflows: the tempered scores must stay finite for the best token."""
    log_probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]).log()
    weights = torch.softmax(restrict(log_probs, 5e-324, 0, 5e-324), dim=1)
    assert weights.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    model, examples = _model_and_examples()
    greedy = decode_examples(model, examples, DecodeConfig(beam=1, max_length=10))
    sampled = decode_examples(model, examples, DecodeConfig(sample=True, temperature=5e-324, max_length=10, seed=1))
    assert [r[0].tokens for r in sampled] == [r[0].tokens for r in greedy]
