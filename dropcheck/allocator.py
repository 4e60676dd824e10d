"""Keep freed memory in the process: the forked worker's allocator setting.

A statistical sample is drawn in calls of up to a few MB each, hundreds of them. glibc's malloc
serves blocks that large with a fresh mmap and returns them with munmap on free, and trims the
heap whenever its top is free, so every call pays for new pages: the kernel zeroes each one on its
first touch. In a virtual machine that page traffic was half the implementation's own time (the
default DROP-RATE sample: 230 ms of calls and 12 ms of frees, against 145 ms and 0.1 ms with the
settings below), and how much it cost varied from run to run.

`keep_freed_memory()` raises both thresholds, so freed blocks stay in the heap for the next call.
Only for processes dropcheck owns and throws away (the forked worker, `dropcheck bench`'s
instrumented child): the setting lasts for the life of the process, and a user's own process
(pytest with the plugin, an in-process run) keeps its allocator as it was. The price is memory
held after it is freed: the heap is trimmed only once 64 MiB at its top are free (a few calls'
worth of the largest sample chunk, which is all the reuse needs), and free blocks below the top
stay too. Peak RSS at `thorough` was 400-540 MiB over three runs, against 400-470 MiB without the
setting; the worker's per-check memory limit (RLIMIT_AS) counts it either way.
"""
from __future__ import annotations

import contextlib
import ctypes
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 << 20  # above it, blocks are mmapped as before (older glibc accepts no more)
_TRIM_THRESHOLD = 64 << 20  # free heap kept before trimming (1 GiB was no faster)

applied = False  # whether this process has asked for it (tests read it in the worker and here)


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks (up to 32 MiB each, 64 MiB in all) for reuse instead of
    returning them to the kernel. True if it took; False where there is no glibc (macOS, musl)."""
    global applied
    if not sys.platform.startswith("linux"):  # no glibc (and ctypes.CDLL(None) is a TypeError on Windows)
        return False
    with contextlib.suppress(OSError, AttributeError, TypeError):
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        applied = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
    return applied
