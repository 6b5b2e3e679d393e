"""Padding and batching: BOS/EOS placement, masks, token budgets, coverage, determinism, little padding."""
import random

import torch

from transduce.constants import BOS, EOS, PAD
from transduce.data.batching import (
    Example,
    collate,
    padded_size,
    sentence_batches,
    token_batches,
)


def _examples(n: int, seed: int = 0, max_len: int = 30) -> list[Example]:
    rng = random.Random(seed)
    return [
        Example([rng.randint(4, 50) for _ in range(rng.randint(1, max_len))],
                [rng.randint(4, 50) for _ in range(rng.randint(1, max_len))], i)
        for i in range(n)
    ]


def _longest(ex: Example) -> int:
    return max(len(ex.src), len(ex.tgt) + 1)


def test_collate_places_bos_eos_and_pads_with_zero():
    batch = collate([Example([5, 6, 7], [8, 9], 3), Example([10], [11, 12, 13, 14], 7)])
    assert batch.src.tolist() == [[5, 6, 7], [10, PAD, PAD]]
    assert batch.src_mask.tolist() == [[True, True, True], [True, False, False]]
    assert batch.src_lengths.tolist() == [3, 1]
    assert batch.tgt_in.tolist() == [[BOS, 8, 9, PAD, PAD], [BOS, 11, 12, 13, 14]]
    assert batch.tgt_out.tolist() == [[8, 9, EOS, PAD, PAD], [11, 12, 13, 14, EOS]]
    assert batch.tgt_mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert batch.indices == [3, 7]
    assert batch.size == 2
    assert batch.num_tgt_tokens == 3 + 5  # EOS counted
    assert PAD == 0
    for t in (batch.src, batch.tgt_in, batch.tgt_out):
        assert t.dtype == torch.long
    assert batch.src_mask.dtype == torch.bool and batch.tgt_mask.dtype == torch.bool


def test_collate_masks_agree_with_lengths():
    examples = _examples(20, seed=1)
    batch = collate(examples)
    assert batch.src_mask.sum(1).tolist() == [len(e.src) for e in examples]
    assert batch.src_lengths.tolist() == [len(e.src) for e in examples]
    assert batch.tgt_mask.sum(1).tolist() == [len(e.tgt) + 1 for e in examples]
    # tgt_in is tgt_out shifted right by one with BOS in front
    for row, e in enumerate(examples):
        n = len(e.tgt) + 1
        assert batch.tgt_in[row, :n].tolist() == [BOS] + e.tgt
        assert batch.tgt_out[row, :n].tolist() == e.tgt + [EOS]
        assert batch.tgt_in[row, n:].eq(PAD).all() and batch.tgt_out[row, n:].eq(PAD).all()
    assert batch.tgt_mask.tolist() == batch.tgt_out.ne(PAD).tolist()


def test_collate_without_targets():
    batch = collate([Example([5, 6], None, 0), Example([7], None, 1)])
    assert batch.tgt_in is None and batch.tgt_out is None and batch.tgt_mask is None
    assert batch.num_tgt_tokens == 0
    assert batch.src.tolist() == [[5, 6], [7, PAD]]


def test_collate_empty_source_reads_as_eos():
    batch = collate([Example([], [5], 0), Example([6, 7], [8], 1)])
    assert batch.src[0].tolist() == [EOS, PAD]
    assert batch.src_lengths.tolist() == [1, 2]
    assert batch.src_mask[0].tolist() == [True, False]


def test_token_batches_respect_the_budget():
    examples = _examples(500, seed=2)
    for max_tokens in (40, 100, 333):
        batches = list(token_batches(examples, max_tokens, pool_batches=5, seed=3))
        for group in batches:
            if len(group) > 1:
                assert padded_size(group) <= max_tokens
                assert len(group) * max(_longest(e) for e in group) <= max_tokens
                assert collate(group).src.numel() <= max_tokens
            # a single over-long example still forms a batch of its own
        assert any(len(g) > 1 for g in batches)


def test_token_batches_oversized_example_is_alone():
    examples = [Example([4] * 3, [5] * 3, 0), Example([4] * 50, [5] * 2, 1), Example([4] * 2, [5], 2)]
    batches = list(token_batches(examples, 20, shuffle=False))
    assert [len(g) for g in batches if any(e.index == 1 for e in g)] == [1]


def test_token_batches_cover_every_example_exactly_once():
    examples = _examples(503, seed=4)
    for pool_batches in (1, 3, 100):
        for shuffle in (True, False):
            batches = list(token_batches(iter(examples), 120, pool_batches=pool_batches,
                                         shuffle=shuffle, seed=5))
            seen = sorted(e.index for g in batches for e in g)
            assert seen == list(range(len(examples)))
            assert all(g for g in batches)


def test_token_batches_deterministic_under_a_seed():
    examples = _examples(300, seed=6)

    def order(seed):
        return [[e.index for e in g] for g in token_batches(examples, 100, pool_batches=4, seed=seed)]

    assert order(7) == order(7)
    assert order(7) != order(8)
    # without shuffling, the seed does not matter
    fixed = [[e.index for e in g] for g in token_batches(examples, 100, pool_batches=4, shuffle=False, seed=1)]
    again = [[e.index for e in g] for g in token_batches(examples, 100, pool_batches=4, shuffle=False, seed=2)]
    assert fixed == again


def test_token_batches_have_little_padding():
    # lengths as in real data: the target length follows the source length
    rng = random.Random(9)
    examples = []
    for i in range(2000):
        n = rng.randint(1, 60)
        m = max(1, n + rng.randint(-3, 3))
        examples.append(Example([rng.randint(4, 50) for _ in range(n)], [rng.randint(4, 50) for _ in range(m)], i))
    batches = list(token_batches(examples, 400, pool_batches=50, seed=10))
    real = sum(_longest(e) for g in batches for e in g)
    padded = sum(padded_size(g) for g in batches)
    # random batches of the same sizes pad far more
    shuffled = examples[:]
    random.Random(11).shuffle(shuffled)
    random_padded, start = 0, 0
    for g in batches:
        random_padded += padded_size(shuffled[start:start + len(g)])
        start += len(g)
    assert padded / real < 1.15
    assert padded < 0.7 * random_padded
    # the source side, the sort key, is nearly unpadded
    src_real = sum(len(e.src) for e in examples)
    src_padded = sum(collate(g).src.numel() for g in batches)
    assert src_padded / src_real < 1.05


def test_token_batches_streams_pools():
    """Pools are read one at a time: the first batches come before the input is exhausted."""
    consumed = []

    def source():
        for e in _examples(1000, seed=12):
            consumed.append(e.index)
            yield e

    gen = token_batches(source(), 50, pool_batches=2, seed=0)
    next(gen)
    assert len(consumed) < 100


def test_sentence_batches():
    examples = _examples(23, seed=13)
    batches = list(sentence_batches(examples, 5))
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert sorted(e.index for b in batches for e in b) == list(range(23))
    lengths = [len(e.src) for b in batches for e in b]
    assert lengths == sorted(lengths, reverse=True)
    assert list(sentence_batches([], 4)) == []
    assert [len(b) for b in sentence_batches(examples, 100)] == [23]
