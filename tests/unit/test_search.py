"""Greedy and beam search checked exactly: a stub decoder with hand-set probabilities, an
exhaustive enumeration under a real model, and agreement between batch and single decoding."""
import functools
import itertools
import math

import pytest
import torch

from transduce.config import ModelConfig
from transduce.constants import BOS, EOS, PAD, UNK
from transduce.decoding.beam import beam_search
from transduce.decoding.greedy import greedy_search
from transduce.decoding.sampling import sample_search
from transduce.decoding.scoring import constrain, max_lengths, normalise
from transduce.models.builder import build_model
from transduce.models.rnn import RNNSeq2Seq

A, B_ = 4, 5  # the two real target tokens of the stub vocabulary
V = 6
ln = math.log

# ---- a decoder with hand-set probabilities ------------------------------------------------
# Each table maps a generated prefix (BOS excluded) to {token: probability}; a prefix missing
# from the table gets DEFAULT. Probabilities are looked up, never renormalised, so the scores
# search reports are sums of exactly these logarithms.
DEFAULT = {EOS: 0.7, A: 0.12, B_: 0.1, UNK: 0.08}

# greedy takes "a" (0.5 > 0.4), but "b" then ends with 0.9: beam finds the better "b".
LOCAL_TRAP = {
    (): {A: 0.5, B_: 0.4, EOS: 0.06, UNK: 0.04},
    (A,): {EOS: 0.35, A: 0.3, B_: 0.25, UNK: 0.1},
    (B_,): {EOS: 0.9, A: 0.04, B_: 0.03, UNK: 0.03},
}

# "a" keeps being likely and EOS unlikely: only the length cap ends the sentence.
CAPPED = {
    (): {A: 0.9, B_: 0.05, EOS: 0.03, UNK: 0.02},
    (A,): {A: 0.9, B_: 0.05, EOS: 0.03, UNK: 0.02},
    (A, A): {A: 0.9, B_: 0.05, EOS: 0.03, UNK: 0.02},
}

# the empty output is the most probable, but "a a" is better per token.
LENGTH_NORM = {
    (): {EOS: 0.4, A: 0.35, B_: 0.15, UNK: 0.1},
    (A,): {A: 0.6, B_: 0.35, EOS: 0.03, UNK: 0.02},
    (A, A): {EOS: 0.9, A: 0.05, B_: 0.03, UNK: 0.02},
}

# PAD and BOS get most of the mass; search must never emit them.
SPECIALS = {
    (): {PAD: 0.3, BOS: 0.3, A: 0.2, EOS: 0.1, UNK: 0.08},
    (A,): {BOS: 0.6, EOS: 0.3, A: 0.1},
}

TABLES = [LOCAL_TRAP, CAPPED, LENGTH_NORM, SPECIALS]


class StubEncoding:
    def __init__(self, case: torch.Tensor) -> None:
        self.case = case  # (B,) which table each row reads

    def select(self, indices: torch.Tensor) -> "StubEncoding":
        return StubEncoding(self.case[indices])

    def repeat_rows(self, times: int) -> "StubEncoding":
        return StubEncoding(self.case.repeat_interleave(times))

    def rearranged(self, sources: torch.Tensor) -> "StubEncoding":
        return self.select(sources)


class StubState:
    attention = None  # the stub has no attention weights

    def __init__(self, prefix: torch.Tensor) -> None:
        self.prefix = prefix  # (B, t) tokens fed so far, BOS first

    def select(self, indices: torch.Tensor) -> "StubState":
        return StubState(self.prefix[indices])

    def reserve(self, columns: int) -> "StubState":
        return self

    def reorder(self, indices: torch.Tensor) -> "StubState":
        return self.select(indices)

    def rearranged(self, sources: torch.Tensor) -> "StubState":
        return self.select(sources)


