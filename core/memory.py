"""Handing freed memory back to the operating system after a large transient.

Loading a log builds and drops far more than it keeps: pandas' ``str`` columns live in
Arrow's allocator, which keeps freed blocks for reuse, and small Python and NumPy objects in
glibc's malloc arenas, whose freed pages stay mapped. On the 4× tiled log the process held
790 MiB right after loading and coding while the frame was 83 MiB; releasing both brought it
to 234 MiB (docs/results.md, issue #19). Nothing is freed that is still in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

import pyarrow as pa

__all__ = ["release_free_memory"]


def release_free_memory() -> None:
    """Return freed memory of Arrow's pool and of glibc's heap to the OS (a no-op for the
    heap where the C library has no ``malloc_trim``, e.g. macOS or musl)."""
    pa.default_memory_pool().release_unused()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)
