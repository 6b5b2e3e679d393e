"""Memory that finished decoding batches freed, handed back to the system.

glibc's malloc keeps the memory of freed tensors below its mmap threshold (which it raises up to
32 MiB as large blocks come and go) in its heap, in pieces that the next batch's tensors, of other
sizes, often do not fit: beam search over a test set then holds ~100 MiB more than it ever uses
at once. `malloc_trim` returns the free pages; the next batch touches again only what it needs.
Where the C library has no `malloc_trim` (macOS, musl), this does nothing.
"""
from __future__ import annotations

import ctypes


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


_MALLOC_TRIM = _malloc_trim()


def release_free_memory() -> bool:
    """Give the free pages of the heap back to the system; False where that cannot be done."""
    if _MALLOC_TRIM is None:
        return False
    _MALLOC_TRIM(0)
    return True
