"""Training batches epoch after epoch, from a corpus read afresh each epoch, with a position that
a checkpoint can store and a resumed run can start from.

The stream is a pure function of (corpus, batch settings, seed): epoch e is read in file
order and cut into pools of about `pool_batches` batches; pool p of epoch e is shuffled with
its own generator seeded by (seed, e, p). So a position is four integers (epoch, pools done,
pairs read before the current pool, batches already given out from it), and resuming skips
the pairs before the current pool without tokenizing them, rebuilds that one pool and drops
the batches already given out. Memory stays bounded by one pool however large the corpus.

With several processes (data parallel), every rank walks the same stream in rounds of
`world_size` batches and keeps the rank-th batch of each round: between batches all ranks
stand at the same position, so rank 0's position is the run's, and a run resumed on another
number of processes carries on from the same place.
"""
from __future__ import annotations

import itertools
import random
from dataclasses import asdict, dataclass
from typing import Callable, Iterable, Iterator

from transduce.data.batching import Batch, Example, batches_of_pool, collate, pools
from transduce.data.readers import DataError, Pair


@dataclass
class StreamPosition:
    """Where the next batch comes from (all counts within the current epoch)."""

    epoch: int = 0
    pool: int = 0  # pools finished
    pairs: int = 0  # pairs read before the current pool
    batch: int = 0  # batches of the current pool already given out (all ranks together)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "StreamPosition":
        return cls(**{k: int(data[k]) for k in ("epoch", "pool", "pairs", "batch")})


class BatchStream:
    """An endless iterator of collated batches whose `position` is exact after every batch."""

    def __init__(
        self,
        open_pairs: Callable[[], Iterable[Pair]],
        to_examples: Callable[[Iterable[Pair], int], Iterator[Example]],
        max_tokens: int,
        *,
        pool_batches: int = 100,
        seed: int = 0,
        position: StreamPosition | None = None,
        rank: int = 0,
        world_size: int = 1,
        on_epoch_end: Callable[[int], None] | None = None,
        name: str = "training data",
    ):
        """`to_examples(pairs, first_index)` turns pairs into examples numbered from `first_index`."""
        self.open_pairs, self.to_examples = open_pairs, to_examples
        self.max_tokens, self.budget, self.seed = max_tokens, max_tokens * pool_batches, seed
        self.position = position or StreamPosition()
        self.rank, self.world_size = rank, world_size
        self.on_epoch_end, self.name = on_epoch_end, name  # name: the corpus, for the error message
        self._iterator = self._batches()

    def __iter__(self) -> "BatchStream":
        return self

    def __next__(self) -> Batch:
        return next(self._iterator)

    def pool_rng(self, epoch: int, pool: int) -> random.Random:
        return random.Random(f"{self.seed}:{epoch}:{pool}")  # str seeds hash the same in every process

    def _batches(self) -> Iterator[Batch]:
        """Rounds of `world_size` consecutive batches; this rank keeps the rank-th of each round."""
        walk = self._walk()
        while True:
            mine = None
            for rank in range(self.world_size):
                group = next(walk)
                if rank == self.rank:
                    mine = group
            yield collate(mine)

    def _walk(self) -> Iterator[list[Example]]:
        """Every batch's examples in stream order; the position is already past each one yielded."""
        pos = self.position
        while True:
            pairs = itertools.islice(self.open_pairs(), pos.pairs, None)  # skipped pairs are never tokenized
            for pool in pools(self.to_examples(pairs, pos.pairs), self.budget):
                batches = batches_of_pool(pool, self.max_tokens, self.pool_rng(pos.epoch, pos.pool))
                while pos.batch < len(batches):
                    pos.batch += 1
                    yield batches[pos.batch - 1]
                pos.pool, pos.pairs, pos.batch = pos.pool + 1, pos.pairs + len(pool), 0
            if pos.pool == 0:
                raise DataError(self.name, None, "no training pairs")
            finished = pos.epoch
            pos.epoch, pos.pool, pos.pairs, pos.batch = pos.epoch + 1, 0, 0, 0
            if self.on_epoch_end is not None:
                self.on_epoch_end(finished)
