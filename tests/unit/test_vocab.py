import json

import pytest

from transduce.constants import BOS, EOS, PAD, SPECIAL_TOKENS, UNK
from transduce.data.vocab import Vocab


def test_specials_come_first_in_order():
    vocab = Vocab(["a", "b"])
    assert vocab.tokens == [*SPECIAL_TOKENS, "a", "b"]
    assert [vocab.token_to_id(t) for t in SPECIAL_TOKENS] == [PAD, UNK, BOS, EOS]
    assert len(vocab) == 6


def test_given_specials_and_duplicates_are_not_repeated():
    assert Vocab([*SPECIAL_TOKENS, "a"]).tokens == [*SPECIAL_TOKENS, "a"]
    assert Vocab(["a", "<s>", "b", "a"]).tokens == [*SPECIAL_TOKENS, "a", "b"]


def test_build_orders_by_frequency_then_token():
    vocab = Vocab.build([["b", "c", "a"], ["c", "b", "d"], ["c"]])
    assert vocab.tokens[4:] == ["c", "b", "a", "d"]


def test_build_is_deterministic_whatever_the_input_order():
    lists = [["x", "y"], ["z", "y"], ["w", "x"], ["q"]]
    assert Vocab.build(lists) == Vocab.build(list(reversed(lists)))


def test_build_min_freq():
    vocab = Vocab.build([["a", "a", "b"], ["a", "c", "c"]], min_freq=2)
    assert vocab.tokens[4:] == ["a", "c"]


def test_build_max_size_counts_specials():
    lists = [["a"] * 3 + ["b"] * 2 + ["c"]]
    assert Vocab.build(lists, max_size=6).tokens[4:] == ["a", "b"]
    assert len(Vocab.build(lists, max_size=4)) == 4
    with pytest.raises(ValueError):
        Vocab.build(lists, max_size=3)
    with pytest.raises(ValueError):
        Vocab.build(lists, min_freq=0)


def test_build_ignores_specials_in_data():
    vocab = Vocab.build([["<pad>", "<pad>", "a"]], max_size=5)
    assert vocab.tokens == [*SPECIAL_TOKENS, "a"]


def test_encode_decode():
    vocab = Vocab(["hello", "world"])
    ids = vocab.encode(["hello", "there", "world"], add_bos=True, add_eos=True)
    assert ids == [BOS, 4, UNK, 5, EOS]
    assert vocab.decode(ids) == ["hello", "<unk>", "world"]
    assert vocab.decode(ids, strip_specials=False) == ["<s>", "hello", "<unk>", "world", "</s>"]
    assert vocab.encode(["world"]) == [5]


def test_decode_stops_at_first_eos_and_drops_padding():
    vocab = Vocab(["a", "b"])
    assert vocab.decode([BOS, 4, PAD, 5, EOS, 4, EOS, PAD]) == ["a", "b"]
    assert vocab.decode([4, 5, PAD, PAD]) == ["a", "b"]


def test_unknown_token_and_out_of_range_id():
    vocab = Vocab(["a"])
    assert vocab.token_to_id("zzz") == UNK
    assert vocab.id_to_token(4) == "a"
    with pytest.raises(IndexError):
        vocab.id_to_token(5)
    with pytest.raises(IndexError):
        vocab.id_to_token(-1)


def test_save_load_round_trip(tmp_path):
    vocab = Vocab.build([["猫", "é", "a b"], ["猫"]])
    path = tmp_path / "vocab.json"
    vocab.save(path)
    assert "猫" in path.read_text(encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8")) == {"tokens": vocab.tokens}
    assert Vocab.load(path) == vocab
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]


def test_load_rejects_files_that_would_shift_ids(tmp_path):
    path = tmp_path / "vocab.json"
    path.write_text(json.dumps({"tokens": ["a", "b"]}), encoding="utf-8")
    with pytest.raises(ValueError):
        Vocab.load(path)
    path.write_text(json.dumps(["a"]), encoding="utf-8")
    with pytest.raises(ValueError):
        Vocab.load(path)


def test_equality():
    assert Vocab(["a"]) == Vocab(["a"])
    assert Vocab(["a"]) != Vocab(["b"])
    assert Vocab(["a"]) != ["<pad>", "<unk>", "<s>", "</s>", "a"]
