"""Fault injection: a run killed with SIGKILL inside a checkpoint write resumes to the bit.

The child process trains with `os.replace` slowed down for last.pt: it announces that it is
between writing the new checkpoint's bytes and renaming them into place, and the test kills
it there. The previous last.pt must be intact (its digest checks), the half-done temporary
file must not disturb the resume, and the resumed run must end `torch.equal` to one that was
never interrupted.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from reslab.train import TrainConfig, load_checkpoint, train

CHILD = """
import json, os, sys, time
from reslab.train import TrainConfig, train
import reslab.atomic as atomic  # the one atomic writer

real, writes = os.replace, {"n": 0}
def slow_replace(src, dst):
    if str(dst).endswith("last.pt"):
        writes["n"] += 1
        if writes["n"] == int(sys.argv[3]):
            open(sys.argv[4], "w").close()  # the new bytes are on disk, not yet renamed
            time.sleep(120)
    return real(src, dst)
atomic.os.replace = slow_replace
train(TrainConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False)
"""


def _cfg() -> TrainConfig:
    return TrainConfig(model="resnet20", model_args={"depth": 8, "drop_path_rate": 0.1}, data="digits", iters=60,
                       batch_size=48, val_size=600, lr=0.1, schedule="cosine", warmup_iters=4, log_every=1,
                       compile="off", seed=0, augment="flip", threads=1, device="cpu", ckpt_every=5,
                       ema_decay=0.99, nesterov=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "run"
    train(_cfg(), out, progress=False)
    return load_checkpoint(out / "last.pt")


# last.pt is written every 5 steps and at each epoch's end (17 steps of 48 of the 837 images):
# writes 1..7 are at steps 5, 10, 15, 17, 20, 25, 30
@pytest.mark.parametrize("write, previous", [(2, 5), (7, 25)])
def test_killed_inside_a_checkpoint_write_resumes_to_the_same_weights(tmp_path, uninterrupted, write, previous):
    out, marker = tmp_path / "run", tmp_path / "inside-write"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, _cfg().to_json(), str(out), str(write), str(marker)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, f"the run ended before the write: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    leftovers = [p.name for p in out.iterdir() if ".tmp" in p.name]
    assert leftovers, "the kill did not land inside the write"
    before = load_checkpoint(out / "last.pt")  # the previous checkpoint, whole: its digest checks
    assert before["state"]["step"] == previous
    train(None, out, resume=True, progress=False)
    after = load_checkpoint(out / "last.pt")
    assert after["state"]["step"] == uninterrupted["state"]["step"] == 60
    for part in ("model", "ema"):
        for k, v in uninterrupted[part].items():
            assert torch.equal(after[part][k], v), (part, k)
