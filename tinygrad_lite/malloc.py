"""Keep freed memory for reuse (glibc only): an opt-in speed-up for programs, never a correctness matter.

Every NumPy op allocates a fresh result array. glibc serves big blocks (over 128 KiB) with mmap and hands them
back to the OS on free, and trims the heap top as soon as it is free; the next array of the same size then
page-faults on each of its 4 KiB pages, which the kernel zeroes first. A training step makes hundreds of such
arrays. Raising the mmap and trim thresholds lets freed blocks be reused instead; scripts/bench.py times the
default training step with and without it. Elsewhere (macOS, musl, Windows) this does nothing.

The setting is process-wide (every library in the process allocates through the same malloc) and cannot be
undone reliably, so it is a program's choice: call keep_freed_memory() once from an entry point (a training
script's main, the benchmark), never from a library or on import. The environment variables
MALLOC_MMAP_THRESHOLD_ and MALLOC_TRIM_THRESHOLD_ make the same choice from outside the program.
"""
import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3   # mallopt parameter numbers from glibc's <malloc.h>


def keep_freed_memory(mmap_threshold=32 << 20, trim_threshold=1 << 30):
    """Set glibc's mmap and trim thresholds for the whole process. Returns True if glibc accepted both."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return (bool(libc.mallopt(M_MMAP_THRESHOLD, mmap_threshold))
                and bool(libc.mallopt(M_TRIM_THRESHOLD, trim_threshold)))
    except (OSError, AttributeError):
        return False
