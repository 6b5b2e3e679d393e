"""Explicit decoding states: everything a decoder step needs, and nothing hidden in modules.

Search only ever calls `select(indices)` on these (to follow the surviving beams after
pruning, to drop finished sentences), `reorder(indices)` (the same, when the old state is
not used again: its memory may be reused), `rearranged(sources)` (the same again, copying
only the rows that change, in place), `repeat_rows(times)` on an encoder output (a source for
each beam), `put(slots, other)` (new sentences take the rows of finished ones in a running
batch; the old object is not used again) and `reserve(columns)` (to say how many more tokens it
may feed, so that caches are sized once). How a Transformer's self-attention caches are
allocated, grown and shared is `kv_cache.KVCache`'s business.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

from transduce.models.kv_cache import KVCache, moving_rows


def _select(t: torch.Tensor | None, indices: torch.Tensor, dim: int = 0) -> torch.Tensor | None:
    return None if t is None else t.index_select(dim, indices)


def _pad_source(t: torch.Tensor, width: int) -> torch.Tensor:
    """Pad dim 1 (source positions) with zeros / False up to `width`."""
    if t.size(1) == width:
        return t
    pad = t.new_zeros((t.size(0), width - t.size(1)) + tuple(t.shape[2:]))
    return torch.cat([t, pad], dim=1)


def _put_rows(a: torch.Tensor | None, slots: torch.Tensor, b: torch.Tensor | None, sources: bool = False
              ) -> torch.Tensor | None:
    """A copy of `a` whose rows `slots` are b's rows; with `sources`, dim 1 holds source positions
    and the narrower of the two is padded (zeros / False: masked positions)."""
    if a is None or b is None:
        return None
    if sources:
        width = max(a.size(1), b.size(1))
        a, b = _pad_source(a, width), _pad_source(b, width)
    return a.index_put((slots,), b)


@dataclass
class EncoderOutput:
    """What the encoder computed once per source and every decoder step reads.

    Shape:
        memory: (B, S, H) encoder states; keys: (B, S, A) their attention projection
        src_mask: (B, S) True on real tokens; final: per decoder layer (B, H) initial states
        final_cell: same for LSTM cells, None for GRU
        prior: (B, V) the source-vocabulary prior ŷ, or None
    """

    memory: torch.Tensor
    keys: torch.Tensor
    src_mask: torch.Tensor
    final: tuple[torch.Tensor, ...]
    final_cell: tuple[torch.Tensor, ...] | None
    prior: torch.Tensor | None = None
    src_ext: torch.Tensor | None = None  # (B, S) extended ids of the source tokens, for copying

    def select(self, indices: torch.Tensor) -> "EncoderOutput":
        return EncoderOutput(
            memory=_select(self.memory, indices),
            keys=_select(self.keys, indices),
            src_mask=_select(self.src_mask, indices),
            final=tuple(_select(h, indices) for h in self.final),
            final_cell=None if self.final_cell is None else tuple(_select(c, indices) for c in self.final_cell),
            prior=_select(self.prior, indices),
            src_ext=_select(self.src_ext, indices),
        )

    def rearranged(self, sources: torch.Tensor) -> "EncoderOutput":
        """`select(sources)`, for a caller that does not use this object again."""
        return self.select(sources)

    def repeat_rows(self, times: int) -> "EncoderOutput":
        """Every row `times` times in a row (beams of one source)."""
        return self.select(torch.arange(self.memory.size(0), device=self.memory.device).repeat_interleave(times))

    def put(self, slots: torch.Tensor, other: "EncoderOutput") -> "EncoderOutput":
        """Rows `slots` replaced by other's rows (new sentences in the rows of finished ones);
        sources padded to the wider of the two (padded positions are masked)."""
        return EncoderOutput(
            memory=_put_rows(self.memory, slots, other.memory, sources=True),
            keys=_put_rows(self.keys, slots, other.keys, sources=True),
            src_mask=_put_rows(self.src_mask, slots, other.src_mask, sources=True),
            final=tuple(_put_rows(a, slots, b) for a, b in zip(self.final, other.final)),
            final_cell=None if self.final_cell is None else tuple(
                _put_rows(a, slots, b) for a, b in zip(self.final_cell, other.final_cell)),
            prior=_put_rows(self.prior, slots, other.prior),
            src_ext=_put_rows(self.src_ext, slots, other.src_ext, sources=True),
        )


@dataclass
class RNNState:
    """Recurrent decoder state after some steps.

    Shape:
        hidden, cell: per layer (B, H) (cell is None for GRU); feed: (B, H) the last attentional
        output, fed back as input (input feeding); attention: (B, S) the last attention weights;
        coverage: (B, S) the sum of all attention weights so far (coverage models), else None
    """

    hidden: tuple[torch.Tensor, ...]
    cell: tuple[torch.Tensor, ...] | None
    feed: torch.Tensor
    attention: torch.Tensor | None = None
    coverage: torch.Tensor | None = None

    def select(self, indices: torch.Tensor) -> "RNNState":
        return RNNState(
            hidden=tuple(h.index_select(0, indices) for h in self.hidden),
            cell=None if self.cell is None else tuple(c.index_select(0, indices) for c in self.cell),
            feed=self.feed.index_select(0, indices),
            attention=_select(self.attention, indices),
            coverage=_select(self.coverage, indices),
        )

    def reorder(self, indices: torch.Tensor) -> "RNNState":
        """`select` for a search that drops this state at once."""
        return self.select(indices)

    def rearranged(self, sources: torch.Tensor) -> "RNNState":
        """`select(sources)`: a recurrent state is small, copying all of it costs little."""
        return self.select(sources)

    def reserve(self, columns: int) -> "RNNState":
        """A recurrent state does not grow with the output: nothing to reserve."""
        return self

    def put(self, slots: torch.Tensor, other: "RNNState") -> "RNNState":
        """Rows `slots` replaced by other's rows (attention weights padded to the wider source)."""
        return RNNState(
            hidden=tuple(_put_rows(a, slots, b) for a, b in zip(self.hidden, other.hidden)),
            cell=None if self.cell is None else tuple(_put_rows(a, slots, b) for a, b in zip(self.cell, other.cell)),
            feed=_put_rows(self.feed, slots, other.feed),
            attention=_put_rows(self.attention, slots, other.attention, sources=True),
            coverage=_put_rows(self.coverage, slots, other.coverage, sources=True),
        )


