"""Corpus BLEU on code tokens, as CoNaLa and the code-generation papers after it score Python.

Code is split before any n-gram is counted: every character that is not a letter, digit or
underscore is a token, camelCase words are split, and quotes of either kind are the same
token (Wang Ling et al. 2016, "Latent Predictor Networks for Code Generation"; CoNaLa's
official evaluation). Scores are corpus BLEU-4 with no smoothing, computed by sacrebleu on
the pre-split tokens, so they compare with published CoNaLa figures; sacreBLEU's own 13a
score on the raw text is reported beside it by `score_outputs`.
"""
from __future__ import annotations

import re

from sacrebleu.metrics import BLEU

from transduce.evaluation.metrics import _corpus

_SYMBOL = re.compile(r"([^A-Za-z0-9_])")
_CAMEL = re.compile(r"([a-z])([A-Z])")
_SPACES = re.compile(r"\s+")


def code_bleu_tokens(code: str) -> list[str]:
    """The tokens CoNaLa's BLEU counts: symbols alone, camelCase split, both quotes as "`"."""
    code = _SYMBOL.sub(r" \1 ", code)
    code = _CAMEL.sub(r"\1 \2", code)
    code = _SPACES.sub(" ", code)
    code = code.replace('"', "`").replace("'", "`")
    return [token for token in code.split(" ") if token]


def code_bleu(hypotheses: list[str], references: list[str]) -> dict:
    """{"score", "signature"}: unsmoothed corpus BLEU-4 over `code_bleu_tokens`, one reference each."""
    split = [" ".join(code_bleu_tokens(h)) for h in hypotheses]
    refs = [" ".join(code_bleu_tokens(r)) for r in references]
    result = _corpus(BLEU(tokenize="none", smooth_method="none", force=True), split, refs)
    return {"score": result["score"], "signature": "code-tokens|" + result["signature"]}
