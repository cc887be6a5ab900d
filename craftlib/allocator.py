"""Keep freed memory for the next training step instead of handing it back to the system (glibc's
malloc).

Why: on the CPU, torch allocates every activation and gradient of a step afresh. By default glibc
hands large blocks back to the system when they are freed (``mmap`` blocks, and free memory at the
top of the heap beyond its trim threshold), so each step's tensors are mapped and zero-filled by the
kernel again: about 16,000 page faults per workshop step (batch 64, 40 px), a fifth of its time on
the project's 2-core machine (``benchmarks/step_profile.py``, docs/PERFORMANCE.md). With the
thresholds raised, each step reuses the memory the last one freed. It changes no number (the same
arithmetic at other addresses) and costs little memory: the process keeps about what its largest
step needed (tens of MB more resident for the workshop recipe).

glibc only (Linux); elsewhere, or where the user set glibc's malloc variables, it does nothing.
"""

from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts; a workshop step's largest tensor is 26 MB
TRIM_THRESHOLD = 256 << 20  # more than a workshop step frees at once
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def keep_freed_memory(environ=os.environ) -> bool:
    """Raise glibc's mmap and trim thresholds for this process (idempotent); True where they are now
    in effect.

    Skipped where glibc is not the C library, or where the user tuned malloc (``MALLOC_*_``
    variables or ``GLIBC_TUNABLES`` naming ``malloc``): their choice is kept.
    """
    return _user_tuned(environ) is None and _mallopt()


def _user_tuned(environ) -> str | None:
    """The variable through which the user set glibc's malloc, if any."""
    if "malloc" in environ.get("GLIBC_TUNABLES", ""):
        return "GLIBC_TUNABLES"
    return next((name for name in _USER_SETTINGS if name in environ), None)


def _mallopt() -> bool:
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (
        ValueError,
        OSError,
        AttributeError,
    ):  # no such confstr name (not glibc), no C library symbols
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
