"""The attention RNN: incremental decoding equals the teacher-forced pass, padding changes nothing,
padded source positions get no attention, tied and shared embeddings share storage."""
import itertools

import pytest
import torch

from tests.unit.stepwise import decode_stepwise
from transduce.config import ModelConfig
from transduce.constants import BOS, PAD
from transduce.data.batching import Example, collate
from transduce.models.builder import build_model, count_parameters
from transduce.models.rnn import RNNSeq2Seq
from transduce.models.state import EncoderOutput, RNNState

SRC_V, TGT_V = 13, 11
TOL = 1e-5


GRID = list(itertools.product(
    ("lstm", "gru"),
    ("dot", "general", "bahdanau"),
    (True, False),  # input feeding
    ((1, 1), (2, 3), (3, 2)),  # encoder, decoder layers
    (True, False),  # bidirectional encoder
))


def _ids(grid_item):
    arch, attention, feeding, (enc, dec), bidir = grid_item
    return f"{arch}-{attention}-{'feed' if feeding else 'nofeed'}-L{enc}{dec}-{'bi' if bidir else 'uni'}"


def _model(arch="lstm", attention="general", input_feeding=True, layers=(1, 1), bidirectional=True,
           seed=0, **extra) -> RNNSeq2Seq:
    torch.manual_seed(seed)
    cfg = ModelConfig(arch=arch, attention=attention, input_feeding=input_feeding, encoder_layers=layers[0],
                      decoder_layers=layers[1], bidirectional=bidirectional, embed_dim=16, hidden=16,
                      dropout=0.3, **extra)
    return build_model(cfg, SRC_V, TGT_V).eval()


def _batch(seed=1, src_lengths=(7, 3, 5, 1), tgt_lengths=(4, 6, 2, 3)):
    g = torch.Generator().manual_seed(seed)
    examples = [
        Example(torch.randint(4, SRC_V, (s,), generator=g).tolist(), torch.randint(4, TGT_V, (t,), generator=g).tolist(), i)
        for i, (s, t) in enumerate(zip(src_lengths, tgt_lengths))
    ]
    return examples, collate(examples)


def _full(model, batch, tgt_mask=None):
    with torch.no_grad():
        return model(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in, tgt_mask)




@pytest.mark.parametrize("setting", GRID, ids=_ids)
def test_incremental_equals_full_pass(setting):
    arch, attention, feeding, layers, bidir = setting
    model = _model(arch, attention, feeding, layers, bidir)
    _, batch = _batch()
    full = _full(model, batch)  # (B, T, V)
    steps, _ = decode_stepwise(model, batch)
    assert full.shape == steps.shape == (4, batch.tgt_in.size(1), TGT_V)
    assert torch.allclose(full, steps, atol=TOL, rtol=0), (full - steps).abs().max()
    # and they are log-probabilities
    assert torch.allclose(full.exp().sum(-1), torch.ones(full.shape[:2]), atol=1e-5)


@pytest.mark.parametrize("setting", GRID, ids=_ids)
def test_padding_invariance(setting):
    arch, attention, feeding, layers, bidir = setting
    model = _model(arch, attention, feeding, layers, bidir)
    examples, batch = _batch()
    together = _full(model, batch)  # (B, T, V)
    steps, _ = decode_stepwise(model, batch)
    for row, ex in enumerate(examples):
        alone = _full(model, collate([ex]))[0]  # (T_row, V)
        n = len(ex.tgt) + 1
        assert alone.shape[0] == n
        assert torch.allclose(together[row, :n], alone, atol=TOL, rtol=0), (together[row, :n] - alone).abs().max()
        assert torch.allclose(steps[row, :n], alone, atol=TOL, rtol=0)


@pytest.mark.parametrize("attention", ("dot", "general", "bahdanau"))
@pytest.mark.parametrize("arch", ("lstm", "gru"))
def test_attention_is_zero_on_padded_source(arch, attention):
    model = _model(arch, attention, layers=(2, 2))
    _, batch = _batch()
    _, weights = decode_stepwise(model, batch)
    for w in weights:
        assert w.shape == batch.src.shape
        assert torch.all(w[~batch.src_mask] == 0.0)  # exactly zero, not just small
        assert torch.all(w[batch.src_mask] > 0)
        assert torch.allclose(w.sum(1), torch.ones(w.size(0)), atol=1e-6)
    # the one-token source puts all its weight on that token
    assert torch.all(weights[0][3, 0] == 1.0)


def test_tied_output_shares_storage():
    model = _model(tie_output=True)
    assert model.output.weight is model.tgt_embed.weight
    assert model.output.weight.data_ptr() == model.tgt_embed.weight.data_ptr()
    with torch.no_grad():
        model.tgt_embed.weight[5, 0] = 42.0
    assert model.output.weight[5, 0].item() == 42.0
    untied = _model(tie_output=False)
    assert untied.output.weight is not untied.tgt_embed.weight
    # the shared tensor is counted once
    assert count_parameters(untied) - count_parameters(model) == TGT_V * 16


