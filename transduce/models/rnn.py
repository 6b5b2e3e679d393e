"""Attention RNN encoder-decoder (GRU or LSTM), Luong-style with input feeding.

The encoder runs torch's fused RNN layers over the padded batch (`rnn_encoder`); decoder
initial states come from the encoder's final states through a learned bridge. The decoder
is written as explicit per-step cells so that training (teacher forcing) and decoding (one
token at a time from an `RNNState`) run the very same step code: incremental decoding
equals the full pass, and a step never looks at the prefix again.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from transduce.config import ModelConfig
from transduce.constants import UNK
from transduce.kernels import Dropout, Linear, ProjectionTable, dropout_mask, linear, step_weight
from transduce.models.attention import Attention
from transduce.models.embeddings import make_embeddings, make_output
from transduce.models.pointer import PointerGenerator, output_scores
from transduce.models.prior import (
    SourcePrior,
    apply_prior,
    default_source_map,
)
from transduce.models.rnn_encoder import RNNEncoder
from transduce.models.state import EncoderOutput, RNNState
from transduce.models.teacher_forcing import TeacherForcedScoring


class RecurrentCell(nn.Module):
    """One LSTM or GRU layer run a step at a time.

    The first `pre_size` input columns are projected by the caller ahead of the time loop
    (`project_ahead`: all teacher-forced target embeddings in one matrix product); the rest
    of the input is given at each step. An LSTM step is then one fused product of
    [step input; h] with the stacked weights.
    """

    def __init__(self, kind: str, input_size: int, hidden: int, pre_size: int = 0) -> None:
        super().__init__()
        self.kind, self.hidden, self.pre_size = kind, hidden, pre_size
        if kind == "lstm":
            self.weight = nn.Parameter(torch.empty(4 * hidden, input_size + hidden))  # [W_ih | W_hh]
            self.bias = nn.Parameter(torch.empty(4 * hidden))
        else:
            self.weight_ih = nn.Parameter(torch.empty(3 * hidden, input_size))
            self.weight_hh = nn.Parameter(torch.empty(3 * hidden, hidden))
            self.bias_ih = nn.Parameter(torch.empty(3 * hidden))
            self.bias_hh = nn.Parameter(torch.empty(3 * hidden))
        bound = 1.0 / math.sqrt(hidden)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)

    def project_ahead(self, x: torch.Tensor) -> torch.Tensor:
        """Gate contribution (with bias) of the first `pre_size` input columns. (..., P) -> (..., G*H)."""
        if self.kind == "lstm":
            return linear(x, self.weight[:, : self.pre_size], self.bias)
        return linear(x, self.weight_ih[:, : self.pre_size], self.bias_ih)

    def step_weights(self) -> tuple:
        """The weights a step multiplies by, wrapped once per pass (`kernels.step_weight`)."""
        if self.kind == "lstm":
            return (step_weight(self.weight[:, self.pre_size:]),)
        has_step_input = self.weight_ih.size(1) > self.pre_size
        return (step_weight(self.weight_ih[:, self.pre_size:]) if has_step_input else None,
                step_weight(self.weight_hh))

    def forward(
        self, pre: torch.Tensor | None, x: torch.Tensor | None, h: torch.Tensor, c: torch.Tensor | None,
        weights: tuple,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One step. Shape: pre (B, G*H) or None, x (B, I - pre_size) or None, h, c (B, H) -> h', c'."""
        if self.kind == "lstm":
            step_in = h if x is None else torch.cat([x, h], dim=1)  # (B, I' + H)
            gates = weights[0].product(step_in, self.bias if pre is None else pre)  # (B, 4H)
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        gates_x = pre if x is None else weights[0].product(x, self.bias_ih if pre is None else pre)  # (B, 3H)
        gates_h = weights[1].product(h, self.bias_hh)  # (B, 3H)
        xr, xz, xn = gates_x.chunk(3, dim=1)
        hr, hz, hn = gates_h.chunk(3, dim=1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        return n + z * (h - n), None


class RNNSeq2Seq(TeacherForcedScoring, nn.Module):
    """Encoder-decoder with attention; implements the Seq2Seq protocol of `models.base`."""

    def __init__(self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int,
                 src_to_tgt: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.tgt_vocab_size = tgt_vocab_size
        H, E = cfg.hidden, cfg.embed_dim
        self.is_lstm = cfg.arch == "lstm"
        self.src_embed, self.tgt_embed = make_embeddings(cfg, src_vocab_size, tgt_vocab_size)
        self.encoder = RNNEncoder(cfg.arch, E, H, cfg.encoder_layers, cfg.bidirectional, cfg.dropout)
        if cfg.bridge:
            self.bridge_h = Linear(H, H)
            self.bridge_c = Linear(H, H) if self.is_lstm else None
        feed_size = H if cfg.input_feeding else 0
        self.cells = nn.ModuleList(
            RecurrentCell(cfg.arch, E + feed_size, H, pre_size=E) if layer == 0 else RecurrentCell(cfg.arch, H, H)
            for layer in range(cfg.decoder_layers)
        )
        self.attention = Attention(cfg.attention, H, coverage=cfg.coverage)
        self.combine = Linear(2 * H, H, bias=False)  # Luong's W_c [context; h]
        self.output = make_output(cfg, self.tgt_embed, tgt_vocab_size)
        self.prior = SourcePrior(src_vocab_size, tgt_vocab_size, src_to_tgt) if cfg.source_prior else None
        self.pointer = PointerGenerator(3 * H, tgt_vocab_size, default_source_map(
            src_vocab_size, tgt_vocab_size, src_to_tgt)) if cfg.copy else None
        self.dropout = Dropout(cfg.dropout)
        self.gate_table = ProjectionTable()  # the first layer's gates of every target token, for decoding

    # ---- encoder -------------------------------------------------------------------------
    def encode(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, src_ext: torch.Tensor | None = None
    ) -> EncoderOutput:
        """Run the encoder once per source. `src_ext` (extended ids for copying) matters only to a copy model.

        Shape: src, src_mask, src_ext (B, S); src_lengths (B,)
        """
        emb = self.dropout(self.src_embed(src))  # (B, S, E)
        memory, finals = self.encoder(emb, src_lengths)
        memory = self.dropout(memory)  # (B, S, H)
        D, L = self.cfg.decoder_layers, len(finals)
        finals = finals[L - D:] if L >= D else finals + [finals[-1]] * (D - L)  # top layers meet
        if self.cfg.bridge:
            hidden = tuple(torch.tanh(self.bridge_h(f)) for f in finals)
            cell = tuple(self.bridge_c(f) for f in finals) if self.is_lstm else None
        else:
            hidden = tuple(finals)
            cell = tuple(torch.zeros_like(f) for f in finals) if self.is_lstm else None
        prior = self.prior(src, src_mask) if self.prior is not None else None
        copy_ids = self.pointer.source_ids(src, src_ext) if self.pointer is not None else None
        return EncoderOutput(memory=memory, keys=self.attention.precompute(memory), src_mask=src_mask,
                             final=hidden, final_cell=cell, prior=prior, src_ext=copy_ids)

    # ---- decoder -------------------------------------------------------------------------
    def init_state(self, enc: EncoderOutput) -> RNNState:
        B, H = enc.memory.size(0), self.cfg.hidden
        return RNNState(
            hidden=enc.final,
            cell=enc.final_cell,
            feed=enc.memory.new_zeros(B, H),
            coverage=enc.memory.new_zeros(B, enc.memory.size(1)) if self.cfg.coverage else None,
        )

    def _step_weights(self) -> list:
        """Per-step weights of every cell and of the output combination, wrapped once per pass."""
        return [cell.step_weights() for cell in self.cells] + [step_weight(self.combine.weight)]

    def _step_masks(self, steps: int, batch: int, like: torch.Tensor) -> torch.Tensor | None:
        """Dropout masks of every step drawn in one call (one per decoder layer, already scaled).

        Shape: -> (T, layers, B, H), or None outside training
        """
        p = self.cfg.dropout
        if not self.training or p == 0:
            return None
        shape = (steps, len(self.cells), batch, self.cfg.hidden)
        return dropout_mask(shape, p, like)

    def _step(
        self, emb_gates: torch.Tensor, enc: EncoderOutput, state: RNNState, weights: list,
        masks: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, RNNState, torch.Tensor | None]:
        """One decoder step from the projected target embedding.

        Dropout applies to each layer's input above the first and to the attentional output,
        with `masks` (layers, B, H) from `_step_masks`, or none.
        Shape: emb_gates (B, G*H) -> attentional output (B, H), new state, and for a copy model
            the copy gate's input [context; top hidden; output] (B, 3H), else None
        """
        hiddens, cells = [], []
        x = None
        for layer, cell in enumerate(self.cells):
            c_prev = state.cell[layer] if state.cell is not None else None
            if layer == 0:
                feed = state.feed if self.cfg.input_feeding else None
                x, c = cell(emb_gates, feed, state.hidden[0], c_prev, weights[0])
            else:
                x, c = cell(None, x if masks is None else x * masks[layer - 1], state.hidden[layer], c_prev,
                            weights[layer])
            hiddens.append(x)
            cells.append(c)
        context, attention = self.attention(x, enc.keys, enc.memory, enc.src_mask, state.coverage)
        out = torch.tanh(weights[-1].product(torch.cat([context, x], dim=1)))  # (B, H)
        if masks is not None:
            out = out * masks[-1]
        coverage = None if state.coverage is None else state.coverage + attention
        new_state = RNNState(tuple(hiddens), tuple(cells) if self.is_lstm else None, out, attention, coverage)
        gate_input = torch.cat([context, x, out], dim=1) if self.pointer is not None else None
        return out, new_state, gate_input

    def _embed_gates(self, tokens: torch.Tensor) -> torch.Tensor:
        """Target embeddings projected into the first layer's gates. (...,) -> (..., G*H).

        When decoding, a table of every vocabulary entry's projection may stand in (`kernels.ProjectionTable`).
        """
        cell, emb = self.cells[0], self.tgt_embed.weight
        weights = [emb, *cell.parameters()]
        if self.gate_table.usable(weights, self.training):
            return self.gate_table.lookup(tokens, lambda: cell.project_ahead(emb), weights)
        return cell.project_ahead(self.dropout(self.tgt_embed(tokens)))

    def train(self, mode: bool = True) -> "RNNSeq2Seq":
        """Switching modes forgets the gate table: an optimizer may change the weights in place
        without bumping their version counters (the fused Adam kernel does)."""
        self.gate_table.forget()
        return super().train(mode)

    def scores(
        self, out: torch.Tensor, enc: EncoderOutput, rows: torch.Tensor | None = None,
        attention: torch.Tensor | None = None, gate_input: torch.Tensor | None = None, normalize: bool = True,
    ) -> torch.Tensor:
        """Attentional outputs -> log-probabilities (float32 even for a bfloat16 model), or the
        logits with normalize=False; a copy model always gives the mixture's log-probabilities,
        over the extended vocabulary.

        Shape: out (N, H); rows (N,) each output's source row in enc (None: N == B);
            attention (N, S), gate_input (N, 3H) for copying -> (N, V) or (N, V')
        """
        logits = apply_prior(self.output(out).float(), enc.prior, rows)
        return output_scores(logits, self.pointer, enc.src_ext, rows, attention, gate_input, normalize)

    def decode_step(
        self, prev_tokens: torch.Tensor, enc: EncoderOutput, state: RNNState
    ) -> tuple[torch.Tensor, RNNState]:
        """Feed one new token per row. Shape: prev_tokens (B,) -> log_probs (B, V) (V' when copying), state."""
        if self.pointer is not None:  # copied tokens (extended ids) are read as unk
            prev_tokens = prev_tokens.masked_fill(prev_tokens >= self.tgt_vocab_size, UNK)
        out, state, gate_input = self._step(self._embed_gates(prev_tokens), enc, state, self._step_weights())
        return self.scores(out, enc, attention=state.attention, gate_input=gate_input), state

    def output_projection(self) -> nn.Linear | None:
        """The final linear map, when log_probs = log_softmax(output_projection(features)) (no prior, no copying)."""
        return None if self.prior is not None or self.pointer is not None else self.output

    def _teacher_forced(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
        src_ext: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, EncoderOutput, dict]:
        """Attentional outputs of every target position, and what copying needs of each step.

        Shape: tgt_in (B, T) -> (B, T, H); extras: "attention" (B, T, S), "gate_input" (B, T, 3H)
            for a copy model, "coverage_loss" (B, T) with coverage
        """
        enc = self.encode(src, src_mask, src_lengths, src_ext)
        state = self.init_state(enc)
        gates = self._embed_gates(tgt_in.t())  # (T, B, G*H), all steps in one product, time-major
        weights = self._step_weights()
        masks = self._step_masks(gates.size(0), gates.size(1), gates)
        outs, attentions, gate_inputs, coverage_losses = [], [], [], []
        for t, gates_t in enumerate(gates):
            coverage = state.coverage
            out, state, gate_input = self._step(gates_t, enc, state, weights, None if masks is None else masks[t])
            outs.append(out)
            if self.pointer is not None:
                attentions.append(state.attention)
                gate_inputs.append(gate_input)
            if coverage is not None:
                coverage_losses.append(torch.minimum(state.attention, coverage).sum(dim=1))  # (B,)
        extras = {}
        if self.pointer is not None:
            extras = {"attention": torch.stack(attentions, 1), "gate_input": torch.stack(gate_inputs, 1)}
        if coverage_losses:
            extras["coverage_loss"] = torch.stack(coverage_losses, 1)
        return torch.stack(outs, dim=1), enc, extras  # (B, T, H)