class StubDecoder:
    """The Seq2Seq protocol over lookup tables: the source's first token picks the table."""

    def __init__(self, tables: list[dict]) -> None:
        self.tables = tables
        self.steps = 0

    def encode(self, src, src_mask, src_lengths, src_ext=None):
        return StubEncoding(src[:, 0].clone())

    def init_state(self, enc):
        return StubState(torch.empty((enc.case.size(0), 0), dtype=torch.long))

    def decode_step(self, prev_tokens, enc, state):
        prefix = torch.cat([state.prefix, prev_tokens.unsqueeze(1)], dim=1)  # (B, t+1)
        assert prefix[:, 0].eq(BOS).all()  # rows of dead beams (score -inf) may feed anything after
        log_probs = torch.full((prefix.size(0), V), float("-inf"))
        for row, (case, tokens) in enumerate(zip(enc.case.tolist(), prefix[:, 1:].tolist())):
            for token, p in self.tables[case].get(tuple(tokens), DEFAULT).items():
                log_probs[row, token] = ln(p)
        self.steps += 1
        return log_probs, StubState(prefix)


def stub_batch(cases: list[int], caps: list[int]):
    """Sources of one token naming the table, and their caps."""
    src = torch.tensor(cases).unsqueeze(1)  # (B, 1)
    return src, torch.ones_like(src, dtype=torch.bool), torch.ones(len(cases), dtype=torch.long), torch.tensor(caps)


def check(hyps, expected, penalty="avg"):
    """expected: (tokens, log-probability) best first."""
    assert [h.tokens for h in hyps] == [tokens for tokens, _ in expected]
    for hyp, (tokens, log_prob) in zip(hyps, expected):
        assert hyp.log_prob == pytest.approx(log_prob, abs=1e-6)
        expected_score = log_prob / (len(tokens) + 1) if penalty == "avg" else log_prob  # EOS counts
        assert hyp.score == pytest.approx(expected_score, abs=1e-6)


def test_stub_beam_escapes_the_local_trap_that_greedy_falls_into():
    batch = stub_batch([0], [10])
    greedy = greedy_search(StubDecoder(TABLES), *batch)
    check(greedy, [([A], ln(0.5) + ln(0.35))])
    # step 0 keeps a, b; at step 1 the two best extensions both end (b EOS 0.36, a EOS 0.175),
    # so beam 2 holds 2 finished hypotheses and stops
    beam = beam_search(StubDecoder(TABLES), *batch, beam=2, nbest=2)[0]
    check(beam, [([B_], ln(0.4) + ln(0.9)), ([A], ln(0.5) + ln(0.35))])
    assert beam[0].score > greedy[0].score


def test_stub_length_cap_forces_eos_with_its_own_probability():
    batch = stub_batch([1], [2])
    check(greedy_search(StubDecoder(TABLES), *batch), [([A, A], ln(0.9) + ln(0.9) + ln(0.03))])
    # step 0 keeps a, b; step 1 keeps a a (0.81), a b (0.045); step 2 is at the cap: both end
    check(
        beam_search(StubDecoder(TABLES), *batch, beam=2, nbest=2)[0],
        [([A, B_], ln(0.9) + ln(0.05) + ln(0.7)), ([A, A], ln(0.9) + ln(0.9) + ln(0.03))],
    )


def test_stub_cap_zero_gives_the_empty_output():
    batch = stub_batch([1], [0])
    check(greedy_search(StubDecoder(TABLES), *batch), [([], ln(0.03))])
    check(beam_search(StubDecoder(TABLES), *batch, beam=3, nbest=3)[0], [([], ln(0.03))])


def test_stub_length_normalisation_lets_a_longer_hypothesis_win():
    batch = stub_batch([2], [10])
    # step 0 ends [] (0.4) and keeps a, b; step 1 keeps a a (0.21), a b (0.1225) over b EOS (0.105);
    # step 2 ends a a (0.189) and a b (0.08575): three finished, search stops
    empty, aa, ab = ([], ln(0.4)), ([A, A], ln(0.35) + ln(0.6) + ln(0.9)), ([A, B_], ln(0.35) + ln(0.35) + ln(0.7))
    check(beam_search(StubDecoder(TABLES), *batch, beam=2, nbest=3)[0], [aa, ab, empty], "avg")
    check(beam_search(StubDecoder(TABLES), *batch, beam=2, nbest=3, length_penalty="none")[0],
          [empty, aa, ab], "none")
    check(beam_search(StubDecoder(TABLES), *batch, beam=2, nbest=1)[0], [aa], "avg")
    check(greedy_search(StubDecoder(TABLES), *batch), [empty])


