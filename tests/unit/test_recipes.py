"""Every recipe's config loads and names data that exists; the recipes' helper scripts work."""
import gzip
import importlib.util
import json
import random
import sys
from collections import Counter
from pathlib import Path

import pytest

from transduce.config import Config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(ROOT.glob("recipes/*/*.yaml"))
SHARED = ROOT.parent / "shared" / "data"


def _script(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "recipes")) for p in CONFIGS])
def test_recipe_config_loads_and_names_shared_data(path):
    config = Config.load(path)
    for name in (config.data.train, config.data.dev):
        assert name.startswith(("../shared/data/", "runs/")), name
        if name.startswith("../shared/data/") and SHARED.is_dir():
            assert (ROOT / name).is_file(), name
        if name.startswith("runs/"):  # made by a script of the recipe: the config says which
            assert f"--out {Path(name).parent}" in path.read_text(encoding="utf-8"), name
    assert config.train.seed is not None and config.train.threads == 2
    if config.train.init_from:  # the start model is trained by a command of the recipe's README
        readme = (path.parent / "README.md").read_text(encoding="utf-8")
        assert f"--out {config.train.init_from}" in readme, config.train.init_from


def test_every_recipe_has_a_readme_naming_its_configs():
    for folder in sorted({p.parent for p in CONFIGS}):
        readme = (folder / "README.md").read_text(encoding="utf-8")
        for config in folder.glob("*.yaml"):
            assert config.name in readme, f"{folder.name}/README.md does not mention {config.name}"


def _write_conversation(data: Path, split: str, messages: list[str]) -> None:
    pairs, lines = [], []
    for turn in range(1, len(messages)):
        pairs.append(f"{messages[turn - 1]}\t{messages[turn]}\n")
        lines.append(json.dumps({"context": messages[max(0, turn - 5):turn], "response": messages[turn]},
                                ensure_ascii=False) + "\n")
    (data / f"{split}.tsv").write_text("".join(pairs), encoding="utf-8")
    (data / f"{split}.context.jsonl").write_text("".join(lines), encoding="utf-8")


def test_context_pairs_put_the_newest_message_first(tmp_path):
    context_pairs = _script("recipes/kdconv-chat/context_pairs.py")
    _write_conversation(tmp_path, "train", ["你好", "看过电影吗？", "看过。", "哪一部？"])
    assert context_pairs.write_split(tmp_path, "train", tmp_path / "out", turns=2) == 3
    rows = (tmp_path / "out" / "train.tsv").read_text(encoding="utf-8").splitlines()
    assert rows == ["你好\t看过电影吗？", "看过电影吗？ ∥ 你好\t看过。", "看过。 ∥ 看过电影吗？\t哪一部？"]


def test_context_pairs_refuse_files_that_do_not_match(tmp_path):
    context_pairs = _script("recipes/kdconv-chat/context_pairs.py")
    _write_conversation(tmp_path, "dev", ["a", "b", "c"])
    (tmp_path / "dev.tsv").write_text("a\tb\nx\tc\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"dev.context.jsonl:2: does not match line 2"):
        context_pairs.write_split(tmp_path, "dev", tmp_path / "out", turns=3)


def test_title_fragments_are_the_title_cut_shuffled_and_thinned():
    make_pairs = _script("recipes/csl-title/make_pairs.py")
    rng = random.Random(5)
    title = "基于深度学习的中文科技文献标题生成研究"
    noisy = [make_pairs.shuffled_fragments(title, rng) for _ in range(200)]
    assert all(Counter(n) <= Counter(title) for n in noisy)  # only the title's characters, none added
    assert sum(n != title for n in noisy) > 190
    assert 0.75 < sum(map(len, noisy)) / (200 * len(title)) < 0.95  # about 15% dropped
    assert make_pairs.shuffled_fragments("ab", random.Random(1)) in {"ab", "ba", "a", "b"}


def test_csl_pairs_keep_validation_and_test_apart(tmp_path, monkeypatch):
    make_pairs = _script("recipes/csl-title/make_pairs.py")
    csl, tang = tmp_path / "csl", tmp_path / "tang"
    (csl / "orig").mkdir(parents=True)
    tang.mkdir()
    (csl / "train.tsv").write_text("".join(f"训练摘要{i}\t训练标题{i}\n" for i in range(5)), encoding="utf-8")
    (csl / "dev.tsv").write_text("".join(f"开发摘要{i}\t开发标题{i}\n" for i in range(310)), encoding="utf-8")
    (tang / "train.tsv").write_text("床前明月光\t静夜思\n", encoding="utf-8")
    with gzip.open(csl / "orig" / "cls_ctg_train.tsv.gz", "wt", encoding="utf-8") as handle:
        handle.write("to category\t太平天国私人便章考\t历史学\nto category\t短\t历史学\n")
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["make_pairs.py", "--csl", str(csl), "--tang", str(tang), "--out", str(out)])
    make_pairs.main()
    validation = (out / "validation.tsv").read_text(encoding="utf-8").splitlines()
    in_domain = (out / "in-domain-train.tsv").read_text(encoding="utf-8").splitlines()
    assert validation == [f"开发摘要{i}\t开发标题{i}" for i in range(300)]
    assert in_domain == [f"训练摘要{i}\t训练标题{i}" for i in range(5)] + [f"开发摘要{i}\t开发标题{i}" for i in range(300, 310)]
    pretrain = (out / "pretrain.tsv").read_text(encoding="utf-8").splitlines()
    assert len(pretrain) == 1 + 5 + 1  # the poem, the training pairs, one title long enough to cut
    assert "床前明月光\t静夜思" in pretrain and not any("开发" in row for row in pretrain)
    assert [row.split("\t")[1] for row in pretrain].count("太平天国私人便章考") == 1


