"""Explicit decoding states: everything a decoder step needs, and nothing hidden in modules.

Search only ever calls `select(indices)` on these (to follow the surviving beams after
pruning, to drop finished sentences), `reorder(indices)` (the same, when the old state is
not used again: its memory may be reused), `repeat_rows(times)` on an encoder output (a source
for each beam), `cat(other)` (to let new sentences into a running batch when others have
finished) and `reserve(columns)` (to say how many more tokens it may feed, so that caches are
sized once).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch


def _select(t: torch.Tensor | None, indices: torch.Tensor, dim: int = 0) -> torch.Tensor | None:
    return None if t is None else t.index_select(dim, indices)


def _pad_source(t: torch.Tensor, width: int) -> torch.Tensor:
    """Pad dim 1 (source positions) with zeros / False up to `width`."""
    if t.size(1) == width:
        return t
    pad = t.new_zeros((t.size(0), width - t.size(1)) + tuple(t.shape[2:]))
    return torch.cat([t, pad], dim=1)


def _cat_rows(a: torch.Tensor | None, b: torch.Tensor | None, width: int | None = None) -> torch.Tensor | None:
    if a is None or b is None:
        return None
    if width is not None:
        a, b = _pad_source(a, width), _pad_source(b, width)
    return torch.cat([a, b], dim=0)


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

    def repeat_rows(self, times: int) -> "EncoderOutput":
        """Every row `times` times in a row (beams of one source)."""
        return self.select(torch.arange(self.memory.size(0), device=self.memory.device).repeat_interleave(times))

    def cat(self, other: "EncoderOutput") -> "EncoderOutput":
        """Rows of both, sources padded to the wider one (padded positions are masked)."""
        width = max(self.memory.size(1), other.memory.size(1))
        return EncoderOutput(
            memory=_cat_rows(self.memory, other.memory, width),
            keys=_cat_rows(self.keys, other.keys, width),
            src_mask=_cat_rows(self.src_mask, other.src_mask, width),
            final=tuple(_cat_rows(a, b) for a, b in zip(self.final, other.final)),
            final_cell=None if self.final_cell is None else tuple(
                _cat_rows(a, b) for a, b in zip(self.final_cell, other.final_cell)),
            prior=_cat_rows(self.prior, other.prior),
            src_ext=_cat_rows(self.src_ext, other.src_ext, width),
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

    def reserve(self, columns: int) -> "RNNState":
        """A recurrent state does not grow with the output: nothing to reserve."""
        return self

    def cat(self, other: "RNNState") -> "RNNState":
        """Rows of both states (attention weights padded to the wider source)."""
        width = None
        if self.attention is not None and other.attention is not None:
            width = max(self.attention.size(1), other.attention.size(1))
        cov_width = None
        if self.coverage is not None and other.coverage is not None:
            cov_width = max(self.coverage.size(1), other.coverage.size(1))
        return RNNState(
            hidden=tuple(_cat_rows(a, b) for a, b in zip(self.hidden, other.hidden)),
            cell=None if self.cell is None else tuple(_cat_rows(a, b) for a, b in zip(self.cell, other.cell)),
            feed=_cat_rows(self.feed, other.feed),
            attention=_cat_rows(self.attention, other.attention, width),
            coverage=_cat_rows(self.coverage, other.coverage, cov_width),
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

    def cat(self, other: "TransformerMemory") -> "TransformerMemory":
        """Rows of both, sources padded to the wider one (padded positions are masked)."""
        if self.group > 1 or other.group > 1:
            return self._ungrouped().cat(other._ungrouped())
        width = max(self.memory.size(1), other.memory.size(1))
        return TransformerMemory(
            memory=_cat_rows(self.memory, other.memory, width),
            src_mask=_cat_rows(self.src_mask, other.src_mask, width),
            keys=tuple(torch.cat([_pad_heads_source(a, width), _pad_heads_source(b, width)])
                       for a, b in zip(self.keys, other.keys)),
            values=tuple(torch.cat([_pad_heads_source(a, width), _pad_heads_source(b, width)])
                         for a, b in zip(self.values, other.values)),
            prior=_cat_rows(self.prior, other.prior),
            src_ext=_cat_rows(self.src_ext, other.src_ext, width),
        )


SELECT_ROOM = 16  # empty cache columns a selected state keeps
RESERVE_LIMIT = 512  # cache columns reserved up front at most; longer outputs grow the caches by doubling
# (a CPU commits only the memory a step writes, a GPU all of it)


@dataclass
class TransformerState:
    """Per-layer self-attention caches of the tokens fed so far, in buffers with room to grow.

    Columns [0, length) of each buffer hold the keys/values of the fed tokens; a step writes
    the next column in place (no copy of the cache per token) and attends over [0, length].
    `written` is shared by the states that share the buffers: a step writes in place only when
    no other step has written that column yet, else it works on a copy, so every state stays
    valid. Rows that joined a running batch later have fewer tokens: their caches are padded in
    front and `valid` marks the real entries (None while every row has all of its entries).
    `reserved` is the number of columns a search said it may fill (`reserve`): buffers are
    allocated, copied and grown to that size at once, not doubled step after step.
    Shape:
        keys, values: per layer (B, heads, capacity, d); positions: (B,) the next token's position
        valid: (B, length) bool or None; attention: (B, S) last layer's cross-attention (head average)
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    positions: torch.Tensor
    length: int = 0
    valid: torch.Tensor | None = None
    attention: torch.Tensor | None = None
    written: list[int] = field(default_factory=lambda: [0], repr=False, compare=False)
    reserved: int = 0
    spare: tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]] | None = field(
        default=None, repr=False, compare=False)  # buffers `reorder` may fill next

    def reserve(self, columns: int) -> "TransformerState":
        """This state, with room for `columns` more tokens (at most RESERVE_LIMIT) now and in
        every later copy."""
        reserved = self.length + min(columns, RESERVE_LIMIT)
        if reserved <= self.keys[0].size(2):
            return replace(self, reserved=reserved)
        keys, values, written = self._grown(reserved)
        return replace(self, keys=keys, values=values, written=written, reserved=reserved)

    def room(self) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], list[int]]:
        """Buffers whose column `length` the next step may write: these, or copies with twice the room."""
        capacity = self.keys[0].size(2)
        if self.written[0] == self.length < capacity:
            return self.keys, self.values, self.written
        return self._grown(max(2 * capacity, self.length + 16, self.reserved))

    def _grown(self, capacity: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], list[int]]:
        """New buffers of `capacity` columns holding the filled ones, and their `written`."""

        def grown(buffer: torch.Tensor) -> torch.Tensor:
            B, h, _, d = buffer.shape
            bigger = buffer.new_empty(B, h, capacity, d)
            bigger[:, :, : self.length] = buffer[:, :, : self.length]
            return bigger

        return tuple(map(grown, self.keys)), tuple(map(grown, self.values)), [self.length]

    def step_mask(self) -> torch.Tensor | None:
        """Which cache entries (plus the token being fed) a new query may attend to: (B, 1, 1, length + 1)."""
        if self.valid is None:
            return None
        new = self.valid.new_ones(self.valid.size(0), 1)
        return torch.cat([self.valid, new], dim=1)[:, None, None, :]

    def advanced(self, keys: tuple, values: tuple, written: list[int], attention: torch.Tensor | None
                 ) -> "TransformerState":
        """The state after one more token, whose keys/values the layers wrote into column `length`."""
        written[0] = self.length + 1
        valid = None
        if self.valid is not None:
            valid = torch.cat([self.valid, self.valid.new_ones(self.valid.size(0), 1)], dim=1)
        return TransformerState(keys, values, self.positions + 1, self.length + 1, valid, attention, written,
                                self.reserved, self.spare)

    def select(self, indices: torch.Tensor) -> "TransformerState":
        """The given rows in new buffers with the reserved room, or a little (beam search
        selects at every step); only the filled columns are copied."""
        return self._picked(indices, reuse=False)

    def reorder(self, indices: torch.Tensor) -> "TransformerState":
        """`select` for a search that drops this state at once (beam search at every step,
        greedy search when sentences finish): the rows go into the buffers of the state that
        was reordered before, when they fit, and this state's buffers are kept for the next
        reorder. Fresh memory at every step would cost more than the copy (page faults), and
        so would growing the copies bit by bit: fresh buffers here get twice the filled length."""
        return self._picked(indices, reuse=True)

    def _picked(self, indices: torch.Tensor, reuse: bool) -> "TransformerState":
        n, length = indices.numel(), self.length
        spare = self.spare if reuse else None
        if spare is not None and (spare[0][0].size(0) < n or spare[0][0].size(2) <= length):
            spare = None  # too few rows or columns: fresh buffers
        capacity = max(length + SELECT_ROOM, self.reserved, 2 * length if reuse else 0)

        def picked(buffer: torch.Tensor, into: torch.Tensor | None) -> torch.Tensor:
            _, h, _, d = buffer.shape
            out = into[:n] if into is not None else buffer.new_empty(n, h, capacity, d)
            torch.index_select(buffer[:, :, :length], 0, indices, out=out[:, :, :length])
            return out

        into_keys, into_values = spare if spare is not None else ((None,) * len(self.keys),) * 2
        state = TransformerState(
            keys=tuple(map(picked, self.keys, into_keys)),
            values=tuple(map(picked, self.values, into_values)),
            positions=self.positions.index_select(0, indices),
            length=length,
            valid=_select(self.valid, indices),
            attention=_select(self.attention, indices),
            written=[length],
            reserved=self.reserved,
            spare=(self.keys, self.values) if reuse else None,
        )
        return state._trimmed()

    def cat(self, other: "TransformerState") -> "TransformerState":
        """Rows of both; the shorter caches are padded in front and marked invalid there."""
        width = max(self.length, other.length)
        width_att = None
        if self.attention is not None and other.attention is not None:
            width_att = max(self.attention.size(1), other.attention.size(1))
        valid = None
        if self.length != other.length or self.valid is not None or other.valid is not None:
            valid = torch.cat([_valid_padded(self, width), _valid_padded(other, width)])

        wanted = max(self.reserved - self.length, other.reserved - other.length, 0)
        capacity = width + max(wanted, SELECT_ROOM)

        def joined(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            """Both row sets in one buffer, shorter caches padded with zeros in front."""
            h, d = a.size(1), a.size(3)
            out = a.new_empty(a.size(0) + b.size(0), h, capacity, d)
            for rows, buffer, filled in ((out[: a.size(0)], a, self.length), (out[a.size(0):], b, other.length)):
                rows[:, :, : width - filled].zero_()
                rows[:, :, width - filled : width] = buffer[:, :, :filled]
            return out

        return TransformerState(
            keys=tuple(map(joined, self.keys, other.keys)),
            values=tuple(map(joined, self.values, other.values)),
            positions=torch.cat([self.positions, other.positions]),
            length=width,
            valid=valid,
            attention=_cat_rows(self.attention, other.attention, width_att),
            written=[width],
            reserved=width + wanted,
        )

    def _trimmed(self) -> "TransformerState":
        """Drop leading cache columns that no row uses any more (rows that joined late and
        outlived the longer ones); `valid` goes back to None once every entry is real."""
        if self.valid is None:
            return self
        used = self.valid.any(dim=0)  # (length,)
        first = int(used.long().argmax()) if bool(used.any()) else self.length
        valid = self.valid[:, first:]
        keys = tuple(k[:, :, first:] for k in self.keys) if first else self.keys
        values = tuple(v[:, :, first:] for v in self.values) if first else self.values
        length = self.length - first
        return TransformerState(keys, values, self.positions, length, None if bool(valid.all()) else valid,
                                self.attention, [length], max(self.reserved - first, 0), self.spare)


def _valid_padded(state: TransformerState, width: int) -> torch.Tensor:
    """(B, width) validity of a state's cache entries after padding in front to `width`."""
    B, t = state.positions.size(0), state.length
    valid = state.valid if state.valid is not None else torch.ones(B, t, dtype=torch.bool,
                                                                   device=state.positions.device)
    if t < width:
        valid = torch.cat([valid.new_zeros(B, width - t), valid], dim=1)
    return valid
