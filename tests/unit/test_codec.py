"""TextCodec: tokenizers and vocabularies for both sides, built from pairs, saved and loaded together."""
import random

import pytest

from transduce.config import DataConfig
from transduce.constants import BOS, EOS, PAD, SPECIAL_TOKENS, UNK
from transduce.data.codec import TextCodec
from transduce.data.readers import Pair

ZH_PAIRS = [
    Pair("基于 深度学习的图像分割方法", "图像分割", 1),
    Pair("一种新的网络 路由算法", "路由算法", 2),
    Pair("面向云计算的任务调度", "任务 调度", 3),
]


def _reader(pairs):
    return lambda: iter(pairs)


def test_char_codec_on_chinese_keeps_spaces():
    codec = TextCodec.build(DataConfig(tokenizer="char"), _reader(ZH_PAIRS))
    assert codec.src_vocab.tokens[:4] == list(SPECIAL_TOKENS)
    assert " " in codec.src_vocab.tokens and " " in codec.tgt_vocab.tokens
    text = ZH_PAIRS[0].source
    ids = codec.encode_source(text)
    assert len(ids) == len(text)  # one id per character, the space included
    assert UNK not in ids
    assert codec.src_vocab.decode(ids) == list(text)
    tgt = ZH_PAIRS[2].target
    assert codec.decode_target(codec.encode_target(tgt)) == tgt
    assert codec.source_tokens(text) == list(text)
    # a character never seen is UNK, never an error
    assert codec.encode_source("猫") == [UNK]


def test_separate_vocabularies():
    codec = TextCodec.build(DataConfig(tokenizer="char", shared_vocab=False), _reader(ZH_PAIRS))
    assert codec.src_vocab is not codec.tgt_vocab
    src_chars = {c for p in ZH_PAIRS for c in p.source}
    tgt_chars = {c for p in ZH_PAIRS for c in p.target}
    assert set(codec.src_vocab.tokens[4:]) == src_chars
    assert set(codec.tgt_vocab.tokens[4:]) == tgt_chars
    assert len(codec.tgt_vocab) < len(codec.src_vocab)
    # "深" occurs only in a source: unknown on the target side
    assert codec.encode_target("深") == [UNK]


def test_shared_vocabulary():
    codec = TextCodec.build(DataConfig(tokenizer="char", shared_vocab=True), _reader(ZH_PAIRS))
    assert codec.src_vocab is codec.tgt_vocab
    chars = {c for p in ZH_PAIRS for c in p.source + p.target}
    assert set(codec.src_vocab.tokens[4:]) == chars
    assert codec.encode_target("深") == codec.encode_source("深") != [UNK]


def test_examples_are_numbered_in_reading_order():
    codec = TextCodec.build(DataConfig(tokenizer="char"), _reader(ZH_PAIRS))
    examples = list(codec.examples(ZH_PAIRS))
    assert [e.index for e in examples] == [0, 1, 2]
    for ex, pair in zip(examples, ZH_PAIRS):
        assert ex.src == codec.encode_source(pair.source)
        assert ex.tgt == codec.encode_target(pair.target)
        # no specials inside examples: collate adds BOS/EOS
        assert not {PAD, BOS, EOS} & set(ex.src + ex.tgt)


def _generated_pairs(n=200, seed=0):
    rng = random.Random(seed)
    words = ["model", "attention", "network", "sequence", "decoder", "encoder", "token", "beam",
             "search", "training", "learning", "translation", "language", "neural", "vector", "score"]
    pairs = []
    for i in range(n):
        src = " ".join(rng.choice(words) for _ in range(rng.randint(3, 10)))
        tgt = " ".join(reversed(src.split()))[: 40].strip()
        pairs.append(Pair(src, tgt, i + 1))
    return pairs


@pytest.fixture(scope="module")
def spm_codec():
    cfg = DataConfig(tokenizer="spm", joint_tokenizer=True, spm_vocab_size=60)
    return TextCodec.build(cfg, _reader(_generated_pairs()))