def test_csl_back_translation_pairs_real_titles_with_written_abstracts(tmp_path, monkeypatch):
    make_pairs = _script("recipes/csl-title/make_pairs.py")
    csl, tang, out = tmp_path / "csl", tmp_path / "tang", tmp_path / "out"
    (csl / "orig").mkdir(parents=True)
    tang.mkdir()
    (csl / "train.tsv").write_text("训练摘要0\t训练标题0\n训练摘要1\t训练标题1\n", encoding="utf-8")
    (csl / "dev.tsv").write_text("".join(f"开发摘要{i}\t开发标题{i}\n" for i in range(301)), encoding="utf-8")
    (tang / "train.tsv").write_text("床前明月光\t静夜思\n", encoding="utf-8")
    with gzip.open(csl / "orig" / "cls_ctg_train.tsv.gz", "wt", encoding="utf-8") as handle:
        handle.write("to category\t太平天国私人便章考\t历史学\nto category\t短\t历史学\nto category\t眼动研究方法\t教育学\n")
    argv = ["make_pairs.py", "--csl", str(csl), "--tang", str(tang), "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    make_pairs.main()
    assert (out / "reverse-train.tsv").read_text(encoding="utf-8").splitlines() == [
        "训练标题0\t训练摘要0", "训练标题1\t训练摘要1", "开发标题300\t开发摘要300"]
    assert (out / "reverse-validation.tsv").read_text(encoding="utf-8").splitlines()[0] == "开发标题0\t开发摘要0"
    assert (out / "official-titles.txt").read_text(encoding="utf-8").splitlines() == ["太平天国私人便章考", "眼动研究方法"]

    written = tmp_path / "written.txt"
    written.write_text("本文考证太平天国私人便章\t一枚\n研究眼动\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", [*argv, "--back-translations", str(written)])
    make_pairs.main()
    rows = (out / "back-translated-train.tsv").read_text(encoding="utf-8").splitlines()
    assert Counter(rows) == Counter({"训练摘要0\t训练标题0": 3, "训练摘要1\t训练标题1": 3, "开发摘要300\t开发标题300": 3,
                                     "本文考证太平天国私人便章 一枚\t太平天国私人便章考": 1, "研究眼动\t眼动研究方法": 1})
    assert not any("开发标题0" in row for row in rows)  # validation stays out

    written.write_text("只有一行\n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"written.txt: 1 lines, but .*official-titles.txt has 2 titles"):
        make_pairs.main()
    written.write_text("一\n \n", encoding="utf-8")
    with pytest.raises(SystemExit, match=r"written.txt:2: empty abstract"):
        make_pairs.main()


def _write_conversations(data: Path, split: str, conversations: dict[str, list[str]]) -> None:
    pairs, lines = [], []
    for name, messages in conversations.items():
        for turn in range(1, len(messages)):
            pairs.append(f"{messages[turn - 1]}\t{messages[turn]}\n")
            lines.append(json.dumps({"conversation": name, "context": messages[max(0, turn - 5):turn],
                                     "response": messages[turn]}, ensure_ascii=False) + "\n")
    (data / f"{split}.tsv").write_text("".join(pairs), encoding="utf-8")
    (data / f"{split}.context.jsonl").write_text("".join(lines), encoding="utf-8")


def test_retrieved_pairs_add_the_nearest_reply_from_another_conversation(tmp_path, monkeypatch):
    retrieved_pairs = _script("recipes/kdconv-chat/retrieved_pairs.py")
    data, out = tmp_path / "data", tmp_path / "out"
    data.mkdir()
    _write_conversations(data, "train", {"film/0": ["看过泰坦尼克号吗？", "看过，很感人。"],
                                         "film/1": ["泰坦尼克号是哪年上映的？", "1997年上映的。"],
                                         "music/0": ["喜欢听周杰伦的歌吗？", "喜欢，他的歌很好听。"]})
    _write_conversations(data, "dev", {"film/9": ["周杰伦的歌好听吗？", "好听。"]})
    _write_conversations(data, "test", {"film/8": ["泰坦尼克号上映了吗？", "上映了。"]})
    monkeypatch.setattr(sys, "argv", ["retrieved_pairs.py", "--data", str(data), "--out", str(out)])
    retrieved_pairs.main()
    train = (out / "train.tsv").read_text(encoding="utf-8").splitlines()
    # each training message finds its neighbour in another conversation, never its own reply
    assert train == ["看过泰坦尼克号吗？ ∥ 1997年上映的。\t看过，很感人。",
                     "泰坦尼克号是哪年上映的？ ∥ 看过，很感人。\t1997年上映的。",
                     "喜欢听周杰伦的歌吗？ ∥ " + train[2].split(" ∥ ")[1].split("\t")[0] + "\t喜欢，他的歌很好听。"]
    assert "喜欢，他的歌很好听。" not in train[2].split("\t")[0]
    assert (out / "dev.tsv").read_text(encoding="utf-8") == "周杰伦的歌好听吗？ ∥ 喜欢，他的歌很好听。\t好听。\n"
    test = (out / "test.tsv").read_text(encoding="utf-8").splitlines()
    assert test[0].split("\t")[1] == "上映了。" and test[0].split(" ∥ ")[1].split("\t")[0] in {"看过，很感人。", "1997年上映的。"}

    (data / "train.tsv").write_text("其他\t消息\n" * 3, encoding="utf-8")
    with pytest.raises(SystemExit, match=r"train.context.jsonl:1: does not match line 1 of train.tsv"):
        retrieved_pairs.main()
