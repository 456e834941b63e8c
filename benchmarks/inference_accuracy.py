"""Test accuracy of every inference path on a trained run: torch fp32/bf16/int8 (PT2E and FX),
OpenVINO fp32/bf16/int8 (NNCF) and ONNX Runtime fp32/int8 (QDQ), int8 calibrated on real
training images.

    python benchmarks/inference_accuracy.py RUN_DIR [--calibration 512] [--json OUT]

RUN_DIR: a finished `reslab train` run whose data is still where its config says (e.g. a
CIFAR-10 ResNet-20 on the JPEG copy). Prints a markdown table: top-1 on the test split, the
change against eager fp32 in points, and how many test images changed their predicted class.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import torch

from reslab.backends import available
from reslab.bench import machine_info
from reslab.predict import split_loader
from reslab.train.record import load_trained


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run")
    p.add_argument("--calibration", type=int, default=512, help="training images used to calibrate int8")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    warnings.simplefilter("ignore")
    torch.set_num_threads(args.threads)

    from reslab.optimize import optimize

    trained = load_trained(args.run)
    model = trained.model.float().eval()
    test = list(split_loader(trained, split="test", batch_size=250))
    calibration = []
    for x, _ in split_loader(trained, split="train", batch_size=128):
        calibration.append(x)
        if sum(len(b) for b in calibration) >= args.calibration:
            break
    paths = [("torch eager", "fp32", lambda: model), ("torch", "fp32", None), ("torch", "bf16", None),
             ("torch", "int8", None), ("torch FX (no compile)", "int8", "fx")]
    for backend in ("openvino", "onnxruntime"):
        if available(backend):
            paths += [(backend, d, None) for d in (("fp32", "bf16", "int8") if backend == "openvino" else ("fp32", "int8"))]
    rows, reference = [], None
    for label, dtype, how in paths:
        t0 = time.perf_counter()
        if callable(how):
            fn = how()
        elif how == "fx":
            fn = optimize(model, "int8", compile=False, calibration=calibration)
        else:
            backend = "torch" if label == "torch" else label
            fn = optimize(model, dtype, calibration=calibration if dtype == "int8" else None, backend=backend)
        if label == "torch" and dtype == "int8":
            label = f"torch {fn.int8}"
        with torch.no_grad():
            preds = torch.cat([fn(x).argmax(1) for x, _ in test])
        labels = torch.cat([y for _, y in test])
        reference = preds if reference is None else reference
        acc = 100 * (preds == labels).float().mean().item()
        rows.append({"path": label, "dtype": dtype, "top1": round(acc, 2),
                     "changed": int((preds != reference).sum()), "seconds": round(time.perf_counter() - t0, 1)})
        print(f"{label} {dtype}: {acc:.2f}%", flush=True)
    base = rows[0]["top1"]
    print(f"\n{trained.config.model} on {trained.config.data} test ({len(labels)} images), int8 calibrated on "
          f"{sum(len(b) for b in calibration)} training images, {args.threads} thread(s)\n")
    print("| path | dtype | top-1 % | vs eager fp32 (points) | predictions changed |")
    print("| --- | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['path']} | {r['dtype']} | {r['top1']:.2f} | {r['top1'] - base:+.2f} | {r['changed']} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine_info(), "run": args.run, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
