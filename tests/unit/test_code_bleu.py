import math

import pytest

from transduce.evaluation.code_bleu import code_bleu, code_bleu_tokens


def test_tokens_split_symbols_camel_case_and_read_quotes_alike():
    assert code_bleu_tokens("df.sortValues(\"a\", x=1)") == [
        "df", ".", "sort", "Values", "(", "`", "a", "`", ",", "x", "=", "1", ")"]
    assert code_bleu_tokens("print('a')") == code_bleu_tokens('print("a")')
    assert code_bleu_tokens("my_var  =\t2") == ["my_var", "=", "2"]


def test_hand_computed_score():
    # x = foo ( a )  against  x = foo ( b ): n-gram precisions 5/6, 3/5, 2/4, 1/3, equal lengths
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert code_bleu(["x = foo(a)"], ["x=foo(b)"])["score"] == pytest.approx(expected, abs=1e-9)


def test_brevity_penalty_and_no_smoothing():
    # every n-gram of the 4-token output is right, the reference has 6 tokens
    assert code_bleu(["a b c d"], ["a b c d e f"])["score"] == pytest.approx(100 * math.exp(1 - 6 / 4), abs=1e-9)
    # no 4-gram in common: 0, as CoNaLa's unsmoothed BLEU gives
    assert code_bleu(["x = 1"], ["x = 1 + 2"])["score"] == 0.0


def test_whitespace_and_quote_style_do_not_count():
    result = code_bleu(["x=foo( 'a' )"], ['x = foo("a")'])
    assert result["score"] == pytest.approx(100.0)
    assert result["signature"].startswith("code-tokens|") and "tok:none" in result["signature"]


def test_corpus_counts_and_errors():
    assert code_bleu([], [])["score"] == 0.0
    with pytest.raises(ValueError, match="1 hypotheses but 2 references"):
        code_bleu(["x"], ["y", "z"])
