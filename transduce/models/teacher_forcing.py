"""Teacher-forced passes shared by every architecture, built on two methods each model has:
`_teacher_forced(src, src_mask, src_lengths, tgt_in, src_ext)` -> decoder outputs (B, T, H), the
encoder output, and extras ("attention", "gate_input" for copying, "coverage_loss"); and
`scores(out, enc, rows, attention, gate_input, normalize)` for the output distribution."""
from __future__ import annotations

import torch

from transduce.models.prior import masked_rows


class TeacherForcedScoring:
    """`features`, `training_scores` and `forward` of the Seq2Seq protocol (see `models.base`)."""

    def features(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced decoder outputs, before the output projection.

        Shape: src (B, S), tgt_in (B, T) -> (B, T, H), or (N, H) at the tgt_mask positions
        """
        outs = self._teacher_forced(src, src_mask, src_lengths, tgt_in)[0]
        return outs if tgt_mask is None else outs[tgt_mask]

    def training_scores(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
        tgt_mask: torch.Tensor, src_ext: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scores of the real target positions for the loss: logits, or a copy mixture's
        log-probabilities; and the summed coverage loss (None without coverage).

        Shape: src, src_ext (B, S); tgt_in, tgt_mask (B, T) -> (N, V) or (N, V'), scalar
        """
        scores, extras = self._masked_scores(src, src_mask, src_lengths, tgt_in, tgt_mask, src_ext, False)
        coverage = extras.get("coverage_loss")
        return scores, None if coverage is None else coverage[tgt_mask].sum()

    def forward(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
        tgt_mask: torch.Tensor | None = None, normalize: bool = True, src_ext: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced pass.

        Shape: src (B, S), tgt_in (B, T) -> log_probs (B, T, V); with tgt_mask (B, T) only the
        N real positions are projected onto the vocabulary: (N, V). normalize=False returns the
        logits instead (with the prior applied); a copy model returns its log-probabilities.
        """
        B, T = tgt_in.shape
        mask = tgt_mask if tgt_mask is not None else torch.ones(B, T, dtype=torch.bool, device=tgt_in.device)
        scores = self._masked_scores(src, src_mask, src_lengths, tgt_in, mask, src_ext, normalize)[0]
        return scores if tgt_mask is not None else scores.view(B, T, -1)

    def _masked_scores(
        self, src: torch.Tensor, src_mask: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor,
        mask: torch.Tensor, src_ext: torch.Tensor | None, normalize: bool,
    ) -> tuple[torch.Tensor, dict]:
        outs, enc, extras = self._teacher_forced(src, src_mask, src_lengths, tgt_in, src_ext)
        copying = "attention" in extras
        scores = self.scores(outs[mask], enc, masked_rows(mask), extras["attention"][mask] if copying else None,
                             extras["gate_input"][mask] if copying else None, normalize=normalize)
        return scores, extras
