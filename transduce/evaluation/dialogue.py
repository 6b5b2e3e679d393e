"""Scores for replies, where many answers are right: BLEU-1/2 (sacreBLEU with n-grams up to 1 or
2) for overlap with the human reply, and distinct-1/2 (Li et al. 2016: distinct n-grams over all
n-grams of all replies) for how varied the replies are: a model that answers everything with
"好的" scores BLEU-1 above zero and distinct near zero."""
from __future__ import annotations

from collections.abc import Sequence

from transduce.evaluation.metrics import bleu, sacrebleu_tokenizer


def reply_tokens(text: str, characters: bool) -> list[str]:
    """Characters (Chinese: every non-space character) or whitespace-separated words."""
    return [c for c in text if not c.isspace()] if characters else text.split()


def distinct(replies: Sequence[str], n: int, characters: bool | None = None) -> float:
    """Distinct n-grams / all n-grams over the corpus, in percent (0 when there are none)."""
    if characters is None:
        characters = sacrebleu_tokenizer(list(replies)) == "zh"
    seen, total = set(), 0
    for reply in replies:
        tokens = reply_tokens(reply, characters)
        grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
        seen.update(grams)
        total += len(grams)
    return round(100.0 * len(seen) / total, 2) if total else 0.0


def dialogue_scores(replies: Sequence[str], references: Sequence[str]) -> dict:
    """BLEU-1, BLEU-2 (against the human reply) and distinct-1, distinct-2 of the replies."""
    replies, references = list(replies), list(references)
    characters = sacrebleu_tokenizer(references) == "zh"
    return {
        "bleu1": round(bleu(replies, references, max_order=1)["score"], 2),
        "bleu2": round(bleu(replies, references, max_order=2)["score"], 2),
        "distinct1": distinct(replies, 1, characters),
        "distinct2": distinct(replies, 2, characters),
    }