def test_tied_output_gets_one_gradient():
    model = _model(tie_output=True).train()
    _, batch = _batch()
    lp = model(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
    lp.sum().backward()
    assert model.tgt_embed.weight.grad is not None
    assert model.output.weight.grad is model.tgt_embed.weight.grad


def test_share_embeddings():
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=16, hidden=16, encoder_layers=1, decoder_layers=1, share_embeddings=True)
    model = build_model(cfg, TGT_V, TGT_V)
    assert model.src_embed is model.tgt_embed
    assert model.output.weight is model.src_embed.weight  # tied as well
    with pytest.raises(ValueError, match="shared_vocab"):
        build_model(cfg, SRC_V, TGT_V)


def test_padding_embedding_is_zero():
    model = _model()
    assert torch.all(model.src_embed.weight[PAD] == 0)
    assert torch.all(model.tgt_embed.weight[PAD] == 0)


@pytest.mark.parametrize("arch", ("lstm", "gru"))
def test_forward_with_tgt_mask_returns_masked_rows(arch):
    model = _model(arch, layers=(2, 2))
    _, batch = _batch()
    full = _full(model, batch)  # (B, T, V)
    rows = _full(model, batch, batch.tgt_mask)  # (N, V)
    n = int(batch.tgt_mask.sum())
    assert rows.shape == (n, TGT_V)
    assert torch.allclose(rows, full[batch.tgt_mask], atol=TOL, rtol=0)


def test_state_select_follows_rows():
    """Selecting rows of the encoder output and the state, then stepping, equals stepping those rows alone."""
    model = _model("lstm", layers=(2, 2))
    _, batch = _batch()
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths)
        state = model.init_state(enc)
        lp, state = model.decode_step(batch.tgt_in[:, 0], enc, state)
        pick = torch.tensor([2, 2, 0])
        enc_p, state_p = enc.select(pick), state.select(pick)
        assert isinstance(enc_p, EncoderOutput) and isinstance(state_p, RNNState)
        lp_p, _ = model.decode_step(batch.tgt_in[pick, 1], enc_p, state_p)
        lp_all, _ = model.decode_step(batch.tgt_in[:, 1], enc, state)
    assert torch.allclose(lp_p, lp_all[pick], atol=TOL, rtol=0)


def test_eval_is_deterministic_and_train_uses_dropout():
    model = _model()
    _, batch = _batch()
    assert torch.equal(_full(model, batch), _full(model, batch))
    model.train()
    torch.manual_seed(1)
    a = _full(model, batch)
    torch.manual_seed(2)
    b = _full(model, batch)
    assert not torch.allclose(a, b)


def test_first_step_from_bos_shape():
    model = _model("gru", "bahdanau", layers=(1, 3))
    _, batch = _batch()
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths)
        state = model.init_state(enc)
        assert len(state.hidden) == 3 and state.cell is None
        lp, state = model.decode_step(torch.full((4,), BOS), enc, state)
    assert lp.shape == (4, TGT_V)
    assert state.attention.shape == batch.src.shape


@pytest.mark.parametrize("arch", ("lstm", "gru"))
@pytest.mark.parametrize("layers", ((1, 2), (2, 1)))
def test_without_bridge(arch, layers):
    model = _model(arch, layers=layers, bridge=False)
    assert not hasattr(model, "bridge_h")
    examples, batch = _batch()
    full = _full(model, batch)
    steps, _ = decode_stepwise(model, batch)
    assert torch.allclose(full, steps, atol=TOL, rtol=0)
    alone = _full(model, collate([examples[1]]))[0]
    assert torch.allclose(full[1, : alone.size(0)], alone, atol=TOL, rtol=0)


def test_decoding_after_a_fused_adam_update_sees_the_new_weights():
    """The fused Adam kernel changes weights in place without bumping their version counters:
    the decoder's projected-embedding table must not survive the switch back to training."""
    from transduce.config import TrainConfig
    from transduce.training.optim import make_optimizer

    model = _model()
    batch = collate([Example([4, 5, 6], [7, 8], 0), Example([9, 5], [6, 7, 8], 1)])

    def eval_scores(m):
        m.eval()
        with torch.inference_mode():
            return m(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in).clone()

    eval_scores(model)  # fills the table
    optimizer = make_optimizer(model, TrainConfig(lr=0.05))
    model.train()
    model(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in).logsumexp(-1).sum().backward()
    optimizer.step()
    fresh = _model(seed=1)
    fresh.load_state_dict(model.state_dict())
    assert torch.allclose(eval_scores(model), eval_scores(fresh), atol=1e-6)


def test_a_model_made_in_inference_mode_scores_as_one_made_outside_it():
    """Weights created under inference mode carry no version counter: nothing cached is keyed on it."""
    cfg = ModelConfig(arch="lstm", embed_dim=8, hidden=8, dropout=0.0)
    torch.manual_seed(4)
    outside = RNNSeq2Seq(cfg, SRC_V, TGT_V).eval()
    src = torch.tensor([[4, 5, 6], [7, 8, PAD]])
    tgt_in = torch.tensor([[BOS, 4, 5], [BOS, 6, PAD]])
    with torch.inference_mode():
        torch.manual_seed(4)
        inside = RNNSeq2Seq(cfg, SRC_V, TGT_V).eval()
        args = (src, src.ne(PAD), torch.tensor([3, 2]), tgt_in)
        assert torch.allclose(inside(*args), outside(*args), atol=TOL)
