"""The Transformer: incremental decoding with caches equals the full pass (also after beam
reordering and after rows take the place of finished ones in a running batch), padding changes nothing, both norms and
both position kinds work, attention weights are a distribution over real source tokens."""
import itertools

import pytest
import torch

from tests.unit.stepwise import decode_stepwise
from transduce.config import ConfigError, ModelConfig
from transduce.constants import BOS, EOS
from transduce.data.batching import Example, collate
from transduce.decoding.beam import beam_search
from transduce.decoding.greedy import greedy_search
from transduce.models.builder import build_model
from transduce.models.transformer import TransformerSeq2Seq, sinusoidal_positions

SRC_V, TGT_V = 13, 11
TOL = 1e-5


def _model(norm="pre", positions="sinusoidal", layers=(2, 2), seed=0, vocab=(SRC_V, TGT_V), **extra):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="transformer", embed_dim=16, hidden=16, heads=4, ff_size=32, encoder_layers=layers[0],
                      decoder_layers=layers[1], norm=norm, positions=positions, dropout=0.2,
                      attention_dropout=0.2, max_positions=64, **extra)
    model = build_model(cfg, *vocab)
    assert isinstance(model, TransformerSeq2Seq)
    return model.eval()


def _batch(seed=1, src_lengths=(7, 3, 5, 1), tgt_lengths=(4, 6, 2, 3)):
    g = torch.Generator().manual_seed(seed)
    examples = [
        Example(torch.randint(4, SRC_V, (s,), generator=g).tolist(),
                torch.randint(4, TGT_V, (t,), generator=g).tolist(), i)
        for i, (s, t) in enumerate(zip(src_lengths, tgt_lengths))
    ]
    return examples, collate(examples)




GRID = list(itertools.product(("pre", "post"), ("sinusoidal", "learned"), ((1, 1), (2, 3))))


@pytest.mark.parametrize("norm,positions,layers", GRID)
def test_incremental_equals_full_pass(norm, positions, layers):
    model = _model(norm, positions, layers)
    _, batch = _batch()
    with torch.no_grad():
        full = model(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in)
    inc, _ = decode_stepwise(model, batch)
    mask = batch.tgt_mask
    assert torch.allclose(full[mask], inc[mask], atol=TOL)


