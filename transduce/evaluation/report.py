"""The evaluation report: decode a test set and score it with the field's standard metrics."""
from __future__ import annotations

from typing import Iterable, Sequence

from transduce.data.readers import Pair
from transduce.evaluation.code_bleu import code_bleu
from transduce.evaluation.metrics import bleu, chrf, exact_match, perplexity
from transduce.evaluation.reference_scoring import reference_nll
from transduce.evaluation.rouge import rouge


def score_outputs(hypotheses: Sequence[str], references: Sequence[str]) -> dict:
    """BLEU and chrF (sacreBLEU, with signatures), ROUGE-1/2/L (characters for Chinese) and
    exact match of detokenized outputs."""
    hypotheses, references = list(hypotheses), list(references)
    b, c, r = bleu(hypotheses, references), chrf(hypotheses, references), rouge(hypotheses, references)
    return {
        "bleu": round(b["score"], 2),
        "chrf": round(c["score"], 2),
        "rouge1": r["rouge1"],
        "rouge2": r["rouge2"],
        "rougeL": r["rougeL"],
        "exact_match": round(exact_match(hypotheses, references), 2),
        "bleu_signature": b["signature"],
        "chrf_signature": c["signature"],
        "rouge_tokenizer": r["tokenizer"],
    }


def evaluate(translator, pairs: Iterable[Pair], *, batch_tokens: int = 4096, code: bool = False,
             **decode_options) -> tuple[dict, list[str]]:
    """Report for a model on pairs (metrics of its outputs, perplexity of the references) and the outputs.

    `code` adds "code_bleu", BLEU on code tokens as CoNaLa scores generated Python.
    """
    pairs = list(pairs)
    sources, references = [p.source for p in pairs], [p.target for p in pairs]
    hypotheses = translator.translate(sources, **decode_options)
    report = {"sentences": len(pairs), **score_outputs(hypotheses, references)}
    if code:
        scored = code_bleu(hypotheses, references)
        report["code_bleu"], report["code_bleu_signature"] = round(scored["score"], 2), scored["signature"]
    examples = translator.codec.examples(pairs, copy=translator.config.model.copy)
    nll, tokens = reference_nll(translator.model, examples, batch_tokens, translator.device)
    report["perplexity"] = round(perplexity(nll, tokens), 3)
    report["decode"] = {k: v for k, v in vars(translator.decode_options(**decode_options)).items()}
    return report, hypotheses
