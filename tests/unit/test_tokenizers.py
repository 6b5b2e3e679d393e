import random

import pytest

from transduce.constants import SPECIAL_TOKENS
from transduce.data.tokenizers import (
    CharTokenizer,
    CodeTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    WordTokenizer,
    load_tokenizer,
    train_tokenizer,
)

WORDS = ["the", "cat", "dog", "sat", "on", "mat", "a", "big", "red", "ran", "fast", "home",
         "little", "bird", "sings", "over", "tree"]


def corpus(n=200, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))) for _ in range(n)]


@pytest.fixture(scope="module")
def spm_unigram():
    return SentencePieceTokenizer.train(corpus(), vocab_size=60, model_type="unigram")


def test_char_round_trip_keeps_spaces():
    tok = CharTokenizer()
    text = "我爱 北京  天安门 ."
    tokens = tok.tokenize(text)
    assert tokens[:3] == ["我", "爱", " "]
    assert tokens.count(" ") == 4
    assert tok.detokenize(tokens) == text
    assert tok.kind == "char"


def test_word_tokenizer():
    tok = WordTokenizer()
    assert tok.tokenize("  the  cat\tsat\n") == ["the", "cat", "sat"]
    assert tok.detokenize(["the", "cat"]) == "the cat"
    assert tok.kind == "word"


def test_code_tokenizer_splits_code_and_marks_spaces():
    tok = CodeTokenizer()
    assert tok.kind == "code"
    assert tok.tokenize("df.sort_values('a', ascending=False)") == [
        "df", ".", "sort_values", "(", "'", "a", "'", ",", "\u2581", "ascending", "=", "False", ")"]
    assert tok.tokenize("sort dict `d` by value") == [
        "sort", "\u2581", "dict", "\u2581", "`", "d", "`", "\u2581", "by", "\u2581", "value"]
    assert tok.tokenize("") == [] and tok.tokenize("   ") == []


@pytest.mark.parametrize("text", [
    "df.sort_values('a', ascending=False)", "x = [i ** 2 for i in range(10)]", "print(\"héllo, 世界\")",
    "re.findall('\\\\d+', s)", "if a:  b = {1: 2}",
])
def test_code_tokenizer_round_trip_reads_whitespace_runs_as_one_space(text):
    tok = CodeTokenizer()
    assert tok.detokenize(tok.tokenize(text)) == " ".join(text.split())
    assert tok.detokenize(tok.tokenize(f"  {text}\t")) == " ".join(text.split())


def test_code_tokenizer_shares_identifiers_between_request_and_code():
    tok = CodeTokenizer()
    request = set(tok.tokenize("get the keys of dictionary `my_dict` sorted by 'count'"))
    code = set(tok.tokenize("sorted(my_dict, key=lambda k: my_dict[k]['count'])"))
    assert {"my_dict", "count", "'"} <= request & code


def test_all_kinds_follow_the_protocol(spm_unigram):
    for tok in (CharTokenizer(), WordTokenizer(), CodeTokenizer(), spm_unigram):
        assert isinstance(tok, Tokenizer)


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_spm_round_trip(model_type, spm_unigram):
    texts = corpus()
    tok = spm_unigram if model_type == "unigram" else SentencePieceTokenizer.train(
        texts, vocab_size=60, model_type="bpe")
    assert tok.kind == "spm"
    for text in texts[:50] + ["the little bird sings over the red tree"]:
        pieces = tok.tokenize(text)
        assert tok.detokenize(pieces) == text
        assert not set(pieces) & set(SPECIAL_TOKENS)
    assert len(tok.tokenize("the cat sat")) < len("the cat sat")


def test_spm_training_is_deterministic(spm_unigram):
    again = SentencePieceTokenizer.train(corpus(), vocab_size=60, model_type="unigram")
    assert again.model_proto == spm_unigram.model_proto


def test_spm_save_load(tmp_path, spm_unigram):
    spm_unigram.save(tmp_path, "src_tokenizer")
    assert (tmp_path / "src_tokenizer.model").read_bytes() == spm_unigram.model_proto
    loaded = load_tokenizer(tmp_path, "src_tokenizer", "spm")
    text = "a big dog ran home"
    assert loaded.tokenize(text) == spm_unigram.tokenize(text)
    assert loaded.detokenize(loaded.tokenize(text)) == text


def test_char_word_and_code_save_nothing(tmp_path):
    for kind in ("char", "word", "code"):
        tok = train_tokenizer(kind, ["ignored"])
        tok.save(tmp_path, "p")
        assert type(load_tokenizer(tmp_path, "p", kind)) is type(tok)
    assert list(tmp_path.iterdir()) == []


def test_train_tokenizer_spm():
    tok = train_tokenizer("spm", corpus(100, seed=1), vocab_size=50, model_type="bpe")
    assert isinstance(tok, SentencePieceTokenizer)
    assert tok.detokenize(tok.tokenize("the cat")) == "the cat"


def test_unknown_kind_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="char, word, code, spm"):
        train_tokenizer("bytes", [])
    with pytest.raises(ValueError, match="char, word, code, spm"):
        load_tokenizer(tmp_path, "p", "bytes")


def test_spm_bad_arguments():
    with pytest.raises(ValueError, match="model_type"):
        SentencePieceTokenizer.train(corpus(10), vocab_size=60, model_type="word")
    with pytest.raises(ValueError, match="SentencePiece training failed"):
        SentencePieceTokenizer.train([], vocab_size=60)
