"""Settings the CPU libraries read once, when they first build a kernel: set on import of `kernels`.

oneDNN (and ideep, PyTorch's layer over it) keep a compiled kernel for every product shape they
meet, 1,024 each by default, each with its own buffers. Training meets a new row count at nearly
every batch and decoding one per batch size and source width; rebuilding a kernel costs
microseconds, so a small cache keeps memory flat at no cost in speed. A value the user set wins.
"""
from __future__ import annotations

import os

PRIMITIVE_CACHE = "16"

os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", PRIMITIVE_CACHE)
os.environ.setdefault("LRU_CACHE_CAPACITY", PRIMITIVE_CACHE)
