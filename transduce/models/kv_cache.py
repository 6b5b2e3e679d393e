"""The self-attention cache of a Transformer decoder: per-layer key/value buffers and the policy
of how they are allocated, grown, reused and shared between decoding states.

A decoder step writes one column per row, so the buffers hold more columns than are filled and
grow by doubling. Writing in place is what makes a step cheap (no copy of the cache per token),
and it is safe only while no other state reads the column written: several states may share one
set of buffers (a state and the states `select`ed or `reserve`d from it before a step), so the
states over one set of buffers share one record of how far any step has written them (`written`).
Search tells the cache how many tokens it may still feed (`reserve`), so that buffers are sized
once; and a search that drops each state after reordering it lets the cache take turns between
two sets of buffers (`spare`) instead of asking for fresh memory at every step.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

INITIAL_COLUMNS = 32  # cache columns of a fresh state, before the first growth (doubling)
SELECT_ROOM = 16  # empty cache columns a selected state keeps
SHRINK_ROWS = 64  # cache buffers of this many rows are kept however few of them are used
COMPACT_ROWS = 64  # rows `reordered` moves within the buffers at most (else: copies)
RESERVE_LIMIT = 512  # cache columns reserved up front at most; longer outputs grow the caches by doubling
# (a CPU commits only the memory a step writes, a GPU all of it)

Buffers = tuple[torch.Tensor, ...]  # one (B, heads, capacity, d) tensor per decoder layer


def moving_rows(sources: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of `rearranged(sources)` that change, and the rows they take.
    Shape: sources (m,) -> 2 x (moved,)"""
    moving = (sources != torch.arange(sources.numel(), device=sources.device)).nonzero().squeeze(1)
    return moving, sources.index_select(0, moving)


def _fits(buffer: torch.Tensor, rows: int, length: int) -> bool:
    """Whether a cache buffer (a view of its first rows, maybe) can take `rows` rows of `length`
    filled columns and the next one, without holding more than twice the rows: once most
    sentences of a batch have finished, their rows' memory is given back."""
    _, h, capacity, d = buffer.shape
    held = buffer.untyped_storage().nbytes() // (h * capacity * d * buffer.element_size())
    return rows <= buffer.size(0) and length < capacity and held <= max(2 * rows, SHRINK_ROWS)


def _increasing(indices: torch.Tensor) -> bool:
    """Whether rows `indices` keep their order (each after the one before). Shape: (m,)"""
    return bool(indices.numel()) and bool((indices[1:] > indices[:-1]).all())


