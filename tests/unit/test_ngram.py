"""n-gram blocking: the exact tokens banned on hand-made histories, agreement with a plain loop,
and no repeated n-gram in what greedy, beam and sampling produce from a decoder that loves to repeat."""
import itertools
import math
import random

import pytest
import torch

from transduce.config import DecodeConfig
from transduce.constants import BOS, EOS, PAD, UNK
from transduce.data.batching import Example
from transduce.decoding.beam import beam_search
from transduce.decoding.greedy import greedy_search
from transduce.decoding.ngram import block_repeated_ngrams, repeated_ngram_bans
from transduce.decoding.sampling import sample_search
from transduce.decoding.search import decode_examples

A, B_, C = 4, 5, 6
V = 8


def banned(history, lengths, n) -> list[set[int]]:
    rows, tokens = repeated_ngram_bans(torch.tensor(history), lengths if isinstance(lengths, int)
                                       else torch.tensor(lengths), n)
    out = [set() for _ in history]
    for r, t in zip(rows.tolist(), tokens.tolist()):
        out[r].add(t)
    return out


def test_bans_on_a_hand_made_history():
    history = [[A, B_, A, C, A]]
    # last token a; bigrams starting with a: (a b), (a c)
    assert banned(history, 5, 2) == [{B_, C}]
    # last two tokens (c a); no earlier (c a ...) trigram; the final window is not complete
    assert banned(history, 5, 3) == [set()]
    assert banned([[A, B_, C, A, B_]], 5, 3) == [{C}]  # (a b) was followed by c
    assert banned(history, 5, 1) == [{A, B_, C}]  # unigrams: every token already generated
    assert banned(history, 5, 6) == [set()]  # longer than the history


def test_bans_respect_each_rows_own_length():
    history = [
        [A, A, B_, A, EOS, EOS],  # 4 generated: last a, bigrams (a a), (a b)
        [B_, C, B_, EOS, EOS, EOS],  # 3 generated: last b, bigram (b c)
        [C, EOS, EOS, EOS, EOS, EOS],  # 1 generated: no complete bigram
        [A, B_, A, B_, A, B_],  # 6 generated: last b, bigram (b a)
    ]
    assert banned(history, [4, 3, 1, 6], 2) == [{A, B_}, {C}, set(), {A}]
    assert banned(history, [4, 3, 1, 6], 3) == [set(), set(), set(), {A}]  # (a b) -> a


def _reference(row: list[int], n: int) -> set[int]:
    suffix = tuple(row[len(row) - n + 1:]) if n > 1 else ()
    return {row[j + n - 1] for j in range(len(row) - n + 1) if tuple(row[j:j + n - 1]) == suffix}


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bans_equal_a_plain_loop(n):
    rng = random.Random(n)
    lengths = [rng.randint(0, 12) for _ in range(40)]
    history = [[rng.choice([A, B_, C]) for _ in range(k)] + [EOS] * (12 - k) for k in lengths]
    assert banned(history, lengths, n) == [_reference(row[:k], n) for row, k in zip(history, lengths)]


def test_block_sets_exactly_the_banned_tokens_to_minus_inf():
    log_probs = torch.log_softmax(torch.randn(2, V), dim=1)
    expected = log_probs.clone()
    out = block_repeated_ngrams(log_probs, torch.tensor([[A, B_, A], [C, C, B_]]), 3, 2)
    assert out is log_probs
    assert torch.isinf(out).nonzero().tolist() == [[0, B_]]
    assert torch.equal(out[1], expected[1])


# ---- search end to end: a decoder that always prefers the same tokens ----------------------
class Encoding:
    def __init__(self, n: int) -> None:
        self.n = n

    def select(self, indices: torch.Tensor) -> "Encoding":
        return Encoding(indices.numel())

    def repeat_rows(self, times: int) -> "Encoding":
        return Encoding(self.n * times)

    def rearranged(self, sources: torch.Tensor) -> "Encoding":
        return self.select(sources)

    def put(self, slots: torch.Tensor, other: "Encoding") -> "Encoding":
        return self


class State(Encoding):
    attention = None

    def reserve(self, columns: int) -> "State":
        return self

    def select(self, indices: torch.Tensor) -> "State":
        return State(indices.numel())

    def reorder(self, indices: torch.Tensor) -> "State":
        return self.select(indices)

    def rearranged(self, sources: torch.Tensor) -> "State":
        return self.select(sources)


