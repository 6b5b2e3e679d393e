"""Freed heap memory goes back to the system between decoding batches."""
import ctypes

import pytest
import torch

from transduce.decoding.allocator import release_free_memory


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "malloc_trim")
    except OSError:
        return False


@pytest.mark.skipif(not _glibc(), reason="needs glibc's malloc_trim (Linux with glibc)")
def test_freed_heap_pages_are_given_back():
    """200 MiB of small tensors (below malloc's mmap threshold: they live in the heap) freed but
    for the last one, which keeps the heap from shrinking by itself: release hands the pages back."""
    blocks = [torch.ones(25_000) for _ in range(2_000)]  # 100 KB each, written
    last = blocks[-1]
    del blocks
    before = _rss_mib()
    assert release_free_memory()
    assert before - _rss_mib() > 100
    assert float(last.sum()) == 25_000
