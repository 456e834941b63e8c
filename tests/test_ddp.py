"""Two-process data-parallel training on the CPU (gloo), as torchrun would start it.

Each rank takes its half of every global batch; DDP averages the gradients,
so the ranks must end with the same weights, and only rank 0 writes the run
directory.
"""

import json

import pytest
import torch

from helpers import WORLD, run_ranks
from reslab.train import TrainConfig, load_checkpoint, train


def _config() -> TrainConfig:
    return TrainConfig(model="resnet20", data="digits", iters=30, batch_size=64, val_size=120, lr=0.1,
                       schedule="cosine", warmup_iters=3, log_every=1, compile="off", seed=0, augment=None,
                       threads=1, device="cpu")


def _rank_main(rank: int, out: str, weights: str) -> None:
    import torch.distributed as dist

    import reslab.train.setup as setup
    import reslab.train.step as step

    models = []
    wrap = setup.wrap

    def keep(model, *args):  # the rank's own model, before DDP wraps it
        models.append(model)
        return wrap(model, *args)

    setup.wrap = keep
    seen = []
    forward_backward = step.forward_backward

    def record(model, x, y, *args):  # the images this rank trains on, step by step
        seen.append((x.clone(), y.clone()))
        return forward_backward(model, x, y, *args)

    step.forward_backward = record
    result = train(_config(), out, progress=False)
    params = {name: p.detach().clone() for name, p in models[0].named_parameters()}
    torch.save({"steps": result.steps, "params": params, "seen": seen[:3]}, f"{weights}.{rank}.pt")
    dist.destroy_process_group()


def _run_ranks(tmp_path) -> None:
    run_ranks(_rank_main, str(tmp_path / "run"), str(tmp_path / "w"))


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_two_ranks_train_in_step_and_only_rank_0_writes(tmp_path):
    _run_ranks(tmp_path)
    run = tmp_path / "run"
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["state"]["step"] == 30
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if r["kind"] == "step"]
    assert len(steps) == 30  # rank 1 logged nothing
    losses = [r["loss"] for r in steps]
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    # the first epoch: 20 global batches of 64 (of 1,317 images), 32 on each rank; its images per
    # second count every rank's images, its loss is rank 0's mean
    epoch = next(r for r in records if r["kind"] == "epoch")
    assert epoch["step"] == 20
    assert epoch["train_loss"] == pytest.approx(sum(losses[:20]) / 20, rel=1e-5)
    assert epoch["img_s"] == pytest.approx(20 * 64 / epoch["seconds"], rel=0.02)
    config = json.loads((run / "config.json").read_text())
    assert config["env"]["world_size"] == WORLD
    ranks = [torch.load(tmp_path / f"w.{rank}.pt", weights_only=True) for rank in range(WORLD)]
    assert [r["steps"] for r in ranks] == [30] * WORLD
    # each rank trained on its own slice of the global batch: disjoint, and together the whole batch
    from reslab.train.splits import load_data, make_loader

    cfg = _config()
    loader = make_loader(load_data(cfg, with_test=False).train, cfg, True, torch.device("cpu"))
    for step in range(3):
        gx, gy = loader.batch(0, step)
        for rank in range(WORLD):
            x, y = ranks[rank]["seen"][step]
            assert torch.equal(x, gx[rank::WORLD]) and torch.equal(y, gy[rank::WORLD]), (step, rank)
    # gradients were averaged every step: the ranks hold the same weights, and rank 0 saved them
    for name, p in ranks[0]["params"].items():
        assert torch.equal(p, ranks[1]["params"][name]), name
        assert torch.equal(p, ckpt["model"][name]), name


def test_torchrun_cli(tmp_path):
    """The documented command: torchrun --standalone --nproc-per-node 2 -m reslab train ..."""
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(WORLD),
           "-m", "reslab", "train", "--preset", "fast-cifar", "--model", "resnet20", "--data", "digits",
           "--iters", "12", "--out", str(out), "--set", "batch_size=64", "--set", "val_size=120",
           "--set", "augment=none", "--set", "compile=off", "--set", "threads=1", "--set", "device=cpu"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_checkpoint(out / "last.pt")["state"]["step"] == 12
    assert json.loads((out / "config.json").read_text())["env"]["world_size"] == WORLD


@pytest.mark.parametrize("device, backend, device_ids", [("cpu", "gloo", None), ("cuda:1", "nccl", [1])])
def test_a_rank_joins_its_backend_and_binds_ddp_to_its_own_device(monkeypatch, device, backend, device_ids):
    """NCCL between GPUs, gloo on CPUs; a GPU rank's DDP holds only its own device (no GPU needed)."""
    import torch.distributed as tdist

    import reslab.train.setup as setup
    from reslab.runtime import Dist

    joined, wrapped = [], []
    monkeypatch.setattr(tdist, "is_initialized", lambda: bool(joined))
    monkeypatch.setattr(tdist, "init_process_group", lambda *args, **kwargs: joined.append((args, kwargs)))
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel",
                        lambda *args, **kwargs: wrapped.append((args, kwargs)) or "ddp")
    model = torch.nn.Linear(2, 2)
    rank = Dist(rank=1, world=2, local_rank=1)
    assert setup.wrap(model, _config(), 30, rank, torch.device(device)) == "ddp"
    assert joined == [((backend,), {})]
    assert wrapped == [((model,), {"device_ids": device_ids})]
    assert setup.wrap(model, _config(), 30, rank, torch.device(device)) == "ddp"
    assert len(joined) == 1  # a process joins its group once
    assert setup.wrap(model, _config(), 30, Dist(), torch.device(device)) is model  # one process: no DDP
    assert len(wrapped) == 2