def test_masked_forward_returns_the_real_rows_and_features_match():
    model = _model()
    _, batch = _batch()
    with torch.no_grad():
        full = model(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in)
        masked = model(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
        feats = model.features(batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
    assert torch.allclose(full[batch.tgt_mask], masked, atol=TOL)
    proj = model.output_projection()
    assert torch.allclose(torch.log_softmax(proj(feats), -1), masked, atol=TOL)


def test_padding_invariance():
    """A sentence decoded alone or beside longer ones gets the same scores."""
    model = _model()
    examples, batch = _batch()
    inc, _ = decode_stepwise(model, batch)
    for i, ex in enumerate(examples):
        alone = collate([ex])
        single, _ = decode_stepwise(model, alone)
        T = len(ex.tgt) + 1
        assert torch.allclose(single[0, :T], inc[i, :T], atol=TOL)


def _after_two_steps(model, batch):
    """The encoder output and the state after the first two target tokens of every row."""
    enc = model.encode(batch.src, batch.src_mask, batch.src_lengths)
    state = model.init_state(enc)
    for t in range(2):
        _, state = model.decode_step(batch.tgt_in[:, t], enc, state)
    return enc, state


def test_cache_reordering_follows_rows():
    """Decode a few steps, permute/duplicate rows with select, continue: equals decoding the
    permuted batch from the start."""
    model = _model()
    _, batch = _batch()
    order = torch.tensor([2, 0, 0, 3, 1])
    with torch.no_grad():
        enc, state = _after_two_steps(model, batch)
        enc_r, state_r = enc.select(order), state.select(order)
        lp_r, _ = model.decode_step(batch.tgt_in[order, 2], enc_r, state_r)
        enc2 = model.encode(batch.src[order], batch.src_mask[order], batch.src_lengths[order])
        state2 = model.init_state(enc2)
        for t in range(3):
            lp2, state2 = model.decode_step(batch.tgt_in[order, t], enc2, state2)
    assert torch.allclose(lp_r, lp2, atol=TOL)


def test_rows_taking_the_place_of_finished_ones_decode_as_alone():
    """`put` of fresh sentences into rows 2 and 3 of a state 3 tokens in gives each row the
    scores it gets alone: the newcomers' caches start at their rows' first column and the
    columns past each row's own are masked. Selected rows keep that; once only rows of one
    length are left, the state is no longer ragged."""
    model = _model()
    _, batch = _batch()
    b = torch.tensor([2, 3])
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths)
        state = model.init_state(enc)
        for t in range(3):
            _, state = model.decode_step(batch.tgt_in[:, t], enc, state)
        width = int(batch.src_lengths[b].max())  # narrower than the running batch's sources
        enc_b = model.encode(batch.src[b, :width], batch.src_mask[b, :width], batch.src_lengths[b])
        enc, state = enc.put(b, enc_b), state.put(b, model.init_state(enc_b))
        assert state.ragged and state.length == 3 and state.positions.tolist() == [3, 3, 0, 0]
        lp, state = model.decode_step(torch.cat([batch.tgt_in[:2, 3], torch.full((2,), BOS)]), enc, state)
        lp2, state = model.decode_step(torch.cat([batch.tgt_in[:2, 4], batch.tgt_in[b, 1]]), enc, state)
        mixed = state.select(torch.tensor([3, 1]))  # rows of 2 and 5 tokens, in new buffers
        assert mixed.ragged and mixed.length == 5
        lp_mixed, _ = model.decode_step(torch.stack([batch.tgt_in[3, 2], batch.tgt_in[1, 5]]),
                                        enc.select(torch.tensor([3, 1])), mixed)
        only_b = state.reorder(b)  # rows kept in order: moved up within the buffers
        assert not only_b.ragged and only_b.length == 2
        assert only_b.cache.keys[0].data_ptr() == state.cache.keys[0].data_ptr()
        lp3, _ = model.decode_step(batch.tgt_in[b, 2], enc.select(b), only_b)
    ref, _ = decode_stepwise(model, batch)
    assert torch.allclose(lp[:2], ref[:2, 3], atol=TOL)
    assert torch.allclose(lp[2:], ref[2:, 0], atol=TOL)
    assert torch.allclose(lp2, torch.cat([ref[:2, 4], ref[2:, 1]]), atol=TOL)
    assert torch.allclose(lp_mixed, torch.stack([ref[3, 2], ref[1, 5]]), atol=TOL)
    assert torch.allclose(lp3, ref[2:, 2], atol=TOL)


def test_streamed_greedy_equals_whole_batch_and_greedy_equals_beam_one():
    model = _model()
    _, batch = _batch(src_lengths=(9, 8, 7, 6, 5, 4, 3, 2, 1), tgt_lengths=(1,) * 9)
    caps = torch.full((9,), 12)
    args = (model, batch.src, batch.src_mask, batch.src_lengths, caps)
    whole = greedy_search(*args)
    streamed = greedy_search(*args, max_rows=2)
    beam1 = beam_search(*args, beam=1)
    assert [h.tokens for h in whole] == [h.tokens for h in streamed] == [b[0].tokens for b in beam1]
    assert all(abs(h.score - s.score) < 1e-4 for h, s in zip(whole, streamed))


def test_beam_scores_equal_teacher_forced_scores():
    """Each beam hypothesis's log-probability equals the full pass's score of its tokens: the
    caches followed the surviving beams."""
    model = _model(seed=3)
    _, batch = _batch(seed=4)
    caps = torch.full((4,), 8)
    nbest = beam_search(model, batch.src, batch.src_mask, batch.src_lengths, caps, beam=4, nbest=3)
    for i, hyps in enumerate(nbest):
        for hyp in hyps:
            n = int(batch.src_lengths[i])
            tgt_in = torch.tensor([[BOS] + hyp.tokens])
            tgt_out = torch.tensor([hyp.tokens + [EOS]])
            with torch.no_grad():
                lp = model(batch.src[i:i + 1, :n], batch.src_mask[i:i + 1, :n], batch.src_lengths[i:i + 1], tgt_in)
            total = float(lp.gather(2, tgt_out.unsqueeze(2)).sum())
            assert abs(total - hyp.log_prob) < 1e-4


def test_attention_weights_are_distributions_over_real_source_tokens():
    model = _model()
    _, batch = _batch()
    _, attention = decode_stepwise(model, batch)
    for att in attention:
        assert torch.allclose(att.sum(1), torch.ones(4), atol=1e-5)
        assert float(att[~batch.src_mask].abs().sum()) == 0.0


def test_dropout_only_in_training_and_training_learns():
    model = _model()
    _, batch = _batch()
    args = (batch.src, batch.src_mask, batch.src_lengths, batch.tgt_in, batch.tgt_mask)
    with torch.no_grad():
        assert torch.equal(model(*args), model(*args))
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):
        lp = model(*args)
        loss = -lp.gather(1, batch.tgt_out[batch.tgt_mask].unsqueeze(1)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] * 0.5


