import gzip
import hashlib
import re

import pytest

from transduce.assets import default_data_dir

COUNTS = {"train": 1798, "dev": 100, "test": 100}
MAX_BYTES = 2 * 1024 * 1024


def test_the_folder_holds_data_license_and_source():
    folder = default_data_dir()
    assert folder.is_dir()
    for name in [*(f"{split}.tsv.gz" for split in COUNTS), "LICENSE", "SOURCE.md"]:
        assert (folder / name).is_file(), name
    assert "Apache License" in (folder / "LICENSE").read_text(encoding="utf-8")


@pytest.mark.parametrize("split", list(COUNTS))
def test_each_split_is_utf8_pairs_with_one_tab(split):
    with gzip.open(default_data_dir() / f"{split}.tsv.gz", "rt", encoding="utf-8", newline="") as f:
        lines = f.read().split("\n")
    assert lines[-1] == ""  # ends with a newline
    lines = lines[:-1]
    assert len(lines) == COUNTS[split]
    for number, line in enumerate(lines, 1):
        assert line.count("\t") == 1, f"{split}:{number}"
        source, target = line.split("\t")
        assert source.strip() and target.strip(), f"{split}:{number}"
        assert "\r" not in line


@pytest.mark.parametrize("split", list(COUNTS))
def test_source_md_records_each_files_sha256(split):
    path = default_data_dir() / f"{split}.tsv.gz"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in (default_data_dir() / "SOURCE.md").read_text(encoding="utf-8")


def test_gzip_headers_carry_no_timestamp():
    for split in COUNTS:
        header = (default_data_dir() / f"{split}.tsv.gz").read_bytes()[:10]
        assert header[4:8] == b"\0\0\0\0", split


def test_the_folder_is_under_2_mb():
    total = sum(p.stat().st_size for p in default_data_dir().rglob("*") if p.is_file())
    assert total < MAX_BYTES


def test_the_data_is_chinese():
    with gzip.open(default_data_dir() / "dev.tsv.gz", "rt", encoding="utf-8") as f:
        text = f.read()
    assert len(re.findall(r"[\u4e00-\u9fff]", text)) > 0.5 * len(text)
