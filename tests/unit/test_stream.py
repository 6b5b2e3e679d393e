"""The training batch stream: epochs cover every pair once, each shuffled its own way, and a stream
restarted from a saved position (or split over ranks) gives exactly the batches of the uninterrupted one."""
import random

import pytest
import torch

from transduce.data.batching import Example
from transduce.data.readers import Pair
from transduce.data.stream import BatchStream, StreamPosition

N = 40
MAX_TOKENS = 20
POOL_BATCHES = 3  # pools of about 60 tokens: several pools per epoch, several batches per pool


def _corpus(n: int = N, seed: int = 0) -> list[Pair]:
    rng = random.Random(seed)

    def words():
        return " ".join(str(rng.randint(4, 99)) for _ in range(rng.randint(1, 8)))

    return [Pair(words(), words(), line) for line in range(1, n + 1)]


class Tokenizer:
    """to_examples for the stream: integers split on spaces; records every pair it is handed."""

    def __init__(self):
        self.seen: list[int] = []  # Pair.line of every pair pulled from the input, in order
        self.calls: list[int] = []  # first_index of every call

    def __call__(self, pairs, start):
        self.calls.append(start)
        for index, pair in enumerate(pairs, start):
            self.seen.append(pair.line)
            yield Example([int(w) for w in pair.source.split()], [int(w) for w in pair.target.split()], index)


def _stream(corpus, *, tokenizer=None, position=None, seed=0, rank=0, world_size=1, epochs=None):
    return BatchStream(lambda: iter(corpus), tokenizer or Tokenizer(), MAX_TOKENS, pool_batches=POOL_BATCHES,
                       seed=seed, position=position, rank=rank, world_size=world_size,
                       on_epoch_end=None if epochs is None else epochs.append)


def _take(stream, count):
    """`count` batches, each with a copy of the position right after it."""
    out = []
    for _ in range(count):
        batch = next(stream)
        out.append((batch, StreamPosition.from_dict(stream.position.to_dict())))
    return out


def _same_batch(a, b) -> bool:
    return (a.indices == b.indices and torch.equal(a.src, b.src) and torch.equal(a.tgt_in, b.tgt_in)
            and torch.equal(a.tgt_out, b.tgt_out) and torch.equal(a.src_mask, b.src_mask))


def _by_epoch(taken):
    epochs: dict[int, list] = {}
    for batch, pos in taken:
        epochs.setdefault(pos.epoch, []).append(batch)
    return epochs


@pytest.fixture(scope="module")
def corpus():
    return _corpus()


@pytest.fixture(scope="module")
def reference(corpus):
    """About three epochs of the uninterrupted stream, and the epochs it reported as finished."""
    epochs: list[int] = []
    stream = _stream(corpus, epochs=epochs)
    taken = _take(stream, 60)
    assert max(pos.epoch for _, pos in taken) >= 2, "the reference must span several epochs"
    return taken, epochs


def test_position_round_trips_through_a_dict():
    pos = StreamPosition(epoch=3, pool=2, pairs=17, batch=4)
    data = pos.to_dict()
    assert data == {"epoch": 3, "pool": 2, "pairs": 17, "batch": 4}
    assert StreamPosition.from_dict({k: str(v) for k, v in data.items()}) == pos
    assert StreamPosition() == StreamPosition(0, 0, 0, 0)


def test_every_epoch_covers_every_pair_exactly_once(corpus, reference):
    taken, epochs_done = reference
    by_epoch = _by_epoch(taken)
    complete = sorted(by_epoch)[:-1]  # the last one may be cut short
    assert len(complete) >= 2
    assert epochs_done == complete  # the callback heard of each finished epoch, in order
    for epoch in complete:
        indices = [i for batch in by_epoch[epoch] for i in batch.indices]
        assert sorted(indices) == list(range(N)), epoch
        assert len(by_epoch[epoch]) > POOL_BATCHES  # several pools per epoch
    # the batches hold the pairs they name, within the token budget
    for batch, _ in taken:
        assert batch.src.size(0) * max(batch.src.size(1), batch.tgt_out.size(1)) <= MAX_TOKENS
        for row, index in enumerate(batch.indices):
            src = [int(w) for w in corpus[index].source.split()]
            tgt = [int(w) for w in corpus[index].target.split()]
            assert batch.src[row, : len(src)].tolist() == src
            assert batch.tgt_out[row, : len(tgt)].tolist() == tgt


def test_epochs_are_shuffled_differently_and_the_seed_decides(corpus, reference):
    taken, _ = reference
    by_epoch = _by_epoch(taken)
    orders = [[i for b in by_epoch[e] for i in b.indices] for e in (0, 1)]
    assert orders[0] != orders[1]
    assert [b.indices for b in by_epoch[0]] != [b.indices for b in by_epoch[1]]

    again = _take(_stream(corpus), len(taken))  # same seed: the very same stream
    assert all(_same_batch(a, b) for (a, _), (b, _) in zip(taken, again))
    assert [p for _, p in again] == [p for _, p in taken]
    other = _take(_stream(corpus, seed=1), 10)
    assert [b.indices for b, _ in other] != [b.indices for b, _ in taken[:10]]


