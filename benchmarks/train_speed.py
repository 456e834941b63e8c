"""Training throughput of ResNet-20 (batch 128, loader included), speed switches side by side.

    .venv/bin/python benchmarks/train_speed.py [--threads 1] [--batches 20] [--rounds 3]

Every variant trains in the same process on the same batches (the CIFAR-10
JPEG copy when present, else random uint8 images), rounds interleaved so a
busy shared machine slows all variants alike; warm-up (and compilation)
excluded. Prints images/s per round (median) and the ratio to plain fp32
eager NCHW with a for-loop optimizer.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

from reslab import create_model
from reslab.data import Dataset, Loader

VARIANTS = {  # name: (channels_last, bf16 autocast, torch.compile, foreach optimizer)
    "fp32 eager NCHW (baseline)": (False, False, False, False),
    "fp32 eager channels_last foreach": (True, False, False, True),
    "bf16 eager channels_last foreach": (True, True, False, True),
    "fp32 compiled channels_last foreach": (True, False, True, True),
    "bf16 compiled channels_last foreach": (True, True, True, True),
}


def dataset(n: int) -> Dataset:
    try:
        from reslab.data import load

        ds = load("imagefolder:/work/cifar10-jpeg", split="train")
        return ds.subset(torch.arange(n))
    except Exception:
        g = torch.Generator().manual_seed(0)
        return Dataset(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                       torch.randint(0, 10, (n,), generator=g), [str(i) for i in range(10)],
                       (0.5,) * 3, (0.25,) * 3, "random")


def make(variant: tuple[bool, bool, bool, bool], ds: Dataset, batch: int):
    cl, bf16, comp, foreach = variant
    torch.manual_seed(0)
    model = create_model("resnet20")
    if cl:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
                          foreach=foreach)
    fwd = torch.compile(model) if comp else model
    loader = Loader(ds, batch_size=batch, train=True, augment="cifar", channels_last=cl, drop_last=True)

    def epoch() -> int:
        n = 0
        for x, y in loader:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = fwd(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=0.1)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            n += len(y)
        return n

    return epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--batches", type=int, default=20, help="batches per timed 'epoch'")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="substrings of variant names to keep")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = dataset(args.batch * args.batches)
    variants = {k: v for k, v in VARIANTS.items() if not args.only or any(s in k for s in args.only)}
    epochs = {}
    for name, v in variants.items():
        epochs[name] = make(v, ds, args.batch)
        t = time.perf_counter()
        epochs[name]()  # warm-up: allocator, oneDNN primitives, compilation
        print(f"warm-up {name}: {time.perf_counter() - t:.1f} s", flush=True)
    rates: dict[str, list[float]] = {k: [] for k in variants}
    # images per CPU-second of this process: what the machine would give were it not shared
    cpu_rates: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        for name, run in epochs.items():
            t, c = time.perf_counter(), time.process_time()
            n = run()
            rates[name].append(n / (time.perf_counter() - t))
            cpu_rates[name].append(n / (time.process_time() - c))
        print(f"round {r + 1}: " + ", ".join(f"{rates[k][-1]:.0f}" for k in variants), flush=True)
    base = statistics.median(next(iter(rates.values())))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\ntorch {torch.__version__}, threads {args.threads}, batch {args.batch}, "
          f"{args.batches} batches per epoch, data {ds.name}, load average {load:.1f}")
    print(f"{'variant':<40} {'img/s (median)':>15} {'min-max':>12} {'vs baseline':>12} {'img/CPU-s':>10}")
    for name, rs in rates.items():
        med = statistics.median(rs)
        print(f"{name:<40} {med:>15.0f} {min(rs):>5.0f}-{max(rs):<6.0f} {med / base:>11.2f}x "
              f"{statistics.median(cpu_rates[name]):>10.0f}")


if __name__ == "__main__":
    main()