def test_spm_joint(spm_codec):
    codec = spm_codec
    assert codec.src_tok is codec.tgt_tok  # one model for both sides
    assert codec.src_tok.kind == "spm"
    text = "attention model decoder"
    pieces = codec.source_tokens(text)
    assert 1 <= len(pieces) < len(text)  # sub-words, not characters
    ids = codec.encode_source(text)
    assert UNK not in ids
    assert codec.decode_target(codec.encode_target(text)) == text
    assert len(codec.src_vocab) <= 60 + 4


def test_save_load_round_trip_char(tmp_path):
    cfg = DataConfig(tokenizer="char", shared_vocab=False)
    codec = TextCodec.build(cfg, _reader(ZH_PAIRS))
    codec.save(tmp_path)
    assert (tmp_path / "src_vocab.json").is_file() and (tmp_path / "tgt_vocab.json").is_file()
    loaded = TextCodec.load(cfg, tmp_path)
    assert loaded.src_vocab == codec.src_vocab and loaded.tgt_vocab == codec.tgt_vocab
    for text in [p.source for p in ZH_PAIRS] + [p.target for p in ZH_PAIRS] + ["未知 字"]:
        assert loaded.encode_source(text) == codec.encode_source(text)
        assert loaded.encode_target(text) == codec.encode_target(text)


def test_save_load_round_trip_spm(spm_codec, tmp_path):
    spm_codec.save(tmp_path)
    assert (tmp_path / "src_tokenizer.model").is_file() and (tmp_path / "tgt_tokenizer.model").is_file()
    loaded = TextCodec.load(spm_codec.cfg, tmp_path)
    for pair in _generated_pairs(30, seed=1):
        assert loaded.encode_source(pair.source) == spm_codec.encode_source(pair.source)
        assert loaded.encode_target(pair.target) == spm_codec.encode_target(pair.target)
        ids = spm_codec.encode_target(pair.target)
        assert loaded.decode_target(ids) == spm_codec.decode_target(ids)


def test_truncation_at_max_lengths():
    cfg = DataConfig(tokenizer="char", max_source_length=5, max_target_length=3)
    codec = TextCodec.build(cfg, _reader(ZH_PAIRS))
    src = ZH_PAIRS[0].source
    assert codec.encode_source(src) == codec.src_vocab.encode(list(src))[:5]
    assert len(codec.source_tokens(src)) == 5
    assert len(codec.encode_target(ZH_PAIRS[1].target)) == 3
    assert len(codec.encode_source("图像")) == 2  # shorter texts untouched
    ex = next(codec.examples(ZH_PAIRS))
    assert len(ex.src) == 5 and len(ex.tgt) == 3


def test_copy_example_gives_extended_ids_for_words_outside_the_target_vocabulary():
    codec = TextCodec.build(DataConfig(tokenizer="word"), _reader([Pair("a b c", "b c", 1), Pair("c d", "d", 2)]))
    V = len(codec.tgt_vocab)
    ex = codec.example("a zz b yy zz", "yy b qq", index=7, copy=True)
    assert ex.src == [codec.src_vocab.token_to_id(t) for t in "a zz b yy zz".split()]
    b = codec.tgt_vocab.token_to_id("b")
    assert "a" not in codec.tgt_vocab  # a source-only word: copyable through an extended id
    assert ex.oov == ["a", "zz", "yy"]
    assert ex.src_ext == [V, V + 1, b, V + 2, V + 1]
    assert ex.tgt == [UNK, b, UNK]
    assert ex.tgt_ext == [V + 2, b, UNK]  # "qq" is in neither: it stays unknown
    assert codec.target_tokens(ex.tgt_ext, ex.oov) == ["yy", "b", SPECIAL_TOKENS[UNK]]
    plain = codec.example("a zz", "b", copy=False)
    assert plain.src_ext is None and plain.oov is None


def test_source_to_target_ids():
    codec = TextCodec.build(DataConfig(tokenizer="word"), _reader([Pair("a b", "b c", 1)]))
    mapping = codec.source_to_target_ids().tolist()
    assert mapping[PAD] == -1 and mapping[UNK] == UNK and mapping[EOS] == EOS
    assert mapping[codec.src_vocab.token_to_id("b")] == codec.tgt_vocab.token_to_id("b")
    assert mapping[codec.src_vocab.token_to_id("a")] == -1
