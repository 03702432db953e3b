"""The C allocator's tuning: on glibc it takes, elsewhere it declines without failing."""

from __future__ import annotations

import ctypes
import platform
from typing import cast

from jibri_pod_controller.adapters.heap import Heap


def test_glibc_takes_the_mmap_threshold_and_trims() -> None:
    heap = Heap()
    on_glibc = platform.libc_ver()[0] == "glibc"
    assert heap.tunable is on_glibc
    assert heap.tune() is on_glibc
    # Free pages to give back: many blocks allocated, every other one freed.
    blocks = [bytes(3000) for _ in range(20_000)]
    del blocks[::2]
    assert isinstance(heap.trim(), bool)
    del blocks


class _NotGlibc:
    """A C library without mallopt or malloc_trim (musl's, say)."""


def test_another_allocator_is_left_alone() -> None:
    heap = Heap(libc=cast(ctypes.CDLL, _NotGlibc()))
    assert heap.tunable is False
    assert heap.tune() is False
    assert heap.trim() is False