class RepeatingDecoder(torch.nn.Module):
    """Every step gives the same probabilities: left alone, search repeats its favourite tokens."""

    def __init__(self, probs: dict[int, float]) -> None:
        super().__init__()
        self.log_probs = torch.full((V,), float("-inf"))
        for token, p in probs.items():
            self.log_probs[token] = math.log(p)

    def encode(self, src, src_mask, src_lengths, src_ext=None):
        return Encoding(src.size(0))

    def init_state(self, enc):
        return State(enc.n)

    def decode_step(self, prev_tokens, enc, state):
        return self.log_probs.expand(prev_tokens.size(0), V).clone(), state


LOOPING = {A: 0.5, B_: 0.24, C: 0.05, UNK: 0.11, EOS: 0.1}
CAP = 10


def _batch(n: int = 3):
    src = torch.full((n, 2), A)
    return src, src.ne(PAD), torch.full((n,), 2), torch.full((n,), CAP)


def _bigrams(tokens: list[int]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(tokens))


def test_greedy_without_blocking_repeats_and_with_blocking_takes_the_next_best():
    model = RepeatingDecoder(LOOPING)
    assert greedy_search(model, *_batch())[0].tokens == [A] * CAP
    # a a; a would repeat (a a): b; a (b a); a and b would repeat: unk; a (unk a); a, b and unk
    # would repeat, and EOS (0.1) beats c (0.05)
    hyp = greedy_search(model, *_batch(), no_repeat_ngram=2)[0]
    assert hyp.tokens == [A, A, B_, A, UNK, A]
    assert hyp.log_prob == pytest.approx(4 * math.log(0.5) + math.log(0.24) + math.log(0.11) + math.log(0.1))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_search_repeats_an_ngram(n):
    model = RepeatingDecoder(LOOPING)
    outputs = [h.tokens for h in greedy_search(model, *_batch(), no_repeat_ngram=n, max_rows=2)]
    outputs += [h.tokens for row in beam_search(model, *_batch(), beam=4, nbest=4, no_repeat_ngram=n) for h in row]
    for seed in range(4):
        generator = torch.Generator().manual_seed(seed)
        outputs += [h.tokens for h in sample_search(model, *_batch(), no_repeat_ngram=n, generator=generator)]
    assert len(outputs) >= 3 + 3 + 12
    for tokens in outputs:
        ngrams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        assert len(set(ngrams)) == len(ngrams), tokens


def test_blocking_that_leaves_nothing_but_eos_before_min_length_ends_the_output():
    model = RepeatingDecoder({A: 0.9, EOS: 0.1})
    hyp = greedy_search(model, *_batch(1), min_length=5, no_repeat_ngram=1)[0]
    assert hyp.tokens == [A]  # a second a is banned and EOS, though early, is all that is left
    assert hyp.log_prob == pytest.approx(math.log(0.9) + math.log(0.1))


PREFERS_UNK = {UNK: 0.6, A: 0.2, B_: 0.1, EOS: 0.1}


def test_suppress_unk_in_every_search():
    model = RepeatingDecoder(PREFERS_UNK)
    assert UNK in greedy_search(model, *_batch())[0].tokens  # the stub does prefer it
    outputs = [h.tokens for h in greedy_search(model, *_batch(), suppress_unk=True)]
    outputs += [h.tokens for row in beam_search(model, *_batch(), beam=3, nbest=3, suppress_unk=True) for h in row]
    generator = torch.Generator().manual_seed(0)
    outputs += [h.tokens for h in sample_search(model, *_batch(), suppress_unk=True, generator=generator)]
    assert len(outputs) == 3 + 9 + 3
    assert all(UNK not in tokens for tokens in outputs)
    assert outputs[0] == [A] * CAP


@pytest.mark.parametrize("options", [{"beam": 1}, {"beam": 3}, {"sample": True, "seed": 2}])
def test_decode_examples_passes_the_rules_to_every_search(options):
    model = RepeatingDecoder(PREFERS_UNK)
    examples = [Example([A, B_], None, i) for i in range(3)]
    cfg = DecodeConfig(max_length=CAP, no_repeat_ngram=2, suppress_unk=True, **options)
    for row in decode_examples(model, examples, cfg, nbest=2 if options.get("beam", 1) > 1 else 1):
        for hyp in row:
            assert UNK not in hyp.tokens and BOS not in hyp.tokens
            assert len(set(_bigrams(hyp.tokens))) == len(_bigrams(hyp.tokens))
