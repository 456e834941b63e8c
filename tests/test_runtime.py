import os
import platform
import subprocess
import sys
import textwrap

import pytest

glibc_only = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                                reason="tune_allocator acts on glibc's malloc only")

# A training step in miniature: four 4 MiB buffers allocated, written and freed, twenty times.
_STEPS = textwrap.dedent("""
    import os, resource, sys
    {setup}
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        bufs = [bytearray(4 << 20) for _ in range(4)]; del bufs
    start = faults()
    for _ in range(20):
        bufs = [bytearray(4 << 20) for _ in range(4)]; del bufs
    print((faults() - start) / 20)
""")


def _faults_per_step(setup: str, env: dict | None = None) -> float:
    out = subprocess.run([sys.executable, "-c", _STEPS.format(setup=setup)], capture_output=True, text=True,
                         check=True, env=env)
    return float(out.stdout)


@glibc_only
def test_tune_allocator_stops_page_faults_of_reused_buffers():
    # Without it glibc hands freed blocks back to the kernel and faults pages back in every step
    # (how many of the 4096 pages depends on the heap's layout: 1,200-4,100 measured here).
    default = _faults_per_step("")
    tuned = _faults_per_step("from reslab.runtime import tune_allocator; assert tune_allocator()")
    assert default > 400 and tuned < 50 and tuned < default / 10


@glibc_only
def test_tune_allocator_leaves_the_users_tunables_alone():
    env = {**os.environ, "GLIBC_TUNABLES": "glibc.malloc.trim_threshold=65536"}
    setup = "from reslab.runtime import tune_allocator; assert not tune_allocator()"
    assert _faults_per_step(setup, env) > 400


def test_tune_allocator_sets_malloc_once_per_process(monkeypatch):
    from reslab import runtime

    calls = []
    monkeypatch.setattr(runtime, "_tuned", None)
    monkeypatch.setattr(runtime, "_mallopt", lambda: calls.append(1) or True)
    assert runtime.tune_allocator() and runtime.tune_allocator() and len(calls) == 1
