"""Explicit decoding states: everything a decoder step needs, and nothing hidden in modules.

Search only ever calls `select(indices)` on these (to follow the surviving beams after
pruning, to drop finished sentences), `reorder(indices)` (the same, when the old state is
not used again: its memory may be reused), `rearranged(sources)` (the same again, copying
only the rows that change, in place), `repeat_rows(times)` on an encoder output (a source for
each beam), `put(slots, other)` (new sentences take the rows of finished ones in a running
batch; the old object is not used again) and `reserve(columns)` (to say how many more tokens it
may feed, so that caches are sized once).
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


def moving_rows(sources: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows of `rearranged(sources)` that change, and the rows they take.
    Shape: sources (m,) -> 2 x (moved,)"""
    moving = (sources != torch.arange(sources.numel(), device=sources.device)).nonzero().squeeze(1)
    return moving, sources.index_select(0, moving)


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


SELECT_ROOM = 16  # empty cache columns a selected state keeps
SHRINK_ROWS = 64  # cache buffers of this many rows are kept however few of them are used
COMPACT_ROWS = 64  # rows `reorder` moves within the buffers at most (else: copies)
RESERVE_LIMIT = 512  # cache columns reserved up front at most; longer outputs grow the caches by doubling
# (a CPU commits only the memory a step writes, a GPU all of it)


def _fits(buffer: torch.Tensor, rows: int, length: int) -> bool:
    """Whether a cache buffer (a view of its first rows, maybe) can take `rows` rows of `length`
    filled columns and the next one, without holding more than twice the rows: once most
    sentences of a batch have finished, their rows' memory is given back."""
    _, h, capacity, d = buffer.shape
    held = buffer.untyped_storage().nbytes() // (h * capacity * d * buffer.element_size())
    return rows <= buffer.size(0) and length < capacity and held <= max(2 * rows, SHRINK_ROWS)


@dataclass
class TransformerState:
    """Per-layer self-attention caches of the tokens fed so far, in buffers with room to grow.

    Row b's cache holds its tokens in columns [0, positions[b]). When every row has fed the same
    number of tokens (`ragged` False: beam search, a fresh batch), that is `length` for all, a step
    writes column `length` of every row and attends over [0, length]. Rows that took the place of
    finished ones in a running batch (`put`) have fewer tokens: then each row writes its own column
    and a mask hides the columns past it; `length` is the most any row holds. A step writes in
    place (no copy of the cache per token) only when no other step has written that column of
    these buffers yet (`written`, shared by the states that share the buffers), else it works on a
    copy, so every state stays valid. `reserved` is the number of columns a search said it may
    fill (`reserve`): buffers are allocated, copied and grown to that size at once, not doubled
    step after step.
    Shape:
        keys, values: per layer (B, heads, capacity, d); positions: (B,) tokens fed per row, also
        the next token's position; attention: (B, S) last layer's cross-attention (head average)
    """

    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    positions: torch.Tensor
    length: int = 0
    ragged: bool = False
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

    def advanced(self, keys: tuple, values: tuple, written: list[int], attention: torch.Tensor | None
                 ) -> "TransformerState":
        """The state after one more token per row, written into column `length` (or each row's own)."""
        written[0] = self.length + 1
        return TransformerState(keys, values, self.positions + 1, self.length + 1, self.ragged, attention, written,
                                self.reserved, self.spare)

    def select(self, indices: torch.Tensor) -> "TransformerState":
        """The given rows in new buffers with the reserved room, or a little (beam search
        selects at every step); only the filled columns are copied."""
        return self._picked(indices, reuse=False)

    def reorder(self, indices: torch.Tensor) -> "TransformerState":
        """`select` for a search that drops this state at once (beam search at every step,
        greedy search and sampling when sentences finish). Rows kept in their order (increasing
        indices) move up within these buffers, unless a second set of buffers already takes turns
        with them. Other orders go into the buffers of the state that was reordered before, when
        they fit, and this state's buffers are kept for the next reorder. Fresh memory at every
        step would cost more than the copy (page faults), and so would growing the copies bit by
        bit: fresh buffers here get twice the filled length."""
        if self.spare is None and indices.numel() and bool((indices[1:] > indices[:-1]).all()):
            moved = indices.numel() - int((indices == torch.arange(indices.numel(), device=indices.device)).sum())
            if moved <= COMPACT_ROWS:
                return self.rearranged(indices)
        return self._picked(indices, reuse=True)

    def rearranged(self, sources: torch.Tensor) -> "TransformerState":
        """`reorder(sources)` within these buffers: the rows that change take their sources'
        caches (gathered first, so any order is safe), the others stay, and the rows past
        `sources` are dropped. Cheap when few rows change: beam search places its beams so (each
        beam stays in its row when one of its extensions survives), and rows kept in order move
        up when finished ones leave."""
        m = sources.numel()
        positions = self.positions.index_select(0, sources)
        length, ragged = self._shape_of(positions)
        moving, taken = moving_rows(sources)
        if moving.numel():  # index_copy_ of an index_select: twice as fast as indexing on both sides
            for buffer in self.keys + self.values:
                filled = buffer[:, :, :length]
                filled.index_copy_(0, moving, filled.index_select(0, taken))
        return TransformerState(
            keys=tuple(k[:m] for k in self.keys), values=tuple(v[:m] for v in self.values), positions=positions,
            length=length, ragged=ragged, attention=_select(self.attention, sources), written=[length],
            reserved=self.reserved, spare=self.spare,
        )

    def _shape_of(self, positions: torch.Tensor) -> tuple[int, bool]:
        """(length, ragged) of rows with these positions: the most any row holds, and whether some hold less."""
        if not self.ragged or not positions.numel():
            return self.length, False
        shortest, longest = (int(v) for v in torch.aminmax(positions))
        return longest, shortest != longest

    def _picked(self, indices: torch.Tensor, reuse: bool) -> "TransformerState":
        n = indices.numel()
        positions = self.positions.index_select(0, indices)
        length, ragged = self._shape_of(positions)
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
        return TransformerState(
            keys=tuple(map(picked, self.keys, into_keys)),
            values=tuple(map(picked, self.values, into_values)),
            positions=positions,
            length=length,
            ragged=ragged,
            attention=_select(self.attention, indices),
            written=[length],
            reserved=self.reserved,
            spare=(self.keys, self.values) if reuse else None,
        )

    def put(self, slots: torch.Tensor, other: "TransformerState") -> "TransformerState":
        """Rows `slots` taken by other's rows (new sentences in the rows of finished ones), in these
        buffers: a newcomer's tokens go to the first columns of its row, whatever the others hold.
        The caller does not use this state again."""
        positions = self.positions.index_put((slots,), other.positions)
        length = int(positions.max())
        reserved = max(self.reserved, other.reserved)  # both count columns from the first
        keys, values = self.keys, self.values
        if not length < keys[0].size(2) >= reserved:
            keys, values, _ = self._grown(max(reserved, length + SELECT_ROOM))
        for mine, theirs in zip(keys + values, other.keys + other.values):
            mine[slots, :, : other.length] = theirs[:, :, : other.length]
        return TransformerState(keys, values, positions, length, ragged=True, written=[length], reserved=reserved,
                                spare=self.spare)