def _pad_heads_source(t: torch.Tensor, width: int) -> torch.Tensor:
    """Zeros after dim 2 (source positions) of (B, h, S, d) up to `width`."""
    if t.size(2) == width:
        return t
    return torch.cat([t, t.new_zeros(t.size(0), t.size(1), width - t.size(2), t.size(3))], dim=2)


@dataclass
class TransformerMemory:
    """The encoder's output and what every decoder step reads from it, computed once per source.

    Shape:
        memory: (B, S, H); src_mask: (B, S) True on real tokens
        keys, values: per decoder layer (B, heads, S, d), the cross-attention projections
        prior: (B, V) the source-vocabulary prior ŷ, or None
    `group` > 1 (beam search, `repeat_rows`): each of these rows serves that many consecutive
    decoder rows, which attend to one copy of the source's keys and values instead of one each.
    """

    memory: torch.Tensor
    src_mask: torch.Tensor
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    prior: torch.Tensor | None = None
    src_ext: torch.Tensor | None = None  # (B, S) extended ids of the source tokens, for copying
    group: int = 1

    @property
    def rows(self) -> int:
        """Decoder rows this memory serves."""
        return self.memory.size(0) * self.group

    def repeat_rows(self, times: int) -> "TransformerMemory":
        """Every row `times` times in a row, as `select(arange(B).repeat_interleave(times))`;
        without a prior or copying (whose scores read per-row tensors) nothing is copied."""
        if self.prior is not None or self.src_ext is not None:
            return self.select(torch.arange(self.rows, device=self.memory.device).repeat_interleave(times))
        return replace(self, group=self.group * times)

    def select(self, indices: torch.Tensor) -> "TransformerMemory":
        if self.group > 1:
            g = self.group
            if indices.numel() % g == 0:  # whole groups, in order: select the shared rows
                groups = indices.reshape(-1, g)
                sources = torch.div(groups[:, 0], g, rounding_mode="floor")
                if torch.equal(groups, sources.unsqueeze(1) * g + torch.arange(g, device=indices.device)):
                    return replace(self._rows(sources), group=g)
            return self._rows(torch.div(indices, g, rounding_mode="floor"))
        return self._rows(indices)

    def rearranged(self, sources: torch.Tensor) -> "TransformerMemory":
        """`select(sources)` for a caller that does not use this object again: the encoder's
        outputs and cross-attention keys and values of the rows that change are copied in place
        (gathered first), the others stay where they are. Beam search drops finished sentences
        so, moving the last ones into their rows. Whole groups in order when grouped."""
        g = self.group
        if g > 1:
            groups = sources.view(-1, g)
            shared = torch.div(groups[:, 0], g, rounding_mode="floor")
            if not torch.equal(groups, shared.unsqueeze(1) * g + torch.arange(g, device=sources.device)):
                return self.select(sources)
            sources = shared
        moving, taken = moving_rows(sources)
        m = sources.numel()
        if moving.numel():
            for buffer in (self.memory,) + self.keys + self.values:
                buffer.index_copy_(0, moving, buffer.index_select(0, taken))
        return TransformerMemory(
            memory=self.memory[:m], src_mask=self.src_mask.index_select(0, sources),
            keys=tuple(k[:m] for k in self.keys), values=tuple(v[:m] for v in self.values),
            prior=_select(self.prior, sources), src_ext=_select(self.src_ext, sources), group=g,
        )

    def _ungrouped(self) -> "TransformerMemory":
        """One row per decoder row."""
        if self.group == 1:
            return self
        return self._rows(torch.arange(self.rows, device=self.memory.device) // self.group)

    def _rows(self, indices: torch.Tensor) -> "TransformerMemory":
        return TransformerMemory(
            memory=self.memory.index_select(0, indices),
            src_mask=self.src_mask.index_select(0, indices),
            keys=tuple(k.index_select(0, indices) for k in self.keys),
            values=tuple(v.index_select(0, indices) for v in self.values),
            prior=_select(self.prior, indices),
            src_ext=_select(self.src_ext, indices),
        )

    def put(self, slots: torch.Tensor, other: "TransformerMemory") -> "TransformerMemory":
        """Rows `slots` replaced by other's rows (new sentences in the rows of finished ones), written
        into these buffers, which the caller does not use again; a wider source widens them first
        (padded positions are masked)."""
        if self.group > 1 or other.group > 1:
            return self._ungrouped().put(slots, other._ungrouped())
        width, S = self.memory.size(1), other.memory.size(1)
        if S > width:
            return self._widened(S).put(slots, other)
        self.memory[slots, :S] = other.memory
        for mine, theirs in zip(self.keys + self.values, other.keys + other.values):
            mine[slots, :, :S] = theirs
        return TransformerMemory(
            memory=self.memory, src_mask=_put_rows(self.src_mask, slots, other.src_mask, sources=True),
            keys=self.keys, values=self.values, prior=_put_rows(self.prior, slots, other.prior),
            src_ext=_put_rows(self.src_ext, slots, other.src_ext, sources=True),
        )

    def _widened(self, width: int) -> "TransformerMemory":
        """The same rows with room for `width` source positions (the new ones masked)."""
        return replace(self, memory=_pad_source(self.memory, width), src_mask=_pad_source(self.src_mask, width),
                       keys=tuple(_pad_heads_source(k, width) for k in self.keys),
                       values=tuple(_pad_heads_source(v, width) for v in self.values),
                       src_ext=None if self.src_ext is None else _pad_source(self.src_ext, width))


@dataclass
class TransformerState:
    """Per-layer self-attention caches of the tokens fed so far (`cache`, which also decides how
    its buffers are allocated, grown and shared), and which of their columns each row reads.

    Row b's cache holds its tokens in columns [0, positions[b]). When every row has fed the same
    number of tokens (`ragged` False: beam search, a fresh batch), that is `length` for all, a step
    writes column `length` of every row and attends over [0, length]. Rows that took the place of
    finished ones in a running batch (`put`) have fewer tokens: then each row writes its own column
    and a mask hides the columns past it; `length` is the most any row holds.
    Shape:
        positions: (B,) tokens fed per row, also the next token's position
        attention: (B, S) last layer's cross-attention (head average)
    """

    cache: KVCache
    positions: torch.Tensor
    length: int = 0
    ragged: bool = False
    attention: torch.Tensor | None = None

    def reserve(self, columns: int) -> "TransformerState":
        """This state, with room for `columns` more tokens now and in every later copy."""
        return replace(self, cache=self.cache.reserve(self.length, columns))

    def step_cache(self) -> KVCache:
        """The buffers the next step writes its keys and values into (column `length`, or each row's own)."""
        return self.cache.for_step(self.length)

    def step_columns(self) -> torch.Tensor | None:
        """The cache column each row's next token goes into: (B,), or None when it is `length` for all."""
        return self.positions if self.ragged else None

    def step_mask(self) -> torch.Tensor | None:
        """Which cache entries (plus the token being fed) a new query may attend to: (B, 1, 1, length + 1),
        or None when all of them."""
        if not self.ragged:
            return None
        columns = torch.arange(self.length + 1, device=self.positions.device)
        return (columns <= self.positions.unsqueeze(1))[:, None, None, :]

    def advanced(self, cache: KVCache, attention: torch.Tensor | None) -> "TransformerState":
        """The state after one more token per row, written into `step_cache()`."""
        return TransformerState(cache, self.positions + 1, self.length + 1, self.ragged, attention)

    def select(self, indices: torch.Tensor) -> "TransformerState":
        """The given rows, their caches copied (`KVCache.copied`)."""
        return self._rows(indices, KVCache.copied)

    def reorder(self, indices: torch.Tensor) -> "TransformerState":
        """`select` for a search that drops this state at once (beam search at every step, greedy
        search and sampling when sentences finish): the caches may reuse memory (`KVCache.reordered`)."""
        return self._rows(indices, KVCache.reordered)

    def rearranged(self, sources: torch.Tensor) -> "TransformerState":
        """`reorder(sources)` within these buffers, moving only the rows that change
        (`KVCache.rearranged`). Cheap when few rows change: beam search places its beams so (each
        beam stays in its row when one of its extensions survives), and rows kept in order move
        up when finished ones leave."""
        return self._rows(sources, KVCache.rearranged)

    def put(self, slots: torch.Tensor, other: "TransformerState") -> "TransformerState":
        """Rows `slots` taken by other's rows (new sentences in the rows of finished ones), in these
        buffers: a newcomer's tokens go to the first columns of its row, whatever the others hold.
        The caller does not use this state again."""
        positions = self.positions.index_put((slots,), other.positions)
        length = int(positions.max())
        cache = self.cache.put(slots, other.cache, filled=self.length, theirs=other.length, length=length)
        return TransformerState(cache, positions, length, ragged=True)

    def _rows(self, indices: torch.Tensor, move: Callable[[KVCache, torch.Tensor, int], KVCache]
              ) -> "TransformerState":
        """Rows `indices`, their caches moved by `move(cache, indices, length)`. Shape: indices (m,)"""
        positions = self.positions.index_select(0, indices)
        length, ragged = self._shape_of(positions)
        return TransformerState(move(self.cache, indices, length), positions, length, ragged,
                                _select(self.attention, indices))

    def _shape_of(self, positions: torch.Tensor) -> tuple[int, bool]:
        """(length, ragged) of rows with these positions: the most any row holds, and whether some hold less."""
        if not self.ragged or not positions.numel():
            return self.length, False
        shortest, longest = (int(v) for v in torch.aminmax(positions))
        return longest, shortest != longest