def test_position_moves_exactly_with_each_batch(reference):
    taken, _ = reference
    previous = StreamPosition()
    for batch, pos in taken:
        if pos.epoch == previous.epoch and pos.pool == previous.pool:
            assert pos.batch == previous.batch + 1 and pos.pairs == previous.pairs
        elif pos.epoch == previous.epoch:  # a new pool of the same epoch
            assert pos.pool == previous.pool + 1 and pos.batch == 1 and pos.pairs > previous.pairs
        else:  # a new epoch
            assert (pos.epoch, pos.pool, pos.pairs, pos.batch) == (previous.epoch + 1, 0, 0, 1)
        # every example of the batch lies in the current pool, which starts at `pairs`
        assert min(batch.indices) >= pos.pairs
        previous = pos


def _boundaries(taken):
    """Batch counts k after which the next batch starts a new pool / a new epoch."""
    positions = [StreamPosition()] + [p for _, p in taken]
    pool = [k for k in range(1, len(taken)) if positions[k + 1].pool != positions[k].pool]
    epoch = [k for k in range(1, len(taken)) if positions[k + 1].epoch != positions[k].epoch]
    return pool, epoch


def test_resuming_from_a_saved_position_gives_the_same_batches(corpus, reference):
    taken, _ = reference
    pool_ends, epoch_ends = _boundaries(taken)
    assert len(epoch_ends) >= 2 and len(pool_ends) > len(epoch_ends)
    ks = sorted({0, 1, 2, 5} | set(pool_ends) | {k + 1 for k in pool_ends} | set(epoch_ends)
                | {k + 1 for k in epoch_ends} | {k - 1 for k in epoch_ends})
    ks = [k for k in ks if k < len(taken)]
    positions = [StreamPosition()] + [p for _, p in taken]
    for k in ks:
        saved = StreamPosition.from_dict(positions[k].to_dict())
        epochs: list[int] = []
        resumed = _take(_stream(corpus, position=saved, epochs=epochs), len(taken) - k)
        for j, ((a, pa), (b, pb)) in enumerate(zip(taken[k:], resumed)):
            assert _same_batch(a, b), (k, j)
            assert pa == pb, (k, j)
        # the resumed run reports exactly the epochs that end after the position (the position's own
        # epoch included, even when the position stands after its very last batch)
        assert epochs == list(range(positions[k].epoch, taken[-1][1].epoch)), k


def test_pairs_before_the_position_are_never_tokenized(corpus, reference):
    taken, _ = reference
    lines = [p.line for p in corpus]
    pool_ends, epoch_ends = _boundaries(taken)
    positions = [StreamPosition()] + [p for _, p in taken]
    checked = 0
    for k in sorted(set(pool_ends) | {k + 1 for k in pool_ends} | set(epoch_ends)):
        saved = positions[k]
        if saved.pairs == 0:
            continue
        checked += 1
        tokenizer = Tokenizer()
        stream = _stream(corpus, tokenizer=tokenizer, position=StreamPosition.from_dict(saved.to_dict()))
        next(stream)
        assert tokenizer.calls[0] == saved.pairs  # examples numbered from where the pool starts
        assert tokenizer.seen, k
        # the first pair handed over is the first one of the current pool; none before it (in this epoch)
        assert tokenizer.seen == (lines[saved.pairs:] + lines)[: len(tokenizer.seen)], k
        assert len(tokenizer.seen) < N  # never the whole corpus again just to find the place
    assert checked >= 3


def test_a_fresh_stream_tokenizes_each_pair_once_per_epoch(corpus):
    tokenizer = Tokenizer()
    stream = _stream(corpus, tokenizer=tokenizer)
    while stream.position.epoch < 2:
        next(stream)
    assert tokenizer.seen[: 2 * N] == [p.line for p in corpus] * 2
    assert tokenizer.calls[:2] == [0, 0]  # one call per epoch, each numbering from 0


def test_two_ranks_share_the_single_stream(corpus, reference):
    taken, _ = reference
    rank0 = _stream(corpus, rank=0, world_size=2)
    rank1 = _stream(corpus, rank=1, world_size=2)
    rounds = len(taken) // 2
    for r in range(rounds):
        a, b = next(rank0), next(rank1)
        assert _same_batch(a, taken[2 * r][0]), r
        assert _same_batch(b, taken[2 * r + 1][0]), r
        assert rank0.position == rank1.position, r
        assert rank0.position == taken[2 * r + 1][1], r  # both stand after the round
    assert rank0.position.epoch >= 1  # the ranks crossed an epoch boundary together


def test_two_ranks_resume_a_single_process_run(corpus, reference):
    taken, _ = reference
    k = 2 * (len(taken) // 4)  # an even number of batches into the single-process run
    saved = taken[k - 1][1]
    ranks = [_stream(corpus, position=StreamPosition.from_dict(saved.to_dict()), rank=r, world_size=2)
             for r in (0, 1)]
    for r in range((len(taken) - k) // 2):
        assert _same_batch(next(ranks[0]), taken[k + 2 * r][0])
        assert _same_batch(next(ranks[1]), taken[k + 2 * r + 1][0])
        assert ranks[0].position == ranks[1].position == taken[k + 2 * r + 1][1]


def test_an_empty_corpus_raises_value_error():
    epochs: list[int] = []
    opened = []

    def open_pairs():
        opened.append(1)
        assert len(opened) < 5, "the stream reopens an empty corpus forever"
        return iter([])

    stream = BatchStream(open_pairs, Tokenizer(), MAX_TOKENS, pool_batches=POOL_BATCHES,
                         on_epoch_end=epochs.append)
    with pytest.raises(ValueError, match="no training pairs"):
        next(stream)
    assert epochs == [] and len(opened) == 1