def test_tied_and_shared_embeddings():
    model = _model(vocab=(TGT_V, TGT_V), share_embeddings=True)
    assert model.src_embed.weight is model.tgt_embed.weight is model.output.weight


def test_learned_positions_reject_a_too_long_source():
    model = _model(positions="learned")
    src = torch.full((1, 70), 5)
    with pytest.raises(ValueError, match="max_positions"):
        model.encode(src, src.ne(0), torch.tensor([70]))


def test_sinusoidal_positions_values():
    table = sinusoidal_positions(torch.arange(3), 4)
    assert torch.allclose(table[0], torch.tensor([0.0, 0.0, 1.0, 1.0]))
    assert torch.allclose(table[2, 0], torch.sin(torch.tensor(2.0)))
    assert torch.allclose(table[1, 1], torch.sin(torch.tensor(1e-4)))


def test_config_checks():
    with pytest.raises(ConfigError, match="multiple of model.heads"):
        ModelConfig(arch="transformer", embed_dim=18, hidden=18, heads=4)
    with pytest.raises(ConfigError, match="embed_dim must equal"):
        ModelConfig(arch="transformer", embed_dim=8, hidden=16, tie_output=False)


def test_sinusoids_past_the_table_are_computed():
    """A sinusoidal model handles sequences longer than max_positions, identically to one with a
    larger table."""
    short, long = _model(), _model()
    short.sinusoids = short.sinusoids[:8]
    src = torch.randint(4, SRC_V, (2, 12), generator=torch.Generator().manual_seed(0))
    mask, lengths = src.ne(0), torch.tensor([12, 12])
    with torch.no_grad():
        assert torch.allclose(short.encode(src, mask, lengths).memory, long.encode(src, mask, lengths).memory,
                              atol=1e-6)


def test_a_state_stays_valid_when_two_steps_branch_from_it_and_caches_grow():
    """Caches are written in place; a second step from the same state (another branch) must not
    disturb the first, and growing past the initial room keeps every entry."""
    model = _model()
    _, batch = _batch(tgt_lengths=(40, 40, 40, 40))
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths)
        state = model.init_state(enc)
        for t in range(35):  # past the initial room of 32 columns
            _, state = model.decode_step(batch.tgt_in[:, t], enc, state)
        lp_a, state_a = model.decode_step(batch.tgt_in[:, 35], enc, state)
        lp_b, state_b = model.decode_step(batch.tgt_in[:, 36], enc, state)  # another branch from the same state
        next_a, _ = model.decode_step(batch.tgt_in[:, 36], enc, state_a)
        again_a, _ = model.decode_step(batch.tgt_in[:, 35], enc, state)
    full, _ = decode_stepwise(model, batch)
    assert torch.allclose(lp_a, full[:, 35], atol=TOL) and torch.allclose(again_a, lp_a, atol=TOL)
    assert torch.allclose(next_a, full[:, 36], atol=TOL)
    assert not torch.allclose(lp_b, lp_a)


