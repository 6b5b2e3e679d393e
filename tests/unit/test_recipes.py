"""Every recipe's config loads, names data that exists, and is named in its folder's README."""
from pathlib import Path

import pytest

from transduce.config import Config

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted(ROOT.glob("recipes/*/*.yaml"))
SHARED = ROOT.parent / "shared" / "data"


@pytest.mark.parametrize("path", CONFIGS, ids=[str(p.relative_to(ROOT / "recipes")) for p in CONFIGS])
def test_recipe_config_loads_and_names_shared_data(path):
    config = Config.load(path)
    for name in (config.data.train, config.data.dev):
        assert name.startswith("../shared/data/"), name
        if SHARED.is_dir():
            assert (ROOT / name).is_file(), name
    assert config.train.seed is not None and config.train.threads == 2


def test_every_recipe_has_a_readme_naming_its_configs():
    for folder in sorted({p.parent for p in CONFIGS}):
        readme = (folder / "README.md").read_text(encoding="utf-8")
        for config in folder.glob("*.yaml"):
            assert config.name in readme, f"{folder.name}/README.md does not mention {config.name}"
