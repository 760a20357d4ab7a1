"""Keep freed memory for reuse (glibc only): a measured speed-up, not a correctness matter.

Every NumPy op allocates a fresh result array. glibc serves big blocks (over 128 KiB) with mmap and hands them
back to the OS on free, and trims the heap top as soon as it is free; the next array of the same size then
page-faults on each of its 4 KiB pages, which the kernel zeroes first. A training step makes hundreds of such
arrays, and on this model that costs about as much as the matmuls. Raising the mmap and trim thresholds lets
freed blocks be reused instead (see scripts/bench.py; the env vars MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_ do the same from outside). Elsewhere (macOS, musl, Windows) this does nothing.
"""
import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # mallopt parameter numbers from glibc's <malloc.h>


def keep_freed_memory(mmap_threshold=32 << 20, trim_threshold=1 << 30):
    """Returns True if glibc accepted both settings."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return (bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold))
                and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)))
    except (OSError, AttributeError):
        return False