def _forty_tokens():
    """A model, four 40-token targets, their full-pass scores and the encoded batch."""
    model = _model()
    _, batch = _batch(tgt_lengths=(40, 40, 40, 40))
    full, _ = decode_stepwise(model, batch)
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths)
    return model, batch, full, enc


def test_reserved_caches_are_sized_once_and_keep_their_room_through_select_and_put():
    """`reserve` sizes the caches for the whole output: steps then write in place (no copy,
    the buffers stay the same), and rows selected or put in keep that room; the scores are
    those of unreserved decoding."""
    model, batch, full, enc = _forty_tokens()
    with torch.no_grad():
        state = model.init_state(enc).reserve(41)
        buffer = state.cache.keys[0].data_ptr()
        for t in range(35):  # past the unreserved initial room of 32 columns
            lp, state = model.decode_step(batch.tgt_in[:, t], enc, state)
            assert torch.allclose(lp, full[:, t], atol=TOL)
        assert state.cache.keys[0].data_ptr() == buffer and state.cache.keys[0].size(2) == 41
        rows = torch.tensor([3, 1])
        picked = state.select(rows)
        assert picked.cache.keys[0].size(2) >= 41
        lp, picked = model.decode_step(batch.tgt_in[rows, 35], enc.select(rows), picked)
        assert torch.allclose(lp, full[rows, 35], atol=TOL)
        fresh_enc = model.encode(batch.src[:1], batch.src_mask[:1], batch.src_lengths[:1])
        slot = torch.tensor([1])
        joined = picked.put(slot, model.init_state(fresh_enc).reserve(50))
        assert joined.cache.keys[0].size(2) >= 50  # the newcomer's from the first column
        assert joined.cache.reserved == 50
        joined_enc = enc.select(rows).put(slot, fresh_enc)
        prev = torch.stack([batch.tgt_in[3, 36], torch.tensor(BOS)])
        lp, _ = model.decode_step(prev, joined_enc, joined)
    assert torch.allclose(lp[0], full[3, 36], atol=TOL)
    assert torch.allclose(lp[1], full[0, 0], atol=TOL)


def test_beams_share_their_sources_memory_and_decode_as_with_copies():
    """`repeat_rows` lets the K beams of a sentence read one copy of its keys and values: the
    scores and attention weights equal those of K real copies; selecting whole groups keeps the
    sharing, any other selection (or `put`) gives one row per decoder row."""
    model = _model()
    _, batch = _batch()
    K = 3
    copies = torch.arange(4).repeat_interleave(K)
    steps = batch.tgt_in[copies, :3]
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths)
        shared, copied = enc.repeat_rows(K), enc.select(copies)
        assert shared.group == K and shared.rows == 12 and shared.memory.size(0) == 4
        results = []
        for memory in (shared, copied):
            state = model.init_state(memory)
            for t in range(3):
                lp, state = model.decode_step(steps[:, t], memory, state)
            results.append((lp, state.attention))
        assert torch.allclose(results[0][0], results[1][0], atol=TOL)
        assert torch.allclose(results[0][1], results[1][1], atol=TOL)
        whole = shared.select(torch.tensor([6, 7, 8, 0, 1, 2]))  # sentences 2 and 0
        assert whole.group == K and torch.equal(whole.src_mask, enc.src_mask[[2, 0]])
        mixed = shared.select(torch.tensor([4, 0, 11]))
        assert mixed.group == 1 and torch.equal(mixed.src_mask, enc.src_mask[[1, 0, 3]])
        joined = shared.put(torch.tensor([0, 5]), enc.select(torch.tensor([3, 2])))
        assert joined.group == 1 and joined.rows == 12 and torch.equal(joined.keys[0][1:5], copied.keys[0][1:5])
        assert torch.equal(joined.keys[0][[0, 5]], enc.keys[0][[3, 2]])


def test_repeat_rows_copies_for_models_whose_scores_read_each_row():
    """A prior or copying reads per-row tensors at every step: their memories are copied."""
    model = _model(source_prior=True)
    _, batch = _batch()
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths)
    repeated = enc.repeat_rows(2)
    assert repeated.group == 1 and repeated.prior.size(0) == 8
    assert torch.equal(repeated.prior, enc.prior.repeat_interleave(2, dim=0))


