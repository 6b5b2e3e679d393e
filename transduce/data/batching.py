"""Examples → padded tensors, and token-count batches from length-sorted pools.

Batches are built by padded-token count (sentences x the longest side) from pools of
examples sorted by length, so there is little padding, and the pools are read one at a time,
so a corpus larger than memory streams through with bounded memory.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Iterator

import torch

from transduce.constants import BOS, EOS, PAD


@dataclass
class Example:
    """One pair as token ids (no BOS/EOS), with its position in the input for reordering."""

    src: list[int]
    tgt: list[int] | None
    index: int = 0
    src_ext: list[int] | None = None  # copy models: source tokens as extended target ids
    tgt_ext: list[int] | None = None  # copy models: target ids, copied words as extended ids
    oov: list[str] | None = None  # copy models: the words behind extended ids V, V+1, ...


@dataclass
class Batch:
    """Padded tensors for one batch.

    Shape:
        src, src_mask: (B, S); src_lengths: (B,)
        tgt_in (BOS + y), tgt_out (y + EOS), tgt_mask: (B, T); None when there are no targets
        src_ext (B, S), tgt_out_ext (B, T): extended ids for copy models, else None
    """

    src: torch.Tensor
    src_mask: torch.Tensor
    src_lengths: torch.Tensor
    tgt_in: torch.Tensor | None
    tgt_out: torch.Tensor | None
    tgt_mask: torch.Tensor | None
    indices: list[int]
    src_ext: torch.Tensor | None = None
    tgt_out_ext: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return self.src.size(0)

    @property
    def num_tgt_tokens(self) -> int:
        return int(self.tgt_mask.sum()) if self.tgt_mask is not None else 0

    def to(self, device: torch.device | str) -> "Batch":
        def move(t):
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(move(self.src), move(self.src_mask), self.src_lengths, move(self.tgt_in),
                     move(self.tgt_out), move(self.tgt_mask), self.indices, move(self.src_ext),
                     move(self.tgt_out_ext))

    @property
    def gold(self) -> torch.Tensor:
        """The ids the loss compares with: extended ones for copy models. Shape: (B, T)"""
        return self.tgt_out_ext if self.tgt_out_ext is not None else self.tgt_out


def _pad(seqs: list[list[int]], width: int) -> torch.Tensor:
    out = torch.full((len(seqs), width), PAD, dtype=torch.long)
    for row, seq in enumerate(seqs):
        out[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def collate(examples: list[Example]) -> Batch:
    """Pad a list of examples into a Batch (targets get BOS in front for input, EOS behind for output)."""
    src_lengths = torch.tensor([max(len(e.src), 1) for e in examples], dtype=torch.long)
    src = _pad([e.src or [EOS] for e in examples], int(src_lengths.max()))  # an empty source reads as "</s>"
    src_mask = src.ne(PAD)
    tgt_in = tgt_out = tgt_mask = None
    src_ext = tgt_out_ext = None
    if all(e.src_ext is not None for e in examples):
        src_ext = _pad([e.src_ext or [EOS] for e in examples], src.size(1))
    if all(e.tgt is not None for e in examples):
        width = max(len(e.tgt) for e in examples) + 1
        tgt_in = _pad([[BOS] + e.tgt for e in examples], width)
        tgt_out = _pad([e.tgt + [EOS] for e in examples], width)
        tgt_mask = tgt_out.ne(PAD)
        if all(e.tgt_ext is not None for e in examples):
            tgt_out_ext = _pad([e.tgt_ext + [EOS] for e in examples], width)
    return Batch(src, src_mask, src_lengths, tgt_in, tgt_out, tgt_mask, [e.index for e in examples],
                 src_ext, tgt_out_ext)


def padded_size(examples: list[Example]) -> int:
    """Padded tokens of a batch: sentences x the longest side (target counted with its BOS/EOS)."""
    longest = max(example_length(e) for e in examples)
    return len(examples) * longest


def _cut_by_tokens(examples: list[Example], max_tokens: int) -> list[list[Example]]:
    """Consecutive runs of (sorted) examples whose padded size stays within max_tokens."""
    batches, current, longest = [], [], 0
    for ex in examples:
        length = example_length(ex)
        new_longest = max(longest, length)
        if current and new_longest * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, new_longest = [], length
        current.append(ex)
        longest = new_longest
    if current:
        batches.append(current)
    return batches


def example_length(ex: Example) -> int:
    """The padded width an example needs: its longer side (target counted with BOS/EOS)."""
    return max(len(ex.src), len(ex.tgt) + 1 if ex.tgt is not None else 0)


def pools(examples: Iterable[Example], budget: int) -> Iterator[list[Example]]:
    """Consecutive runs of examples holding about `budget` tokens each (the last one may hold fewer)."""
    pool: list[Example] = []
    pool_tokens = 0
    for ex in examples:
        pool.append(ex)
        pool_tokens += example_length(ex)
        if pool_tokens >= budget:
            yield pool
            pool, pool_tokens = [], 0
    if pool:
        yield pool


def batches_of_pool(pool: list[Example], max_tokens: int, rng: random.Random | None) -> list[list[Example]]:
    """One pool's batches: examples shuffled (with `rng`), stably sorted by length, cut by
    padded tokens, and the batches shuffled (so equal lengths still come in random order)."""
    pool = list(pool)
    if rng is not None:
        rng.shuffle(pool)
    pool.sort(key=lambda e: (len(e.src), len(e.tgt) if e.tgt is not None else 0))
    batches = _cut_by_tokens(pool, max_tokens)
    if rng is not None:
        rng.shuffle(batches)
    return batches


def token_batches(
    examples: Iterable[Example],
    max_tokens: int,
    *,
    pool_batches: int = 100,
    shuffle: bool = True,
    seed: int = 0,
) -> Iterator[list[Example]]:
    """Group examples into token-count batches, one length-sorted pool at a time.

    A pool holds about `pool_batches` batches' worth of tokens; inside it, examples are
    shuffled (when asked) then stably sorted by length, cut into batches, and the batches
    shuffled. Memory is bounded by the pool, not the corpus.
    """
    rng = random.Random(seed) if shuffle else None
    for pool in pools(examples, max_tokens * pool_batches):
        yield from batches_of_pool(pool, max_tokens, rng)


def sentence_batches(examples: list[Example], batch_size: int) -> Iterator[list[Example]]:
    """Batches of at most batch_size sentences, similar lengths together (for decoding)."""
    order = sorted(examples, key=lambda e: len(e.src), reverse=True)
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]
