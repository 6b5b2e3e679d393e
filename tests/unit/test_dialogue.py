"""Reply scores: distinct-n by hand, BLEU-1/2 through sacreBLEU, a dull model caught by distinct."""
import pytest

from transduce.evaluation.dialogue import dialogue_scores, distinct
from transduce.evaluation.metrics import bleu


def test_distinct_by_hand():
    # characters: 好的 好的 你好 -> unigrams 好 的 好 的 你 好 (3 distinct of 6); bigrams 好的 好的 你好 (2 of 3)
    assert distinct(["好的", "好的", "你好"], 1) == 50.0
    assert distinct(["好的", "好的", "你好"], 2) == pytest.approx(66.67)
    assert distinct(["the cat", "the dog"], 1) == 75.0  # words: the cat the dog
    assert distinct(["a"], 2) == 0.0  # no bigram at all


def test_bleu_orders_1_and_2_are_sacrebleus():
    hyps, refs = ["我 喜欢 这部 电影", "好的"], ["我 也 喜欢 这部 电影", "好的 谢谢"]
    one, two, four = (bleu(hyps, refs, max_order=k) for k in (1, 2, 4))
    assert one["score"] >= two["score"] >= four["score"] > 0
    from sacrebleu.metrics import BLEU

    assert one["score"] == pytest.approx(BLEU(tokenize="zh", max_ngram_order=1).corpus_score(hyps, [refs]).score)


def test_a_dull_model_has_low_distinct_and_a_varied_one_high():
    refs = ["我很喜欢这首歌", "这部电影是哪年上映的", "故宫在北京"]
    dull = dialogue_scores(["好的好的"] * 3, refs)
    varied = dialogue_scores(["我也喜欢这首歌", "是二零一零年上映的", "在北京市中心"], refs)
    assert dull["distinct1"] < 20 < varied["distinct1"]
    assert dull["distinct2"] < varied["distinct2"]
    assert varied["bleu1"] > dull["bleu1"] and varied["bleu2"] > 0
