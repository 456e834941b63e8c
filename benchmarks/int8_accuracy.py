"""Accuracy of reslab's fast paths on a real test set, against eager fp32.

    python benchmarks/int8_accuracy.py /work/runs/r20-fast-cifar \
        imagefolder:/work/cifar10-jpeg [calibration images, default 1024]

Loads a trained run (its exported weights), evaluates the eager fp32 model,
`optimize(..., "bf16")` and `optimize(..., "int8")` on the whole test split,
and prints top-1 accuracy and the change in points. int8 is calibrated on
images of the *train* split (never the test images it is scored on).
"""

from __future__ import annotations

import json
import sys
import time

import torch

from reslab.data import Loader, load
from reslab.export import load as load_run
from reslab.optimize import optimize


def accuracy(fn, loader) -> float:
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (fn(x).argmax(1) == y).sum().item()
            total += len(y)
    return 100.0 * correct / total


def main(run: str, data: str, n_calib: str = "1024") -> None:
    loaded = load_run(run)
    model = loaded.model
    test = load(data, split="test")
    train = load(data, split="train")
    g = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(train), generator=g)[: int(n_calib)]
    calib_ds = type(train)(train.images[pick], train.labels[pick], train.classes, train.mean, train.std,
                           train.name, "train")
    calibration = [x for x, _ in Loader(calib_ds, batch_size=128, train=False)]
    loader = Loader(test, batch_size=256, train=False)
    rows = {}
    t = time.perf_counter()
    rows["eager fp32"] = accuracy(model, loader)
    for dtype in ("bf16", "int8"):
        fast = optimize(model, dtype, compile=False, calibration=calibration if dtype == "int8" else None)
        rows[f"optimize {dtype}"] = accuracy(fast, loader)
    base = rows["eager fp32"]
    out = {"run": run, "model": loaded.name, "test_images": len(test), "calibration_images": int(n_calib),
           "top1": rows, "delta_points": {k: round(v - base, 2) for k, v in rows.items()},
           "seconds": round(time.perf_counter() - t, 1), "torch": torch.__version__,
           "threads": torch.get_num_threads()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(*sys.argv[1:])