def test_stub_never_emits_pad_or_bos():
    batch = stub_batch([3], [10])
    check(greedy_search(StubDecoder(TABLES), *batch), [([A], ln(0.2) + ln(0.3))])
    # step 0 ends [] (0.1), keeps a, unk; step 1 ends a (0.06) and unk (0.056): three finished
    check(
        beam_search(StubDecoder(TABLES), *batch, beam=2, nbest=3)[0],
        [([A], ln(0.2) + ln(0.3)), ([UNK], ln(0.08) + ln(0.7)), ([], ln(0.1))],
    )


def test_stub_batch_equals_one_sentence_at_a_time():
    cases, caps = [0, 1, 2, 3, 1, 2], [10, 2, 10, 10, 5, 1]
    batch = stub_batch(cases, caps)
    greedy = greedy_search(StubDecoder(TABLES), *batch)
    beams = beam_search(StubDecoder(TABLES), *batch, beam=3, nbest=3)
    for i, (case, cap) in enumerate(zip(cases, caps)):
        single = stub_batch([case], [cap])
        assert greedy[i] == greedy_search(StubDecoder(TABLES), *single)[0]
        assert beams[i] == beam_search(StubDecoder(TABLES), *single, beam=3, nbest=3)[0]


# ---- a real model -------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def copy_model(arch: str = "lstm", attention: str = "general", vocab: int = V, steps: int = 40) -> RNNSeq2Seq:
    """A seeded model after a few updates on copying strings over the real tokens.

    Partly trained, its distributions are far from uniform and it ends outputs at varied lengths.
    """
    torch.manual_seed(0)
    cfg = ModelConfig(
        arch=arch, embed_dim=16, hidden=16, encoder_layers=1, decoder_layers=2, attention=attention, dropout=0.0
    )
    model = RNNSeq2Seq(cfg, vocab, vocab)
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    n, S = 16, 4
    for _ in range(steps):
        lengths = torch.randint(1, S + 1, (n,), generator=gen)
        src = torch.randint(4, vocab, (n, S), generator=gen) * (torch.arange(S) < lengths.unsqueeze(1))  # (n, S)
        tgt_in = torch.cat([torch.full((n, 1), BOS), src], dim=1)  # (n, S+1)
        tgt_out = torch.cat([src, torch.zeros(n, 1, dtype=torch.long)], dim=1)
        tgt_out[torch.arange(n), lengths] = EOS
        log_probs = model(src, src != PAD, lengths, tgt_in)  # (n, S+1, V)
        loss = torch.nn.functional.nll_loss(log_probs.reshape(-1, vocab), tgt_out.view(-1), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def pad(sources: list[list[int]]):
    """Right-padded batch, mask and lengths."""
    S = max(len(s) for s in sources)
    src = torch.tensor([s + [PAD] * (S - len(s)) for s in sources])  # (B, S)
    return src, src != PAD, torch.tensor([len(s) for s in sources])


@torch.inference_mode()
def score_all(model, source: list[int], outputs: list[tuple[int, ...]]) -> list[float]:
    """Model log-probability of each output followed by EOS, one decode_step per token."""
    src, mask, lengths = pad([source])
    n = len(outputs)
    enc = model.encode(src, mask, lengths).select(torch.zeros(n, dtype=torch.long))
    state = model.init_state(enc)
    T = max(len(o) for o in outputs) + 1
    targets = torch.tensor([list(o) + [EOS] + [PAD] * (T - 1 - len(o)) for o in outputs])  # (n, T)
    prev = torch.full((n,), BOS)
    total = torch.zeros(n, dtype=torch.float64)
    for t in range(T):
        log_probs, state = model.decode_step(prev, enc, state)  # (n, V)
        step = log_probs.gather(1, targets[:, t : t + 1]).squeeze(1).double()
        total += step.masked_fill(targets[:, t] == PAD, 0.0)
        prev = targets[:, t]
    return total.tolist()


SOURCES = [[4], [5, 4], [4, 4, 5], [5, 5, 4], [4, 5, 4, 5, 5]]


def test_beam_equals_exhaustive_enumeration_under_a_real_model():
    model = copy_model()
    cap = 4
    outputs = [o for n in range(cap + 1) for o in itertools.product([UNK, A, B_], repeat=n)]  # 121
    src, mask, lengths = pad(SOURCES)
    # 128 beams hold every live prefix (at most 3^4 = 81) and every candidate of a step (at most
    # 27 x 4 = 108) among the first K, and search never holds K finished hypotheses (121 < 128)
    beams = beam_search(model, src, mask, lengths, torch.full((len(SOURCES),), cap), beam=128, nbest=128)
    winners = set()
    for source, hyps in zip(SOURCES, beams):
        log_probs = score_all(model, source, outputs)
        exhaustive = {o: lp / (len(o) + 1) for o, lp in zip(outputs, log_probs)}
        found = {tuple(h.tokens): h for h in hyps}
        assert found.keys() == exhaustive.keys()  # every output of length <= 4 was finished
        for o, log_prob in zip(outputs, log_probs):
            assert found[o].log_prob == pytest.approx(log_prob, abs=1e-5)
            assert found[o].score == pytest.approx(exhaustive[o], abs=1e-5)
        best = max(exhaustive, key=exhaustive.get)
        assert tuple(hyps[0].tokens) == best
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        winners.add(best)
    assert len(winners) > 1  # the model's best output depends on the source


@pytest.mark.parametrize("arch", ["lstm", "gru"])
@pytest.mark.parametrize("attention", ["dot", "general", "bahdanau"])
def test_greedy_equals_beam_one(arch, attention):
    model = copy_model(arch, attention, vocab=12)
    gen = torch.Generator().manual_seed(5)
    sources = [torch.randint(4, 12, (n,), generator=gen).tolist() for n in (5, 1, 8, 3, 6)]
    src, mask, lengths = pad(sources)
    caps = torch.tensor([9, 4, 12, 6, 10])
    greedy = greedy_search(model, src, mask, lengths, caps)
    beam = beam_search(model, src, mask, lengths, caps, beam=1)
    for g, (b,) in zip(greedy, beam):
        assert g.tokens == b.tokens
        assert g.log_prob == pytest.approx(b.log_prob, abs=1e-4)
        assert g.score == pytest.approx(b.score, abs=1e-4)
    assert len({len(g.tokens) for g in greedy}) > 1  # some sentences end before their cap


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_batch_with_padding_equals_one_sentence_at_a_time(arch):
    model = copy_model(arch, "bahdanau" if arch == "gru" else "general", vocab=12)
    gen = torch.Generator().manual_seed(9)
    sources = [torch.randint(4, 12, (n,), generator=gen).tolist() for n in (3, 7, 1, 5, 2)]
    src, mask, lengths = pad(sources)
    caps = torch.tensor([6, 10, 3, 8, 5])
    greedy = greedy_search(model, src, mask, lengths, caps)
    beams = beam_search(model, src, mask, lengths, caps, beam=5, nbest=5)
    for i, source in enumerate(sources):
        one = pad([source]) + (caps[i : i + 1],)
        g = greedy_search(model, *one)[0]
        assert greedy[i].tokens == g.tokens and greedy[i].score == pytest.approx(g.score, abs=1e-5)
        single = beam_search(model, *one, beam=5, nbest=5)[0]
        assert [h.tokens for h in beams[i]] == [h.tokens for h in single]
        assert [h.score for h in beams[i]] == pytest.approx([h.score for h in single], abs=1e-5)
        assert len(single) == 5


# ---- scoring pieces -----------------------------------------------------------------------
def test_max_lengths_absolute_and_ratio():
    lengths = torch.tensor([1, 4, 10, 100])
    assert max_lengths(lengths, 50, None).tolist() == [50, 50, 50, 50]
    assert max_lengths(lengths, 50, 1.5).tolist() == [2, 6, 15, 50]  # ceil(1.5 x n), at most 50
    assert max_lengths(lengths, 50, 0.1).tolist() == [1, 1, 1, 10]  # at least 1
    assert max_lengths(lengths, 50, 1.5).dtype == torch.long


def test_max_lengths_ratio_is_exact_for_whole_products():
    assert max_lengths(torch.tensor([50, 100]), 200, 1.1).tolist() == [55, 110]


def test_constrain_sets_pad_and_bos_to_minus_inf_only():
    log_probs = torch.log_softmax(torch.randn(3, V), dim=-1)
    expected = log_probs.clone()
    out = constrain(log_probs, 0, 0, torch.zeros(3, dtype=torch.bool))
    assert out is log_probs  # in place
    assert torch.isneginf(out[:, [PAD, BOS]]).all()
    keep = [UNK, EOS, A, B_]
    assert torch.equal(out[:, keep], expected[:, keep])


def test_constrain_leaves_only_eos_on_rows_at_their_cap():
    log_probs = torch.log_softmax(torch.randn(4, V), dim=-1)
    expected = log_probs.clone()
    rows = torch.tensor([True, False, True, False])
    out = constrain(log_probs, 5, 0, rows)
    assert torch.equal(out[~rows][:, [UNK, EOS, A, B_]], expected[~rows][:, [UNK, EOS, A, B_]])
    assert torch.equal(out[rows, EOS], expected[rows, EOS])  # EOS keeps its own probability
    others = [t for t in range(V) if t != EOS]
    assert torch.isneginf(out[rows][:, others]).all()


def test_constrain_forbids_eos_before_min_length_but_the_cap_wins():
    log_probs = torch.log_softmax(torch.randn(2, V), dim=-1)
    expected = log_probs.clone()
    at_cap = torch.tensor([True, False])
    out = constrain(log_probs, 2, 3, at_cap)
    assert torch.isneginf(out[1, EOS])  # before min_length: no EOS
    assert torch.equal(out[0, EOS], expected[0, EOS])  # at its cap the row must end anyway
    assert torch.isfinite(out[1, [UNK, A, B_]]).all()


def test_min_length_longer_than_cap_still_ends_at_the_cap():
    torch.manual_seed(3)
    model = RNNSeq2Seq(ModelConfig(hidden=16, embed_dim=16, dropout=0.0), V, V).eval()
    src = torch.tensor([[4, 5, 4]])
    mask, lengths, caps = src.ne(PAD), torch.tensor([3]), torch.tensor([2])
    greedy = greedy_search(model, src, mask, lengths, caps, min_length=5)
    beam = beam_search(model, src, mask, lengths, caps, beam=3, min_length=5)
    assert len(greedy[0].tokens) == 2
    assert beam[0] and len(beam[0][0].tokens) == 2


def test_normalise():
    assert normalise(-6.0, 3, "avg") == pytest.approx(-2.0)
    assert normalise(-6.0, 3, "none") == pytest.approx(-6.0)
    assert normalise(-6.0, 0, "avg") == pytest.approx(-6.0)


def test_normalise_gnmt_by_hand():
    # ((5 + 3) / 6) ** 0.6 = (4/3) ** 0.6 = 1.1884016...; -6 / 1.1884016 = -5.0487982...
    assert normalise(-6.0, 3, "gnmt") == pytest.approx(-5.0487982, abs=1e-6)
    assert normalise(-6.0, 3, "gnmt", 1.0) == pytest.approx(-4.5)  # -6 / (8 / 6)
    assert normalise(-6.0, 3, "gnmt", 0.0) == pytest.approx(-6.0)
    assert normalise(-6.0, 1, "gnmt", 2.0) == pytest.approx(-6.0)  # (5 + 1) / 6 = 1


def test_gnmt_scores_in_every_search():
    batch = stub_batch([2], [10])
    alpha = 0.8
    hyps = beam_search(StubDecoder(TABLES), *batch, beam=2, nbest=3, length_penalty="gnmt", length_alpha=alpha)[0]
    hyps += greedy_search(StubDecoder(TABLES), *batch, length_penalty="gnmt", length_alpha=alpha)
    hyps += sample_search(StubDecoder(TABLES), *batch, length_penalty="gnmt", length_alpha=alpha,
                          generator=torch.Generator().manual_seed(0))
    for hyp in hyps:
        assert hyp.score == pytest.approx(hyp.log_prob / ((5 + len(hyp.tokens) + 1) / 6) ** alpha, abs=1e-6)
    # (a a): log 0.189 / (8/6)^0.8 = -1.32 beats (a b): log 0.08575 / (8/6)^0.8 = -1.94; the empty
    # output: log 0.4 = -0.92 beats both
    assert [h.tokens for h in hyps[:3]] == [[], [A, A], [A, B_]]


def test_constrain_suppresses_unk_only_when_asked():
    log_probs = torch.log_softmax(torch.randn(2, V), dim=-1)
    expected = log_probs.clone()
    out = constrain(log_probs, 0, 0, torch.zeros(2, dtype=torch.bool), suppress_unk=True)
    assert torch.isneginf(out[:, UNK]).all()
    assert torch.equal(out[:, [EOS, A, B_]], expected[:, [EOS, A, B_]])
    assert torch.isfinite(constrain(expected.clone(), 0, 0, torch.zeros(2, dtype=torch.bool))[:, UNK]).all()


def test_constrain_lets_a_row_with_nothing_else_end_before_min_length():
    log_probs = torch.log_softmax(torch.randn(2, V), dim=-1)
    expected = log_probs.clone()
    history = torch.tensor([[A, B_, UNK, A], [A, B_, A, B_]])
    # unigram blocking bans a, b and unk in row 0 (all but EOS) and a, b in row 1 (unk is left)
    out = constrain(log_probs, torch.tensor([4, 4]), 6, torch.zeros(2, dtype=torch.bool), history=history,
                    no_repeat_ngram=1)
    assert out[0, EOS] == expected[0, EOS]
    assert torch.isneginf(out[0, [A, B_, UNK]]).all()
    assert torch.isneginf(out[1, [A, B_, EOS]]).all() and out[1, UNK] == expected[1, UNK]


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_streamed_greedy_equals_whole_batch(arch):
    """Sentences joining a running batch (max_rows) decode exactly as in one batch."""
    torch.manual_seed(5)
    model = RNNSeq2Seq(ModelConfig(arch=arch, hidden=16, embed_dim=16, dropout=0.0), V, V).eval()
    lengths = torch.tensor([7, 7, 6, 5, 5, 4, 3, 2, 2, 1])
    src = torch.randint(4, V, (10, 7))
    src[torch.arange(7).unsqueeze(0) >= lengths.unsqueeze(1)] = PAD
    mask = src.ne(PAD)
    caps = torch.tensor([9, 3, 8, 1, 6, 9, 2, 9, 4, 5])
    for min_length in (0, 2):
        whole = greedy_search(model, src, mask, lengths, caps, min_length=min_length)
        for max_rows in (1, 3, 4):
            streamed = greedy_search(model, src, mask, lengths, caps, min_length=min_length, max_rows=max_rows)
            assert [h.tokens for h in streamed] == [h.tokens for h in whole]
            assert [h.score for h in streamed] == pytest.approx([h.score for h in whole], abs=1e-5)


def test_beam_with_ngram_blocking_equals_enumeration_of_outputs_without_repeats():
    model = copy_model()
    cap = 4
    outputs = [o for n in range(cap + 1) for o in itertools.product([UNK, A, B_], repeat=n)
               if len(set(itertools.pairwise(o))) == max(n - 1, 0)]  # no bigram twice
    src, mask, lengths = pad(SOURCES)
    beams = beam_search(model, src, mask, lengths, torch.full((len(SOURCES),), cap), beam=128, nbest=128,
                        no_repeat_ngram=2)
    for source, hyps in zip(SOURCES, beams):
        log_probs = dict(zip(outputs, score_all(model, source, outputs)))
        found = {tuple(h.tokens): h.log_prob for h in hyps}
        assert found.keys() == log_probs.keys()
        for o, log_prob in found.items():
            assert log_prob == pytest.approx(log_probs[o], abs=1e-5)


# ---- attention weights ---------------------------------------------------------------------
@torch.inference_mode()
def forced_attention(model, source: list[int], tokens: list[int]) -> torch.Tensor:
    """Attention of each step when the output is fed token by token: (len(tokens) + 1, S)."""
    src, mask, lengths = pad([source])
    enc = model.encode(src, mask, lengths)
    state = model.init_state(enc)
    rows = []
    for prev in [BOS] + tokens:
        _, state = model.decode_step(torch.tensor([prev]), enc, state)
        rows.append(state.attention[0])
    return torch.stack(rows)


def check_attention(model, sources, hyps):
    for source, hyp in zip(sources, hyps):
        weights = torch.tensor(hyp.attention)
        assert weights.shape == (len(hyp.tokens) + 1, len(source))  # one row per token and one for EOS
        torch.testing.assert_close(weights.sum(dim=1), torch.ones(len(hyp.tokens) + 1))
        torch.testing.assert_close(weights, forced_attention(model, source, hyp.tokens), atol=1e-5, rtol=0)


ATTENTION_SOURCES = [[4, 7, 9, 5, 6, 11, 4], [5], [8, 8, 4, 10], [6, 9, 11], [4, 5, 6, 7, 8], [10, 4]]


def attention_model(arch: str):
    if arch == "transformer":  # untrained: the weights only need to differ from step to step
        torch.manual_seed(2)
        cfg = ModelConfig(arch="transformer", embed_dim=16, hidden=16, heads=4, ff_size=32, encoder_layers=1,
                          decoder_layers=2, dropout=0.0)
        return build_model(cfg, 12, 12).eval()
    return copy_model(arch, "bahdanau" if arch == "gru" else "general", vocab=12)


@pytest.mark.parametrize("arch", ["lstm", "gru", "transformer"])
def test_attention_rows_follow_the_chosen_hypotheses(arch):
    model = attention_model(arch)
    src, mask, lengths = pad(ATTENTION_SOURCES)
    caps = torch.tensor([9, 3, 6, 5, 7, 4])
    for max_rows in (None, 2):  # rows joining and leaving a streamed batch
        greedy = greedy_search(model, src, mask, lengths, caps, max_rows=max_rows, attention=True)
        check_attention(model, ATTENTION_SOURCES, greedy)
    beams = beam_search(model, src, mask, lengths, caps, beam=4, nbest=4, attention=True)
    assert all(len(row) == 4 for row in beams)
    for source, row in zip(ATTENTION_SOURCES, beams):  # beams reordered at every step
        check_attention(model, [source] * len(row), row)
    samples = sample_search(model, src, mask, lengths, caps, attention=True, generator=torch.Generator().manual_seed(0))
    check_attention(model, ATTENTION_SOURCES, samples)


def test_attention_is_none_unless_asked_or_when_the_model_has_none():
    model = copy_model(vocab=12)
    src, mask, lengths = pad(ATTENTION_SOURCES)
    caps = torch.full((len(ATTENTION_SOURCES),), 5)
    assert all(h.attention is None for h in greedy_search(model, src, mask, lengths, caps))
    assert all(h.attention is None for row in beam_search(model, src, mask, lengths, caps, beam=2) for h in row)
    batch = stub_batch([0, 1], [10, 2])
    assert all(h.attention is None for h in greedy_search(StubDecoder(TABLES), *batch, attention=True))
    beams = beam_search(StubDecoder(TABLES), *batch, beam=2, nbest=2, attention=True)
    assert all(h.attention is None for row in beams for h in row)


@pytest.mark.parametrize("arch", ["lstm", "transformer"])
def test_beam_scores_the_first_step_once_per_sentence(arch):
    """Before the first token a sentence's K beams are identical: the first step runs one row per
    sentence, the next ones K; the hypotheses keep their full-pass log-probabilities."""
    model = attention_model(arch)
    rows, step = [], model.decode_step
    model.decode_step = lambda prev, enc, state: (rows.append(prev.numel()), step(prev, enc, state))[1]
    src, mask, lengths = pad(ATTENTION_SOURCES)
    beams = beam_search(model, src, mask, lengths, torch.full((len(ATTENTION_SOURCES),), 6), beam=4, nbest=4)
    assert rows[:2] == [len(ATTENTION_SOURCES), 4 * len(ATTENTION_SOURCES)]
    del model.decode_step
    for source, hyps in zip(ATTENTION_SOURCES, beams):
        expected = score_all(model, source, [tuple(h.tokens) for h in hyps])
        assert [h.log_prob for h in hyps] == pytest.approx(expected, abs=1e-5)


def test_best_extensions_equal_the_full_top_k():
    from transduce.decoding.beam import BLOCK, best_extensions
    gen = torch.Generator().manual_seed(0)
    for n, R, V in ((7, 5, 8001), (3, 1, 4 * BLOCK), (4, 5, 4 * BLOCK + 3), (2, 4, 1000)):
        K = 5 if R != 4 else 4
        log_probs = torch.log_softmax(3 * torch.randn(n * R, V, generator=gen), dim=1)
        log_probs[:, :2] = float("-inf")  # as constrain leaves PAD and BOS
        log_probs[0, 17:] = float("-inf")  # a row with few choices left
        scores = torch.randn(n, K, generator=gen)
        scores[-1, 2:] = float("-inf")  # beams that died
        candidates = (scores.unsqueeze(2) + log_probs.view(n, R, V)).view(n, K * V)
        expected, ids = candidates.topk(2 * K, dim=1)
        got, beams, tokens = best_extensions(scores, log_probs, 2 * K)
        assert torch.equal(got, expected)
        assert torch.equal(beams, ids // V) and torch.equal(tokens, ids % V)


def test_placed_keeps_sentences_in_their_rows_and_fills_the_holes_from_the_end():
    from transduce.decoding.beam import placed
    assert placed([0, 1, 2], 3) == [0, 1, 2]
    assert placed([0, 2, 3, 5], 6) == [0, 5, 2, 3]  # 1 and 4 left: 5 takes the place of 1
    assert placed([4, 5], 6) == [4, 5]  # nothing stays: every kept sentence moves
    assert placed([1], 2) == [1]


def test_beam_slots_keep_each_extended_beam_in_its_slot():
    from transduce.decoding.beam import beam_slots
    origins = torch.tensor([[0, 1, 2, 3, 4], [2, 2, 0, 2, 4], [3, 3, 3, 3, 3], [4, 3, 2, 1, 0]])
    slots = beam_slots(origins)
    for o, s in zip(origins.tolist(), slots.tolist()):
        assert sorted(s) == list(range(5))  # a permutation of the extensions
        placed_origins = [o[c] for c in s]
        for beam in set(o):
            assert placed_origins[beam] == beam  # an extension of beam j sits in slot j
        # the first extension of each beam is the one that stays; later ones fill the others in order
        assert s[o[0]] == 0
    assert slots.tolist()[1] == [2, 1, 0, 3, 4]  # beam 2's first extension stays, the next take 1 and 3
