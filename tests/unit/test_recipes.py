"""Every recipe's config loads and names data that exists; the recipes' helper scripts work."""
import importlib.util
import json
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
    assert config.train.seed is not None and config.train.threads == 2


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
