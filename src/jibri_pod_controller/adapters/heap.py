"""glibc's allocator, told to give back the memory a burst leaves behind.

After a storm of webhooks (every Jibri of a node starting at once, the API server slow) the
C heap holds megabytes of free chunks between live ones: glibc returns memory to the system
only from the top of the heap, and by default serves even 256 KiB blocks (each TLS
connection's read buffer) from the heap once one such block has been freed. Two measured
settings fix most of that (figures in docs/performance.md):

- ``M_MMAP_THRESHOLD`` pinned at its default, 128 KiB: glibc otherwise raises it to the size
  of each large block freed, so later ones come from the heap and leave holes there. Pinned,
  a TLS buffer or a large API answer is its own mapping, returned whole when freed.
- ``malloc_trim(0)`` now and then (`trim`): it hands the free pages inside the heap back to
  the kernel (a millisecond or two for this process's heap).

Anything but glibc (musl, say) has neither function; then this does nothing and says so.
Python's own small-object allocator (objects of up to 512 bytes) keeps its arenas whatever
glibc does; it is not tuned here.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("jibri_pod_controller.heap")

M_MMAP_THRESHOLD = -3
"""mallopt(3)'s parameter number; setting it also stops glibc's dynamic adjustment."""
MMAP_THRESHOLD_BYTES = 128 * 1024
TRIM_PERIOD = 10.0
"""Seconds between two trims: a trim takes 1 to 4 ms of one core here, so about 0.03%."""


class Heap:
    """The process's C allocator, when it is glibc's."""

    def __init__(self, libc: ctypes.CDLL | None = None) -> None:
        self._libc: ctypes.CDLL | None = None
        try:
            found = libc if libc is not None else ctypes.CDLL(None)
            self._trim = found.malloc_trim
            self._mallopt = found.mallopt
        except (OSError, AttributeError):
            return
        self._libc = found
        self._trim.argtypes = [ctypes.c_size_t]
        self._trim.restype = ctypes.c_int
        self._mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        self._mallopt.restype = ctypes.c_int

    @property
    def tunable(self) -> bool:
        return self._libc is not None

    def tune(self) -> bool:
        """Pin the mmap threshold; False when the allocator is not glibc's or refused."""
        if self._libc is None:
            log.info("not glibc's allocator: memory is not tuned")
            return False
        return bool(self._mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))

    def trim(self) -> bool:
        """Return the free pages of the C heap to the kernel; True if any were returned."""
        if self._libc is None:
            return False
        return bool(self._trim(0))