def test_reorder_reuses_the_buffers_of_the_state_before_and_decodes_as_select():
    """Beam search reorders at every step and drops the old state: `reorder` writes into the
    buffers of the state reordered before (no fresh memory per step) with the scores of `select`."""
    model, batch, full, enc = _forty_tokens()
    order = torch.tensor([1, 0, 3, 2])
    with torch.no_grad():
        results, storages = [], []
        for reuse in (True, False):
            state, kept = model.init_state(enc), []  # every state kept alive: no address is freed
            for t in range(36):
                lp, state = model.decode_step(batch.tgt_in[:, t], enc, state)
                for _ in range(2):  # there and back: the batch's order again
                    state = state.reorder(order) if reuse else state.select(order)
                    kept.append(state)
            results.append(lp)
            storages.append({s.cache.keys[0].untyped_storage().data_ptr() for s in kept})
    assert torch.allclose(results[0], results[1], atol=TOL)
    assert torch.allclose(results[0], full[:, 35], atol=TOL)
    # two buffers take turns, fresh ones only when the length outgrows them (doubling); select: 72 new ones
    assert len(storages[0]) <= 8 and len(storages[1]) == 72


def test_a_reservation_past_the_limit_grows_by_doubling_beyond_it(monkeypatch):
    """Caches are reserved up to RESERVE_LIMIT columns (GPU memory is committed at once); a longer
    output grows them as an unreserved one does, with the same scores."""
    from transduce.models import kv_cache

    monkeypatch.setattr(kv_cache, "RESERVE_LIMIT", 8)
    model, batch, full, enc = _forty_tokens()
    with torch.no_grad():
        state = model.init_state(enc).reserve(10_000)
        assert state.cache.reserved == 8
        for t in range(40):  # past the initial 32 columns
            lp, state = model.decode_step(batch.tgt_in[:, t], enc, state)
            assert torch.allclose(lp, full[:, t], atol=TOL)
    assert state.cache.keys[0].size(2) >= 40


def test_streamed_greedy_keeps_one_cache_buffer_for_every_sentence():
    """Sentences take the rows of finished ones in place, and rows that finish early leave before
    outgrowing the room reserved for them: a stream of 24 sentences through 8 rows writes into
    the buffers it reserved at the start, and decodes as the whole batch at once."""
    model = _model(seed=5)
    g = torch.Generator().manual_seed(6)
    examples = [Example(torch.randint(4, SRC_V, (int(n),), generator=g).tolist(), None, i)
                for i, n in enumerate(torch.randint(1, 9, (24,), generator=g))]
    batch = collate(sorted(examples, key=lambda e: len(e.src), reverse=True))
    caps = torch.randint(1, 15, (24,), generator=g).sort(descending=True).values  # as a length ratio gives them
    storages = set()
    step = model.decode_step

    def recording_step(prev, enc, state):
        storages.add(state.cache.keys[0].untyped_storage().data_ptr())
        return step(prev, enc, state)

    args = (model, batch.src, batch.src_mask, batch.src_lengths, caps)
    whole = greedy_search(*args)
    model.decode_step = recording_step
    streamed = greedy_search(*args, max_rows=8)
    assert [h.tokens for h in streamed] == [h.tokens for h in whole]
    assert len(storages) == 1


def test_reordered_caches_give_back_the_rows_of_finished_sentences():
    """Once far fewer rows are left than the buffers hold (beam search after most sentences of a
    batch have finished), reordered rows go into buffers of their own size."""
    model, batch, full, enc = _forty_tokens()
    rows = torch.arange(4).repeat(40)  # 160 rows: 40 copies of each sentence
    with torch.no_grad():
        state = model.init_state(enc.select(rows))
        for t in range(3):
            _, state = model.decode_step(batch.tgt_in[rows, t], enc.select(rows), state)
        assert state.cache.keys[0].size(0) == 160
        order = torch.tensor([2, 1, 0])
        small = state.reorder(order).reorder(order)  # the second would fit in the first's 160-row buffers
        held = small.cache.keys[0].untyped_storage().nbytes() // small.cache.keys[0][0].numel() // 4
        assert held == 3
        lp, _ = model.decode_step(batch.tgt_in[[0, 1, 2], 3], enc.select(torch.tensor([0, 1, 2])), small)
    assert torch.allclose(lp, full[[0, 1, 2], 3], atol=TOL)


