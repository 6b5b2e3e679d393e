import math

import pytest
import sacrebleu

from transduce.evaluation.metrics import (
    bleu,
    chrf,
    exact_match,
    perplexity,
    sacrebleu_tokenizer,
)

ZH_REFS = ["基于深度学习的中文文本摘要方法研究", "超立方体网络的结构连通性"]
ZH_HYPS = ["基于深度学习的文本摘要方法", "超立方体网络的连通性研究"]
EN_REFS = ["the cat sat on the mat .", "a quick brown fox jumps over the lazy dog"]


def test_auto_tokenizer_picks_zh_for_chinese_and_13a_for_english():
    assert sacrebleu_tokenizer(ZH_REFS) == "zh"
    assert sacrebleu_tokenizer(EN_REFS) == "13a"
    assert sacrebleu_tokenizer([]) == "13a"
    assert sacrebleu_tokenizer(["   "]) == "13a"


def test_auto_tokenizer_threshold_counts_non_space_characters():
    assert sacrebleu_tokenizer(["网络 is great and fast"]) == "13a"  # 2 of 17 characters
    assert sacrebleu_tokenizer(["网络连通性 of x"]) == "zh"  # 5 of 8 characters


def test_chinese_bleu_is_positive_and_equals_sacrebleus_own():
    result = bleu(ZH_HYPS, ZH_REFS, tokenize="zh")
    expected = sacrebleu.corpus_bleu(ZH_HYPS, [ZH_REFS], tokenize="zh").score
    assert result["score"] > 0
    assert result["score"] == pytest.approx(expected)
    assert "tok:zh" in result["signature"]


def test_bleu_picks_the_tokenizer_from_the_references():
    assert "tok:zh" in bleu(ZH_HYPS, ZH_REFS)["signature"]
    assert bleu(ZH_HYPS, ZH_REFS)["score"] == pytest.approx(bleu(ZH_HYPS, ZH_REFS, tokenize="zh")["score"])
    assert "tok:13a" in bleu(EN_REFS, EN_REFS)["signature"]


def test_unsegmented_chinese_scores_lower_without_the_zh_tokenizer():
    # with 13a each sentence is one "word", so partial matches earn nothing
    assert bleu(ZH_HYPS, ZH_REFS, tokenize="13a")["score"] < bleu(ZH_HYPS, ZH_REFS, tokenize="zh")["score"]


def test_identical_lists_score_100():
    for refs in (ZH_REFS, EN_REFS):
        assert bleu(refs, refs)["score"] == pytest.approx(100.0)
        assert chrf(refs, refs)["score"] == pytest.approx(100.0)
        assert exact_match(refs, refs) == pytest.approx(100.0)


def test_chrf_matches_sacrebleu_and_has_a_signature():
    result = chrf(ZH_HYPS, ZH_REFS)
    assert result["score"] == pytest.approx(sacrebleu.corpus_chrf(ZH_HYPS, [ZH_REFS]).score)
    assert 0 < result["score"] < 100
    assert result["signature"].startswith("nrefs:1")


def test_exact_match_hand_computed():
    hyps = ["a b", " c ", "d", "E"]
    refs = ["a b", "c", "d e", "e"]
    assert exact_match(hyps, refs) == pytest.approx(50.0)  # "a b" and "c" (after strip)


@pytest.mark.parametrize("metric", [bleu, chrf, exact_match])
def test_mismatched_lengths_name_both_counts(metric):
    with pytest.raises(ValueError, match=r"3 hypotheses but 2 references"):
        metric(["a", "b", "c"], ["a", "b"])


def test_empty_lists_score_zero():
    assert bleu([], [])["score"] == 0.0
    assert "tok:13a" in bleu([], [])["signature"]
    assert chrf([], [])["score"] == 0.0
    assert exact_match([], []) == 0.0


def test_perplexity_known_value():
    assert perplexity(math.log(4) * 10, 10) == pytest.approx(4.0)
    assert perplexity(0.0, 7) == pytest.approx(1.0)


def test_perplexity_guards_zero_tokens_and_overflow():
    assert perplexity(5.0, 0) == float("inf")
    assert perplexity(1e6, 10) == float("inf")
    assert math.isfinite(perplexity(699.0 * 3, 3))
