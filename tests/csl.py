"""Pairs from the embedded CSL title data, for tests that train real models for a few steps."""
from __future__ import annotations

import gzip
from pathlib import Path

from transduce.assets import default_data_dir


def csl_pairs(count: int, max_source: int = 60) -> list[tuple[str, str]]:
    """The first `count` (abstract, title) pairs, abstracts cut to `max_source` characters."""
    with gzip.open(default_data_dir() / "train.tsv.gz", "rt", encoding="utf-8") as f:
        rows = [next(f).rstrip("\n").split("\t") for _ in range(count)]
    return [(source[:max_source], target) for source, target in rows]


def write_tsv(path: Path, pairs: list[tuple[str, str]]) -> Path:
    path.write_text("".join(f"{s}\t{t}\n" for s, t in pairs), encoding="utf-8")
    return path
