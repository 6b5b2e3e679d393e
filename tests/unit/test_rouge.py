import pytest

from transduce.evaluation.rouge import CharacterTokenizer, rouge


def test_chinese_scores_by_hand():
    # hyp 基于深度学习 / ref 深度学习方法: 4 of 6 characters shared, 3 of 5 bigrams, LCS 深度学习 (4)
    scores = rouge(["基于深度学习"], ["深度学习方法"])
    assert scores["tokenizer"] == "char"
    assert scores["rouge1"] == pytest.approx(66.67, abs=0.01)
    assert scores["rouge2"] == pytest.approx(60.0, abs=0.01)
    assert scores["rougeL"] == pytest.approx(66.67, abs=0.01)


def test_the_default_tokenizer_would_drop_chinese():
    assert rouge(["基于深度学习"], ["深度学习方法"], tokenizer="default")["rouge1"] == 0.0


def test_english_uses_words_and_averages_sentences():
    scores = rouge(["the cat sat", "a dog"], ["the cat sat", "the bird"])
    assert scores["tokenizer"] == "default"
    assert scores["rouge1"] == pytest.approx(50.0)  # 100 for the first pair, 0 for the second


def test_character_tokenizer_and_errors():
    assert CharacterTokenizer().tokenize("深度 学习 AI") == ["深", "度", "学", "习", "A", "I"]
    with pytest.raises(ValueError):
        rouge(["a"], [])
    with pytest.raises(ValueError):
        rouge(["a"], ["a"], tokenizer="spaces")
