"""ROUGE-1/2/L through the rouge-score library, on characters for Chinese.

rouge-score's default tokenizer keeps only [a-z0-9] runs, so Chinese text scores 0 whatever
the output: for references that are mostly CJK, every non-space character is a token.
"""
from __future__ import annotations

from rouge_score import rouge_scorer

from transduce.evaluation.metrics import sacrebleu_tokenizer

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


class CharacterTokenizer:
    """Every non-space character is a token (the rouge-score tokenizer protocol)."""

    def tokenize(self, text: str) -> list[str]:
        return [char for char in text if not char.isspace()]


def rouge_tokenizer_name(references: list[str]) -> str:
    """"char" for mostly-CJK references, else "default" (rouge-score's own, lower-cased words)."""
    return "char" if sacrebleu_tokenizer(references) == "zh" else "default"


def rouge(hypotheses: list[str], references: list[str], tokenizer: str | None = None) -> dict:
    """Mean F-measure x 100 of ROUGE-1, ROUGE-2 and ROUGE-L over sentence pairs, and the tokenizer used."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: the counts must match")
    name = tokenizer or rouge_tokenizer_name(references)
    if name not in ("char", "default"):
        raise ValueError(f"unknown ROUGE tokenizer {name!r} (valid: char, default)")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=CharacterTokenizer() if name == "char" else None)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for hypothesis, reference in zip(hypotheses, references):
        scores = scorer.score(reference, hypothesis)
        for kind in ROUGE_TYPES:
            totals[kind] += scores[kind].fmeasure
    count = max(len(hypotheses), 1)
    return {**{kind: round(100 * totals[kind] / count, 2) for kind in ROUGE_TYPES}, "tokenizer": name}
