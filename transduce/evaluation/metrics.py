"""Corpus scores computed with the field's standard tools, so numbers compare with published ones.

BLEU and chrF come from sacrebleu together with their signature strings (which say how the
text was tokenised); exact match and perplexity are one-liners kept here so every caller
computes them the same way.
"""
from __future__ import annotations

import math

from sacrebleu.metrics import BLEU, CHRF

CJK_SHARE = 0.3  # above this share of non-space characters in CJK ranges, BLEU tokenises as Chinese
MAX_EXPONENT = 700.0  # exp() of more than this overflows a float: report inf instead

_CJK_RANGES = (
    (0x3000, 0x303F),  # CJK symbols and punctuation
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x3400, 0x4DBF),  # CJK unified ideographs extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xAC00, 0xD7AF),  # hangul syllables
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF00, 0xFFEF),  # half- and full-width forms
    (0x20000, 0x2FFFF),  # supplementary ideographic planes
)


def _is_cjk(char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _check_lengths(hypotheses: list[str], references: list[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references: the counts must match")


def _corpus(metric: BLEU | CHRF, hypotheses: list[str], references: list[str]) -> dict:
    """Score against one reference per hypothesis; an empty corpus scores 0.0.

    sacrebleu rejects an empty corpus and builds a signature only after scoring, hence the one
    empty pair scored for the signature alone.
    """
    _check_lengths(hypotheses, references)
    if not hypotheses:
        metric.corpus_score([""], [[""]])
        return {"score": 0.0, "signature": str(metric.get_signature())}
    score = metric.corpus_score(hypotheses, [references]).score
    return {"score": float(score), "signature": str(metric.get_signature())}


def sacrebleu_tokenizer(texts: list[str]) -> str:
    """The sacrebleu tokenizer for these texts: "zh" when mostly CJK characters, else the default "13a"."""
    chars = [c for text in texts for c in text if not c.isspace()]
    if not chars:
        return "13a"
    cjk = sum(_is_cjk(c) for c in chars)
    return "zh" if cjk / len(chars) > CJK_SHARE else "13a"


def bleu(hypotheses: list[str], references: list[str], tokenize: str | None = None, max_order: int = 4) -> dict:
    """Corpus BLEU against one reference per hypothesis: {"score", "signature"}.

    `tokenize` None picks the tokenizer from the references (see `sacrebleu_tokenizer`);
    `max_order` 1 or 2 gives the BLEU-1 / BLEU-2 of dialogue papers.
    """
    metric = BLEU(tokenize=tokenize or sacrebleu_tokenizer(references), max_ngram_order=max_order)
    return _corpus(metric, hypotheses, references)


def chrf(hypotheses: list[str], references: list[str]) -> dict:
    """Corpus chrF (character n-gram F-score, no tokenisation needed): {"score", "signature"}."""
    return _corpus(CHRF(), hypotheses, references)


def exact_match(hypotheses: list[str], references: list[str]) -> float:
    """Percentage (0-100) of hypotheses equal to their reference, ignoring surrounding whitespace."""
    _check_lengths(hypotheses, references)
    if not hypotheses:
        return 0.0
    hits = sum(h.strip() == r.strip() for h, r in zip(hypotheses, references))
    return 100.0 * hits / len(hypotheses)


def perplexity(total_nll: float, num_tokens: int) -> float:
    """exp(mean negative log-likelihood per token); inf when there are no tokens or it overflows."""
    if num_tokens <= 0:
        return float("inf")
    exponent = total_nll / num_tokens
    if exponent > MAX_EXPONENT:
        return float("inf")
    return math.exp(exponent)
