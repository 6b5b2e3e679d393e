"""Transformer encoder-decoder (Vaswani et al. 2017), pre-norm or post-norm, with cached incremental decoding.

Attention runs through `scaled_dot_product_attention` (fused kernels on CPU and GPU). When
decoding, each step feeds only the newest token: every decoder layer appends that token's
key and value to its cache in the `TransformerState`, and the cross-attention keys and values
are projected once per source in `encode`. Beam search moves the caches of the rows that change
(`rearranged`), in place.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from transduce.config import ModelConfig
from transduce.constants import UNK
from transduce.kernels import Dropout, Linear
from transduce.models.embeddings import make_embeddings, make_output
from transduce.models.kv_cache import KVCache
from transduce.models.pointer import PointerGenerator, output_scores
from transduce.models.prior import (
    SourcePrior,
    apply_prior,
    default_source_map,
)
from transduce.models.state import TransformerMemory, TransformerState
from transduce.models.teacher_forcing import TeacherForcedScoring


def sinusoidal_positions(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """sin / cos encodings of positions, first half sines. Shape: positions (...) -> (..., dim)"""
    half = dim // 2
    inv_freq = torch.exp(torch.arange(half, device=positions.device, dtype=torch.float32)
                         * (-math.log(10000.0) / max(half - 1, 1)))
    angles = positions.float().unsqueeze(-1) * inv_freq  # (..., half)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    return F.pad(table, (0, dim - 2 * half))


class MultiHeadAttention(nn.Module):
    """Multi-head attention. Self-attention projects queries, keys and values in one product;
    cross-attention projects the source's keys and values apart from the queries, once per
    source, so that decoding steps reuse them."""

    def __init__(self, dim: int, heads: int, dropout: float, self_attention: bool) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        if self_attention:
            self.qkv = Linear(dim, 3 * dim)
        else:
            self.query = Linear(dim, dim)
            self.key_value = Linear(dim, 2 * dim)
        self.out = Linear(dim, dim)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)  # (B, h, T, d)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention: queries, keys, values of x. Shape: (B, T, H) -> 3 x (B, h, T, d)"""
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.split(q), self.split(k), self.split(v)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention: keys and values of the source, contiguous per head (every decoding
        step reads them; strided ones would be copied by each product).
        Shape: x (B, S, H) -> 2 x (B, h, S, d)"""
        k, v = self.key_value(x).chunk(2, dim=-1)
        return self.split(k).contiguous(), self.split(v).contiguous()

    def reset_glorot(self) -> None:
        """Glorot-uniform projections; queries, keys and values with gain 1/sqrt(2), as fairseq's."""
        if hasattr(self, "qkv"):
            glorot_(self.qkv, 3, 2 ** -0.5)
        else:
            glorot_(self.query, 1, 2 ** -0.5)
            glorot_(self.key_value, 2, 2 ** -0.5)
        glorot_(self.out)

    def queries(self, x: torch.Tensor) -> torch.Tensor:
        return self.split(self.query(x))

    def forward(
        self, q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None = None,
        causal: bool = False, weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend from queries q to keys/values; `mask` (B, 1, 1|T, S) True where allowed.

        With weights=True the attention weights, averaged over heads, come back too (computed
        explicitly, for display and copying: SDPA does not return them).
        Shape: q (B, h, T, d), keys, values (B, h, S, d) -> (B, T, H), weights (B, T, S) or None
        """
        B, _, T, _ = q.shape
        p = self.dropout if self.training else 0.0
        if weights or T == 1:  # one query (a decoding step): two small products beat the fused kernel on CPU
            scores = q @ keys.transpose(-1, -2) / math.sqrt(self.head_dim)  # (B, h, T, S)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)
            ctx = F.dropout(probs, p, self.training) @ values  # (B, h, T, d)
            averaged = probs.mean(dim=1) if weights else None  # (B, T, S)
        else:
            ctx = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, dropout_p=p, is_causal=causal)
            averaged = None
        return self.out(ctx.transpose(1, 2).reshape(B, T, -1)), averaged


def glorot_(linear: nn.Linear, blocks: int = 1, gain: float = 1.0) -> None:
    """Glorot-uniform weights (Glorot & Bengio 2010) for each of `blocks` maps stacked in one
    linear (fused query/key/value projections count as three), and a zero bias."""
    with torch.no_grad():
        for part in linear.weight.chunk(blocks, dim=0):
            nn.init.xavier_uniform_(part, gain=gain)
        if linear.bias is not None:
            linear.bias.zero_()


class FeedForward(nn.Module):
    def __init__(self, dim: int, inner: int, dropout: float) -> None:
        super().__init__()
        self.inner, self.outer, self.dropout = Linear(dim, inner), Linear(inner, dim), Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.outer(self.dropout(F.relu(self.inner(x))))


class Sublayer(nn.Module):
    """Residual around a block, with LayerNorm before it (pre-norm) or after the sum (post-norm)."""

    def __init__(self, dim: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm, self.dropout, self.pre_norm = nn.LayerNorm(dim), Dropout(dropout), pre_norm

    def before(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x) if self.pre_norm else x

    def after(self, x: torch.Tensor, block_out: torch.Tensor) -> torch.Tensor:
        y = x + self.dropout(block_out)
        return y if self.pre_norm else self.norm(y)


class EncoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        pre = cfg.norm == "pre"
        self.attention = MultiHeadAttention(cfg.hidden, cfg.heads, cfg.attention_dropout, self_attention=True)
        self.feed_forward = FeedForward(cfg.hidden, cfg.ff_size, cfg.dropout)
        self.sub_attention, self.sub_ff = Sublayer(cfg.hidden, cfg.dropout, pre), Sublayer(cfg.hidden, cfg.dropout, pre)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Shape: x (B, S, H), mask (B, 1, 1, S) -> (B, S, H)"""
        q, k, v = self.attention.project(self.sub_attention.before(x))
        x = self.sub_attention.after(x, self.attention(q, k, v, mask)[0])
        return self.sub_ff.after(x, self.feed_forward(self.sub_ff.before(x)))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        pre = cfg.norm == "pre"
        self.self_attention = MultiHeadAttention(cfg.hidden, cfg.heads, cfg.attention_dropout, self_attention=True)
        self.cross_attention = MultiHeadAttention(cfg.hidden, cfg.heads, cfg.attention_dropout, self_attention=False)
        self.feed_forward = FeedForward(cfg.hidden, cfg.ff_size, cfg.dropout)
        self.sub_self, self.sub_cross, self.sub_ff = (Sublayer(cfg.hidden, cfg.dropout, pre) for _ in range(3))

    def forward(
        self, x: torch.Tensor, cross_kv: tuple[torch.Tensor, torch.Tensor], src_mask: torch.Tensor,
        weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Teacher forcing: every target position at once, causal self-attention. Returns the
        output, the head-averaged cross-attention weights when asked, and the cross-attention output.
        Shape: x (B, T, H); cross_kv (B, h, S, d) each; src_mask (B, 1, 1, S) -> (B, T, H), (B, T, S)"""
        q, k, v = self.self_attention.project(self.sub_self.before(x))  # (B, h, T, d) each
        x = self.sub_self.after(x, self.self_attention(q, k, v, causal=x.size(1) > 1)[0])
        return self._cross_and_feed_forward(x, cross_kv, src_mask, weights)

    def step(
        self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, length: int, columns: torch.Tensor | None,
        cross_kv: tuple[torch.Tensor, torch.Tensor], src_mask: torch.Tensor, self_mask: torch.Tensor | None,
        weights: bool = False, group: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """One new token: its key/value go into column `length` of the cache buffers (in place), or
        into each row's own column `columns`, then it attends over columns [0, length]. `self_mask`
        marks valid cache entries (None = all); `group` consecutive rows share one row of `cross_kv`
        and `src_mask` (beams of one source). Returns what `forward` returns.
        Shape: x (B, 1, H); keys, values (B, h, capacity, d); columns (B,); cross_kv (B / group, h, S, d) each
        """
        q, k, v = self.self_attention.project(self.sub_self.before(x))  # (B, h, 1, d) each
        if columns is None:
            keys[:, :, length : length + 1] = k
            values[:, :, length : length + 1] = v
        else:  # column `length` enters the window of every row: zeros where no row's token goes
            # (a masked entry's weight is 0, but 0 x the garbage of unwritten memory may be NaN)
            rows = torch.arange(x.size(0), device=x.device)
            for cache, new in ((keys, k), (values, v)):
                cache[:, :, length].zero_()
                cache[rows, :, columns] = new.squeeze(2)  # (B, h, d)
        attended = self.self_attention(q, keys[:, :, : length + 1], values[:, :, : length + 1], self_mask)[0]
        x = self.sub_self.after(x, attended)
        return self._cross_and_feed_forward(x, cross_kv, src_mask, weights, group)

    def _cross_and_feed_forward(
        self, x: torch.Tensor, cross_kv: tuple[torch.Tensor, torch.Tensor], src_mask: torch.Tensor, weights: bool,
        group: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        q = self.cross_attention.queries(self.sub_cross.before(x))  # (N, h, T, d)
        if group == 1:
            context, attention = self.cross_attention(q, *cross_kv, src_mask, weights=weights)
        else:  # one step (T = 1): each source's beams become its `group` queries, (N / group, h, group, d)
            N, h, _, d = q.shape
            grouped = q.reshape(N // group, group, h, d).transpose(1, 2)
            context, attention = self.cross_attention(grouped, *cross_kv, src_mask, weights=True)  # small: explicit
            context = context.reshape(N, 1, -1)
            attention = attention.reshape(N, 1, -1) if weights else None
        x = self.sub_cross.after(x, context)
        return self.sub_ff.after(x, self.feed_forward(self.sub_ff.before(x))), attention, context


class TransformerSeq2Seq(TeacherForcedScoring, nn.Module):
    """Encoder-decoder Transformer; implements the Seq2Seq protocol of `models.base`."""

    def __init__(self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int,
                 src_to_tgt: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.tgt_vocab_size = tgt_vocab_size
        self.src_embed, self.tgt_embed = make_embeddings(cfg, src_vocab_size, tgt_vocab_size)
        if cfg.positions == "learned":
            self.src_positions = nn.Embedding(cfg.max_positions, cfg.hidden)
            self.tgt_positions = nn.Embedding(cfg.max_positions, cfg.hidden)
            for table in (self.src_positions, self.tgt_positions):
                nn.init.normal_(table.weight, std=cfg.hidden ** -0.5)
        self.encoder_layers = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder_layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        pre = cfg.norm == "pre"
        self.encoder_norm = nn.LayerNorm(cfg.hidden) if pre else nn.Identity()
        self.decoder_norm = nn.LayerNorm(cfg.hidden) if pre else nn.Identity()
        self.output = make_output(cfg, self.tgt_embed, tgt_vocab_size)
        self.prior = SourcePrior(src_vocab_size, tgt_vocab_size, src_to_tgt) if cfg.source_prior else None
        # copying mixes in the last layer's cross-attention, gated on [decoder output; its context]
        self.pointer = PointerGenerator(2 * cfg.hidden, tgt_vocab_size, default_source_map(
            src_vocab_size, tgt_vocab_size, src_to_tgt)) if cfg.copy else None
        self.dropout = Dropout(cfg.dropout)
        self.scale = math.sqrt(cfg.hidden)
        if cfg.init == "glorot":
            self._reset_glorot()
        table = sinusoidal_positions(torch.arange(cfg.max_positions), cfg.hidden)
        self.register_buffer("sinusoids", table, persistent=False)  # fixed: not saved with the weights

    def _reset_glorot(self) -> None:
        """The projections of every layer Glorot-uniform with zero biases (embeddings keep their
        N(0, H^-1/2)); PyTorch's default draws them about half as large."""
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.reset_glorot()
            elif isinstance(module, FeedForward):
                glorot_(module.inner)
                glorot_(module.outer)
        if self.output.bias is not None:
            with torch.no_grad():
                self.output.bias.zero_()

    def _embed(
        self, embed: nn.Embedding, tokens: torch.Tensor, positions: torch.Tensor, bound: int, side: str
    ) -> torch.Tensor:
        """Scaled embeddings plus positions; `bound` exceeds every position (known from shapes,
        so no device synchronisation is needed to check it).
        Shape: tokens, positions (B, T) -> (B, T, H)"""
        x = embed(tokens) * self.scale
        if self.cfg.positions == "learned":
            if bound > self.cfg.max_positions:
                raise ValueError(f"{side} longer than model.max_positions ({self.cfg.max_positions})")
            pos = (self.src_positions if side == "source" else self.tgt_positions)(positions)
        elif bound <= self.sinusoids.size(0):
            pos = F.embedding(positions, self.sinusoids)
        else:
            pos = sinusoidal_positions(positions, self.cfg.hidden)
        return self.dropout(x + pos.to(x.dtype))

    # ---- encoder -------------------------------------------------------------------------
    def encode(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, src_ext: torch.Tensor | None = None
    ) -> TransformerMemory:
        """Encode once per source, and project every decoder layer's cross-attention keys/values.
        `src_ext` (extended ids for copying) matters only to a copy model.

        Shape: src, src_mask, src_ext (B, S); src_lengths (B,)
        """
        positions = torch.arange(src.size(1), device=src.device).expand_as(src)
        x = self._embed(self.src_embed, src, positions, src.size(1), "source")  # (B, S, H)
        mask = src_mask[:, None, None, :]  # (B, 1, 1, S)
        for layer in self.encoder_layers:
            x = layer(x, mask)
        memory = self.encoder_norm(x)
        cross = [layer.cross_attention.keys_values(memory) for layer in self.decoder_layers]
        prior = self.prior(src, src_mask) if self.prior is not None else None
        copy_ids = self.pointer.source_ids(src, src_ext) if self.pointer is not None else None
        return TransformerMemory(memory=memory, src_mask=src_mask, keys=tuple(k for k, _ in cross),
                                 values=tuple(v for _, v in cross), prior=prior, src_ext=copy_ids)

    # ---- decoder -------------------------------------------------------------------------
    def init_state(self, enc: TransformerMemory) -> TransformerState:
        B, device = enc.rows, enc.memory.device
        heads, head_dim = self.cfg.heads, self.cfg.hidden // self.cfg.heads
        cache = KVCache.empty(len(self.decoder_layers), B, heads, head_dim, like=enc.memory)
        return TransformerState(cache, positions=torch.zeros(B, dtype=torch.long, device=device))

    def decode_step(
        self, prev_tokens: torch.Tensor, enc: TransformerMemory, state: TransformerState
    ) -> tuple[torch.Tensor, TransformerState]:
        """Feed one new token per row. Shape: prev_tokens (B,) -> log_probs (B, V), state."""
        if self.pointer is not None:  # copied tokens (extended ids) are read as unk
            prev_tokens = prev_tokens.masked_fill(prev_tokens >= self.tgt_vocab_size, UNK)
        tokens = prev_tokens.unsqueeze(1)  # (B, 1)
        positions = state.positions.unsqueeze(1)
        bound = state.length + 1  # no row has fed more tokens than the cache holds
        if self.cfg.positions == "learned":  # past the table, the last learned position stands in
            positions, bound = positions.clamp(max=self.cfg.max_positions - 1), min(bound, self.cfg.max_positions)
        x = self._embed(self.tgt_embed, tokens, positions, bound, "target")  # (B, 1, H)
        src_mask = enc.src_mask[:, None, None, :]
        self_mask, columns = state.step_mask(), state.step_columns()  # (B, 1, 1, length + 1), (B,) or None
        cache = state.step_cache()
        last = len(self.decoder_layers) - 1
        for i, layer in enumerate(self.decoder_layers):
            x, attention, context = layer.step(x, cache.keys[i], cache.values[i], state.length, columns,
                                               (enc.keys[i], enc.values[i]), src_mask, self_mask,
                                               weights=i == last, group=enc.group)
        out = self.decoder_norm(x).squeeze(1)  # (B, H)
        attention = attention.squeeze(1)  # (B, S)
        new_state = state.advanced(cache, attention)
        gate_input = torch.cat([out, context.squeeze(1)], dim=1) if self.pointer is not None else None
        return self.scores(out, enc, None, attention, gate_input), new_state

    def scores(
        self, out: torch.Tensor, enc: TransformerMemory, rows: torch.Tensor | None = None,
        attention: torch.Tensor | None = None, gate_input: torch.Tensor | None = None, normalize: bool = True,
    ) -> torch.Tensor:
        """Decoder outputs -> log-probabilities (float32), or logits with normalize=False; a copy
        model gives its mixture's log-probabilities over the extended vocabulary.
        Shape: out (N, H); rows (N,) each output's source row (None: N == B) -> (N, V) or (N, V')"""
        logits = apply_prior(self.output(out).float(), enc.prior, rows)
        return output_scores(logits, self.pointer, enc.src_ext, rows, attention, gate_input, normalize)

    def output_projection(self) -> nn.Linear | None:
        """The final linear map, when log_probs = log_softmax(output(features)) (no prior, no copying)."""
        return None if self.prior is not None or self.pointer is not None else self.output

    def _teacher_forced(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
        src_ext: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, TransformerMemory, dict]:
        """Decoder outputs for all target positions at once, and for a copy model the last
        layer's "attention" (B, T, S) and "gate_input" (B, T, 2H). Shape: tgt_in (B, T) -> (B, T, H)"""
        enc = self.encode(src, src_mask, src_lengths, src_ext)
        positions = torch.arange(tgt_in.size(1), device=tgt_in.device).expand_as(tgt_in)
        x = self._embed(self.tgt_embed, tgt_in, positions, tgt_in.size(1), "target")  # (B, T, H)
        src_mask4 = src_mask[:, None, None, :]
        last, copying = len(self.decoder_layers) - 1, self.pointer is not None
        for i, layer in enumerate(self.decoder_layers):
            x, attention, context = layer(x, (enc.keys[i], enc.values[i]), src_mask4, weights=copying and i == last)
        out = self.decoder_norm(x)
        extras = {"attention": attention, "gate_input": torch.cat([out, context], dim=2)} if copying else {}
        return out, enc, extras
