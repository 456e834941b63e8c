"""Process-wide settings for fast CPU training.

`tune_allocator()`: glibc's malloc gives freed blocks of a few MiB back to the
kernel (they are mmap'ed, or trimmed off the top of the heap) and takes fresh
pages for the next allocation, which the kernel has to fault in and zero. A
training step frees and allocates the same activation buffers every step;
keeping freed memory in the process lets the next step reuse them without a
page fault (what that is worth: benchmarks/RESULTS.md, "Freed memory kept in the
process"). The cost: the process keeps its peak memory instead of handing it
back between steps.

Also the choices a run makes about its process: the rank under torchrun or srun (`Dist`), the device,
the autocast dtype, and the record of what produced it (`environment`). torch is imported
inside the functions that need it, so that importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import re
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import ReslabError

if TYPE_CHECKING:
    import torch

    from .train.config import TrainConfig

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


# The instruction sets that decide which dtypes run fast on a CPU (as /proc/cpuinfo names them).
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512_fp16", "amx_bf16", "amx_int8")


@functools.cache
def cpu_flags() -> tuple[str, ...]:
    """Which of CPU_FLAGS this processor has (empty where /proc/cpuinfo is absent)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ()
    have = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            break
    return tuple(f for f in CPU_FLAGS if f in have)


def cpu_has_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively instead of being emulated (tens of times
    slower than fp32). The one check for training (autocast) and inference (reslab.optimize) alike.
    """
    if not Path("/proc/cpuinfo").is_file():
        return platform.machine() == "arm64"  # Apple silicon has bf16 instructions
    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def cpu_has_int8_dot() -> bool:
    """VNNI or AMX: int8 dot products in one instruction (without them int8 matmuls are slow)."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & set(cpu_flags()))


def physical_memory() -> int | None:
    """This machine's physical memory in bytes; None where the system does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows) or no such name
        return None


# --- device, precision and the environment of a run ------------------------------
@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def dist_from_env() -> Dist:
    """torchrun's RANK/WORLD_SIZE/LOCAL_RANK; in a task that Slurm's srun started without
    torchrun, Slurm's, first set in the environment as torchrun would have set them, for the
    env:// rendezvous (`torchrun_env_from_slurm`); a single process when neither is set."""
    os.environ.update(torchrun_env_from_slurm(os.environ))
    return Dist(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                int(os.environ.get("LOCAL_RANK", 0)))


def torchrun_env_from_slurm(env: Mapping[str, str]) -> dict[str, str]:
    """The variables torchrun would set, for a task of an srun step of several tasks where
    torchrun set none: rank, world size and local rank from SLURM_PROCID, SLURM_STEP_NUM_TASKS
    and SLURM_LOCALID, and torch.distributed's env:// rendezvous on the step's first node, at a
    port chosen by the job id (both kept where the user set them). Empty otherwise: outside
    srun (a batch script's own shell also has SLURM_NTASKS, so only a step's count is trusted),
    under torchrun, or for a step of one task."""
    if "RANK" in env or int(env.get("SLURM_STEP_NUM_TASKS", 1)) <= 1:
        return {}
    nodes = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST", "")
    return {"RANK": env["SLURM_PROCID"], "WORLD_SIZE": env["SLURM_STEP_NUM_TASKS"],
            "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
            "LOCAL_WORLD_SIZE": env.get("SLURM_STEP_TASKS_PER_NODE", "1").split("(")[0].split(",")[0],
            "MASTER_ADDR": env.get("MASTER_ADDR") or first_host(nodes),
            "MASTER_PORT": env.get("MASTER_PORT") or str(20000 + int(env.get("SLURM_JOB_ID", 0)) % 10000)}


def first_host(nodelist: str) -> str:
    """The first host of a Slurm host list: "gpu[07-09,12],cpu01" -> "gpu07"."""
    depth, end = 0, len(nodelist)
    for i, c in enumerate(nodelist):
        depth += (c == "[") - (c == "]")
        if c == "," and depth == 0:
            end = i
            break
    return re.sub(r"\[([^\]]*)\]", lambda m: m.group(1).split(",")[0].split("-")[0], nodelist[:end]) or "localhost"


def resolve_device(name: str, dist: Dist) -> torch.device:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ReslabError("device cuda requested but no CUDA device is available; use --set device=cpu")
        device = torch.device("cuda", dist.local_rank if device.index is None else device.index)
        torch.backends.cudnn.benchmark = True  # fixed input shapes: pick the fastest kernels once
    return device


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype actually used: None (fp32) where the hardware lacks a fast path."""
    import torch

    if cfg.amp == "none":
        return None
    if cfg.amp == "fp16":
        return torch.float16 if device.type == "cuda" else None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device.type, dtype=dtype)


def environment(device: torch.device) -> dict[str, Any]:
    """What produced a run: code version, libraries, hardware."""
    import torch

    return {
        "git_sha": git_sha(), "torch": str(torch.__version__), "python": platform.python_version(),
        "device": str(device), "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                               else cpu_name()),
        "threads": torch.get_num_threads(), "host": platform.node(),
    }


def git_sha() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None
