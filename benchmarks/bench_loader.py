"""Training-input throughput for 32x32 images with the CIFAR augmentation, side by side.

Pipelines, all giving normalized float batches of pad-4 random crops with
horizontal flips, timed in one process, interleaved over repeats so load
from other processes hits them alike:

  reslab          reslab.data.Loader on the uint8 array cache (float32, and bf16
                  channels_last)
  tv-folder       torchvision.datasets.ImageFolder + transforms (RandomCrop(32, 4),
                  RandomHorizontalFlip, ToTensor, Normalize) + DataLoader workers:
                  the usual pipeline, decoding the JPEGs every epoch
  tv-memory       the same per-image torchvision transforms (v2) over the same
                  uint8 tensors already in memory, DataLoader(num_workers=0):
                  what per-image Python costs without any decoding

Warm-up batches are excluded; each number is the median of the repeats, in
images per second. Usage:

  python benchmarks/bench_loader.py [--root DIR] [--batch-size 128 512] [--repeats 3]

DIR holds train/<class>/*.jpg (default: the CIFAR-10 JPEG copy under the
data directory, else 10,000 random JPEGs written to a temporary folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.transforms import v2

from reslab.data import Loader, load
from reslab.data.download import data_dir


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _synthetic(n: int = 10_000) -> Path:
    root = Path(tempfile.mkdtemp(prefix="bench_loader_")) / "train"
    rng = np.random.default_rng(0)
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(n // 10):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
                root / f"class{c}" / f"{i:05d}.jpg", quality=75)
    return root.parent


def _time(batches, min_images: int, warmup: int = 3) -> float:
    """Images per second over at least `min_images`, after `warmup` batches."""
    it = iter(batches)
    for _ in range(warmup):
        next(it)
    n, t = 0, time.perf_counter()
    for x, _ in it:
        n += len(x)
        if n >= min_images:
            break
    return n / (time.perf_counter() - t)


class _MemoryTV(torch.utils.data.Dataset):
    """Per-image torchvision v2 transforms over uint8 (N, C, H, W) tensors."""

    def __init__(self, images, labels, mean, std):
        self.images, self.labels = images, labels
        self.t = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
                             v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.t(self.images[i]), self.labels[i]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=None)
    p.add_argument("--batch-size", type=int, nargs="+", default=[128, 512])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()

    root = args.root
    if root is None:
        for cand in (data_dir() / "cifar10-jpeg", Path("/work/cifar10-jpeg")):
            if (cand / "train").is_dir():
                root = cand
                break
        else:
            root = _synthetic()
    ds = load(f"imagefolder:{root}", split="train")
    mean, std = ds.mean, ds.std
    tv_folder = datasets.ImageFolder(str(root / "train"), transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(mean, std)]))
    memory = _MemoryTV(ds.images.clone(), ds.labels, mean, std)

    info = {"cpu": _cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "dataset": f"{root} ({len(ds)} images)",
            "workers": args.workers, "load_average": os.getloadavg()}
    print(json.dumps(info))
    results = []
    for bs in args.batch_size:
        runs: dict[str, list[float]] = {}
        pipelines = {
            "reslab float32": lambda bs=bs: Loader(ds, bs, augment="cifar"),
            "reslab bf16 channels_last": lambda bs=bs: Loader(
                ds, bs, augment="cifar", dtype=torch.bfloat16, channels_last=True),
            f"tv-folder workers={args.workers}": lambda bs=bs: DataLoader(
                tv_folder, bs, shuffle=True, num_workers=args.workers, drop_last=True),
            "tv-memory workers=0": lambda bs=bs: DataLoader(memory, bs, shuffle=True, drop_last=True),
        }
        for _ in range(args.repeats):
            for name, make in pipelines.items():
                fast = name.startswith("reslab")
                runs.setdefault(name, []).append(_time(make(), 40 * bs if fast else 12 * bs))
        base = statistics.median(runs[f"tv-folder workers={args.workers}"])
        for name, r in runs.items():
            med = statistics.median(r)
            row = {"pipeline": name, "batch": bs, "images_per_s": round(med),
                   "min": round(min(r)), "max": round(max(r)), "vs_tv_folder": round(med / base, 1)}
            results.append(row)
            print(f"batch {bs:4d}  {name:28s} {med:10,.0f} img/s  (min {min(r):,.0f}, "
                  f"max {max(r):,.0f})  {med / base:5.1f}x tv-folder", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"info": info, "results": results}, indent=1))


if __name__ == "__main__":
    main()
