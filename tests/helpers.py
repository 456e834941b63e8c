"""Helpers shared by the test modules (import as `from helpers import ...`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Every BatchNorm2d as after training: statistics away from 0/1 and a trained affine (gamma,
    beta), so that BN folding that drops any of the four is caught. Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model.eval()


def trained_like(name: str, **kw) -> nn.Module:
    """reslab.create_model(name, **kw), seeded, with `randomize_bn`."""
    import reslab

    torch.manual_seed(0)
    return randomize_bn(reslab.create_model(name, **kw))


# Largest |optimized - eager fp32| relative to the largest |eager fp32 logit| that `optimize` and the
# backends are held to; int8 is judged by agreement of the predicted class instead.
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude of `want`."""
    return ((got - want).abs().max() / want.abs().max()).item()


# --- ranks of a distributed run (gloo, CPU) ----------------------------------------------
WORLD = 2


def run_ranks(target, *args, world: int = WORLD, timeout: float = 300) -> None:
    """Runs target(rank, *args) in `world` spawned processes set up as torchrun sets up its
    ranks (RANK, LOCAL_RANK, WORLD_SIZE, a free local port); asserts that every rank exits 0."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_rank_entry, args=(target, r, world, port, args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=timeout)
    codes = [p.exitcode for p in procs]
    assert codes == [0] * world, f"rank exit codes {codes}"


def _rank_entry(target, rank: int, world: int, port: int, args: tuple) -> None:
    import os

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    target(rank, *args)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def photos(root, classes, per_class: int, seed: int = 0, png_every: int = 0):
    """root/<class>/NN.jpg: random RGB photos of 40-60 px a side, each of its own size; with
    png_every=k, every k-th is a .png instead. Returns root."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            w, h = (int(v) for v in rng.integers(40, 61, 2))
            suffix = "png" if png_every and i % png_every == png_every - 1 else "jpg"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / cls / f"{i:02d}.{suffix}")
    return root


class _PeerBlock(nn.Module):
    def __init__(self, cin, cout, stride, shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.kind, self.cin, self.cout = shortcut, cin, cout
        if shortcut == "projection" and (stride != 1 or cin != cout):
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        else:
            self.downsample = None

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.downsample is not None:
            short = self.downsample(x)
        elif self.cin != self.cout:  # akamaster's option A: subsample, zeros on both sides of the channels
            side = (self.cout - self.cin) // 2
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, side, side))
        else:
            short = x
        return F.relu(out + short)


class PeerCifarNet(nn.Module):
    """The CIFAR ResNets of akamaster/pytorch_resnet_cifar10 (shortcut "zeros both sides", head
    "linear") and chenyaofo/pytorch-cifar-models (shortcut "projection", head "fc"), rebuilt
    from their published code: the module names, shortcuts and head their files are saved from."""

    def __init__(self, n, shortcut, head, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for i, (cout, stride) in enumerate(((16, 1), (32, 2), (64, 2)), 1):
            blocks = []
            for j in range(n):
                blocks.append(_PeerBlock(cin, cout, stride if j == 0 else 1, shortcut))
                cin = cout
            self.add_module(f"layer{i}", nn.Sequential(*blocks))
        self.head_name = head
        self.add_module(head, nn.Linear(64, classes))

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return getattr(self, self.head_name)(x.mean((2, 3)))


def interrupt_at(cfg, out, step: int) -> None:
    """Trains `cfg` into `out` and stops it as Ctrl-C would once `step` steps are done."""
    import pytest

    from reslab.train import TrainingInterrupted, train

    def stop(done):
        if done == step:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(cfg, out, progress=False, on_step=stop)
