"""quickstart's choices: a deterministic, order-independent split; characters for Chinese and
Japanese, SentencePiece otherwise; model and budget from the corpus size; overrides win."""
import random

from transduce.data.readers import Pair as _Pair
from transduce.quickstart import cjk_share, plan, quickstart_config, shares, split_of, write_splits


def Pair(source, target):  # noqa: N802  (the reader's line number does not matter here)
    return _Pair(source, target, 1)


CHINESE = [Pair("基于深度学习的图像识别方法研究", "图像识别"), Pair("一种新的网络安全模型", "网络安全")] * 50
ENGLISH = [Pair("a small dog runs across the green field", "ein kleiner Hund läuft")] * 100


def test_the_split_depends_on_the_pair_not_its_position(tmp_path):
    pairs = [Pair(f"source {i}", f"target {i}") for i in range(2000)]
    sides = {p.source: split_of(p, 0.05, 0.05) for p in pairs}
    shuffled = pairs[:]
    random.Random(3).shuffle(shuffled)
    assert {p.source: split_of(p, 0.05, 0.05) for p in shuffled} == sides
    counts = {s: list(sides.values()).count(s) for s in ("train", "dev", "test")}
    assert 60 <= counts["dev"] <= 140 and 60 <= counts["test"] <= 140, counts
    written = write_splits(lambda: iter(pairs), tmp_path / "a", 0.05, 0.05)
    again = write_splits(lambda: iter(shuffled), tmp_path / "b", 0.05, 0.05)
    assert written == again == counts
    for name in ("train", "dev", "test"):
        assert sorted((tmp_path / "a" / f"{name}.tsv").read_text().splitlines()) == \
            sorted((tmp_path / "b" / f"{name}.tsv").read_text().splitlines())


def test_tabs_and_newlines_inside_texts_do_not_break_the_tsv(tmp_path):
    write_splits(lambda: iter([Pair("a\tb\nc", "d")] * 10), tmp_path, 0.0, 0.0)
    assert (tmp_path / "train.tsv").read_text() == "a b c\td\n" * 10


def test_shares_aim_at_the_asked_sizes_and_leave_most_data_to_train():
    assert shares(100_000, 500, 1000) == (0.005, 0.01)
    assert shares(1000, 500, 500) == (0.1, 0.1)


def test_chinese_gets_characters_and_english_subwords():
    assert cjk_share(p.source for p in CHINESE) > 0.9
    assert cjk_share(["日本語のテキスト"]) > 0.9
    assert cjk_share(p.source for p in ENGLISH) == 0
    chinese, english = plan(2000, CHINESE, 100, 100), plan(2000, ENGLISH, 100, 100)
    assert chinese.tokenizer == "char" and "Chinese/Japanese" in chinese.tokenizer_reason
    assert english.tokenizer == "spm" and "SentencePiece" in english.tokenizer_reason
    assert chinese.max_length == 16 and english.max_length == 16  # short targets: the floor


def test_the_model_and_budget_follow_the_corpus_size_unless_asked():
    small, large = plan(5_000, ENGLISH, 100, 100), plan(500_000, ENGLISH, 500, 500)
    assert small.arch == "lstm" and large.arch == "transformer"
    assert small.steps < large.steps <= 30_000
    asked = plan(5_000, CHINESE, 100, 100, tokenizer="word", arch="gru", steps=123)
    assert (asked.tokenizer, asked.arch, asked.steps) == ("word", "gru", 123)
    assert asked.tokenizer_reason == asked.arch_reason == asked.steps_reason == "as asked"


def test_the_config_stops_early_on_dev_bleu(tmp_path):
    config = quickstart_config(tmp_path, plan(5_000, CHINESE, 100, 100))
    assert config.train.eval_metric == "bleu" and config.train.patience > 0
    assert config.data.tokenizer == "char" and config.data.dev == str(tmp_path / "dev.tsv")
    assert config.model.arch == "lstm" and config.decode.max_length == 16