@dataclass
class KVCache:
    """Self-attention keys and values of every decoder layer, in buffers with room to grow.

    Columns [0, length) of the buffers hold the tokens fed so far, where `length` is kept by the
    state that owns the cache; the methods that move rows take it as an argument.
    `written`: how many columns some step has written into these buffers, shared by every cache
    over them; a step may write column `length` in place only when that is `length` (no other
    state's step wrote it), else it works on a copy. `reserved`: the columns a search said it may
    fill; buffers are allocated, copied and grown to that size at once. `spare`: the buffers of
    the cache reordered before this one, which the next `reordered` may fill.
    Shape:
        keys, values: per layer (B, heads, capacity, d)
    """

    keys: Buffers
    values: Buffers
    written: list[int] = field(default_factory=lambda: [0], repr=False, compare=False)
    reserved: int = 0
    spare: tuple[Buffers, Buffers] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def empty(cls, layers: int, rows: int, heads: int, head_dim: int, like: torch.Tensor) -> "KVCache":
        """Buffers of INITIAL_COLUMNS columns, of `like`'s dtype and device, nothing written."""
        def buffers() -> Buffers:
            return tuple(like.new_empty(rows, heads, INITIAL_COLUMNS, head_dim) for _ in range(layers))

        return cls(keys=buffers(), values=buffers())

    @property
    def capacity(self) -> int:
        """Columns the buffers hold."""
        return self.keys[0].size(2)

    def reserve(self, length: int, columns: int) -> "KVCache":
        """Room for `columns` more tokens (at most RESERVE_LIMIT) after `length`, now and in every later copy."""
        reserved = length + min(columns, RESERVE_LIMIT)
        if reserved <= self.capacity:
            return replace(self, reserved=reserved)
        return replace(self._grown(length, reserved), reserved=reserved)

    def for_step(self, length: int) -> "KVCache":
        """The buffers a step writes column `length` of: these, when no other step has written that
        column yet, else copies with twice the room. The column counts as written from now on."""
        cache = self
        if not self.written[0] == length < self.capacity:
            cache = self._grown(length, max(2 * self.capacity, length + 16, self.reserved))
        cache.written[0] = length + 1
        return cache

    def copied(self, indices: torch.Tensor, length: int) -> "KVCache":
        """Rows `indices` in new buffers with the reserved room, or a little (beam search selects
        at every step); only the `length` filled columns are copied."""
        return self._picked(indices, length, reuse=False)

    def reordered(self, indices: torch.Tensor, length: int) -> "KVCache":
        """`copied`, for a caller that drops this cache at once. Rows kept in their order move up
        within these buffers (`rearranged`), unless a second set of buffers already takes turns
        with them. Other orders go into the spare buffers, when they fit, and these buffers become
        the next spare. Fresh memory at every step would cost more than the copy (page faults),
        and so would growing the copies bit by bit: fresh buffers here get twice the filled length."""
        if self.spare is None and _increasing(indices):
            moved = indices.numel() - int((indices == torch.arange(indices.numel(), device=indices.device)).sum())
            if moved <= COMPACT_ROWS:
                return self.rearranged(indices, length)
        return self._picked(indices, length, reuse=True)

    def rearranged(self, sources: torch.Tensor, length: int) -> "KVCache":
        """Rows `sources` within these buffers: the rows that change take their sources' first
        `length` columns (gathered first, so any order is safe), the others stay, and the rows
        past `sources` are dropped. Cheap when few rows change."""
        m = sources.numel()
        moving, taken = moving_rows(sources)
        if moving.numel():  # index_copy_ of an index_select: twice as fast as indexing on both sides
            for buffer in self.keys + self.values:
                filled = buffer[:, :, :length]
                filled.index_copy_(0, moving, filled.index_select(0, taken))
        return KVCache(tuple(k[:m] for k in self.keys), tuple(v[:m] for v in self.values), [length],
                       self.reserved, self.spare)

    def put(self, slots: torch.Tensor, other: "KVCache", filled: int, theirs: int, length: int) -> "KVCache":
        """Rows `slots` taken by other's rows, in these buffers (grown first when they are too
        small for `length` columns or other's reservation): other's `theirs` filled columns go to
        the first columns of those rows, whatever these hold (`filled` columns). The caller does
        not use this cache again."""
        reserved = max(self.reserved, other.reserved)  # both count columns from the first
        cache = self
        if not length < self.capacity >= reserved:
            cache = self._grown(filled, max(reserved, length + SELECT_ROOM))
        for mine, new in zip(cache.keys + cache.values, other.keys + other.values):
            mine[slots, :, :theirs] = new[:, :, :theirs]
        return KVCache(cache.keys, cache.values, [length], reserved, self.spare)

    def _grown(self, filled: int, capacity: int) -> "KVCache":
        """New buffers of `capacity` columns holding the `filled` ones, not written past them."""

        def grown(buffer: torch.Tensor) -> torch.Tensor:
            B, h, _, d = buffer.shape
            bigger = buffer.new_empty(B, h, capacity, d)
            bigger[:, :, :filled] = buffer[:, :, :filled]
            return bigger

        return replace(self, keys=tuple(map(grown, self.keys)), values=tuple(map(grown, self.values)),
                       written=[filled])

    def _picked(self, indices: torch.Tensor, length: int, reuse: bool) -> "KVCache":
        """Rows `indices` of the `length` filled columns, gathered into new buffers or, with
        `reuse`, into the spare ones when they fit; with `reuse` these become the next spare."""
        n = indices.numel()
        spare = self.spare if reuse else None
        if spare is not None and not _fits(spare[0][0], n, length):
            spare = None  # too few rows or columns, or far too many rows: fresh buffers
        capacity = max(length + SELECT_ROOM, self.reserved, 2 * length if reuse else 0)

        def picked(buffer: torch.Tensor, into: torch.Tensor | None) -> torch.Tensor:
            _, h, _, d = buffer.shape
            out = into[:n] if into is not None else buffer.new_empty(n, h, capacity, d)
            torch.index_select(buffer[:, :, :length], 0, indices, out=out[:, :, :length])
            return out

        into_keys, into_values = spare if spare is not None else ((None,) * len(self.keys),) * 2
        return KVCache(tuple(map(picked, self.keys, into_keys)), tuple(map(picked, self.values, into_values)),
                       [length], self.reserved, (self.keys, self.values) if reuse else None)
