"""Process-wide settings for fast CPU training.

`tune_allocator()`: glibc's malloc gives freed blocks of a few MiB back to the
kernel (they are mmap'ed, or trimmed off the top of the heap) and takes fresh
pages for the next allocation, which the kernel has to fault in and zero. A
training step frees and allocates the same activation buffers every step, so
with the defaults it pays for thousands of page faults each step (measured in
benchmarks/RESULTS.md: 14% of the CPU time of a compiled ResNet-20 step went to
the kernel; whole runs were 10-42% faster without them, with the same weights).
Keeping freed memory in the process removes them. The cost: the process keeps
its peak memory instead of handing it back between steps.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks up to 32 MiB come from the heap and are reused
TRIM_THRESHOLD = 1 << 30  # keep up to 1 GiB of free heap instead of trimming it after every step

_tuned: bool | None = None


def tune_allocator() -> bool:
    """Keep freed CPU memory in the process for reuse, once per process.

    Returns True where it took effect (Linux with glibc), False elsewhere or
    where GLIBC_TUNABLES already sets malloc's thresholds (the user's choice
    stands). Safe to call more than once.
    """
    global _tuned
    if _tuned is None:
        _tuned = _mallopt()
    return _tuned


def _mallopt() -> bool:
    if sys.platform != "linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
                    and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def cpu_name() -> str:
    """The processor's model name (e.g. 'Intel(R) Xeon(R) Platinum 8480+'), else the architecture."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively instead of being emulated (slower than fp32).

    The one check for training (autocast) and inference (reslab.optimize) alike.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() == "arm64"  # Apple silicon has bf16 instructions
    return "avx512_bf16" in flags or "amx_bf16" in flags


def physical_memory() -> int | None:
    """This machine's physical memory in bytes; None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device.type, dtype=dtype)