def test_glorot_initialisation_draws_projections_from_their_glorot_range():
    """model.init: glorot gives every projection the Glorot-uniform range of its own map (a fused
    query/key/value projection is three maps) and zero biases; embeddings stay N(0, H^-1/2)."""
    torch_init = _model(seed=2)
    glorot = _model(seed=2, init="glorot")
    attention = glorot.decoder_layers[0].self_attention
    bound = 2 ** -0.5 * (6 / (16 + 16)) ** 0.5  # gain 1/sqrt(2), fan in 16, fan out 16 per map
    for part in attention.qkv.weight.chunk(3):
        assert part.abs().max() <= bound and part.abs().max() > 0.8 * bound
    inner = glorot.encoder_layers[0].feed_forward.inner.weight  # 16 -> 32
    assert inner.abs().max() <= (6 / 48) ** 0.5 and inner.abs().max() > 0.8 * (6 / 48) ** 0.5
    assert not attention.qkv.bias.any() and not glorot.output.bias.any()
    assert torch.equal(glorot.src_embed.weight, torch_init.src_embed.weight)
    assert not torch.equal(attention.qkv.weight, torch_init.decoder_layers[0].self_attention.qkv.weight)


def test_rearranged_moves_only_the_rows_that_change_in_place_and_decodes_as_select():
    """Beam search drops finished sentences and places its beams so that few rows change:
    `rearranged` copies those rows within the same buffers (caches, encoder outputs and
    cross-attention keys/values) and decodes as `select` does."""
    model = _model()
    _, batch = _batch(src_lengths=(7, 3, 5, 1, 6, 2), tgt_lengths=(4, 6, 2, 3, 5, 4))
    # rows 0, 2 and 4 stay; 1 takes row 5 (not read otherwise); 3 takes row 2 (which stays)
    sources = torch.tensor([0, 5, 2, 2, 4])
    with torch.no_grad():
        enc, state = _after_two_steps(model, batch)
        expected_enc, expected_state = enc.select(sources), state.select(sources)
        lp_expected, _ = model.decode_step(batch.tgt_in[sources, 2], expected_enc, expected_state)
        buffer = state.cache.keys[0].untyped_storage().data_ptr()
        memory = enc.keys[0].untyped_storage().data_ptr()
        enc_r, state_r = enc.rearranged(sources), state.rearranged(sources)
        assert state_r.cache.keys[0].untyped_storage().data_ptr() == buffer
        assert enc_r.keys[0].untyped_storage().data_ptr() == memory
        lp_r, _ = model.decode_step(batch.tgt_in[sources, 2], enc_r, state_r)
    assert torch.allclose(lp_r, lp_expected, atol=TOL)


def test_rearranged_beams_share_their_source_rows():
    """Grouped encoder outputs (one row per sentence for its K beams) move a sentence at a time."""
    model = _model()
    _, batch = _batch()
    K = 3
    with torch.no_grad():
        enc = model.encode(batch.src, batch.src_mask, batch.src_lengths).repeat_rows(K)
        sentences = torch.tensor([0, 3, 2])  # sentence 1 finished: the last one takes its place
        rows = (sentences.unsqueeze(1) * K + torch.arange(K)).view(-1)
        expected = enc.select(rows)  # first: rearranged writes into enc's buffers
        moved = enc.rearranged(rows)
    assert moved.group == K and moved.memory.size(0) == 3
    for a, b in zip((moved.memory,) + moved.keys + moved.values, (expected.memory,) + expected.keys + expected.values):
        assert torch.equal(a, b)
    assert torch.equal(moved.src_mask, expected.src_mask)
