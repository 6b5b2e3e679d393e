"""Data shipped inside the package, so the demo runs without a download."""
from __future__ import annotations

from pathlib import Path


def default_data_dir() -> Path:
    """The embedded CSL title-generation pairs (abstract -> title): train/dev/test .tsv.gz."""
    return Path(__file__).resolve().parent / "csl-title"
