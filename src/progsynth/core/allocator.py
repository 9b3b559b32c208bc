"""Keep freed tensor memory in the process, so functional updates do not page-fault every step.

Lens puts are pure: each optimizer step returns *new* parameter and moment tensors and drops the
old ones. Torch's CPU allocator is glibc's malloc, which by default returns large freed blocks to
the operating system (blocks above the mmap threshold are unmapped; the heap top is trimmed past
128 KiB), so the next step's tensors of the same sizes are fresh pages that fault in on first write.
For a 784→256→10 MLP with Adam that costs ~15 % of a training step (``benchmarks/core.py``).
Raising the two thresholds makes freed blocks reusable at once, as an in-place ``torch.optim``
update never needs.

Opt-in: importing progsynth changes no process-wide setting (DESIGN), so nothing here runs on
import. The training loop (``runs.train``) and the ``progsynth`` command call
``keep_freed_memory()``; a library user whose own loop makes many functional steps calls it once.
It changes malloc's settings for the whole process (a process that frees a large amount keeps up
to ``TRIM_THRESHOLD`` bytes mapped) and does nothing off glibc or if the process's environment
already sets ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``. ``applied()`` says whether
this process's settings were changed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
"""Blocks up to this size come from the heap, not mmap (glibc's maximum on 64-bit)."""
TRIM_THRESHOLD = 256 * 1024 * 1024
"""Free memory at the top of the heap kept before it is returned to the system."""


_applied = False


def applied() -> bool:
    """Whether ``keep_freed_memory()`` changed this process's malloc settings."""
    return _applied


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; True when the settings were applied. Idempotent."""
    global _applied
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
