"""Training decode + RandomResizedCrop on ImageNet-sized JPEGs, side by side.

Two parts, timed in one process, in interleaved rounds (each round times every
method once, so load from other processes falls on all of them alike; the
ratio to the peer is also taken within each round, then its median):

  loaders      images/s of whole training pipelines with W worker processes (each
               compared with the torchvision pipeline that yields the same output):
               tv-folder  torchvision ImageFolder + DataLoader(num_workers=W) with
                          v2 RandomResizedCrop(S) + RandomHorizontalFlip + PILToTensor
                          (uint8 batches)
               tv-float   the same with torchvision's reference recipe's last steps,
                          v2 ToDtype(float32, scale=True) + Normalize (ImageNet mean/std):
                          normalized float32 batches, as reslab's loader yields
               reslab     reslab StreamingLoader(train=True, num_workers=W): the same
                          crops and flips, normalized float32 batches
               reslab-uint8  reslab's StreamingImageFolder(train=True) in the same
                          DataLoader as tv-folder: uint8 batches, the decode alone
  per image    milliseconds per image in this process, 1 thread, for the ways to
               decode + crop + resize one file to S x S (the same boxes for all):
               pil-full   PIL decodes the whole image, crops, resizes (what
                          torchvision's ImageFolder pipeline does)
               pil-draft  PIL decodes at the largest JPEG DCT reduction (1/2, 1/4,
                          1/8) that keeps the box at least S pixels a side, crops,
                          resizes
               tv-decode  torchvision.io.decode_jpeg (libjpeg-turbo) of the whole
                          image into a tensor, crop, antialiased resize by torch
               reslab     reslab.data.streaming.read_train: pil-draft where the box
                          allows a reduction, else tv-decode
               nvjpeg     (CUDA only) decode_jpeg of batches of files on the GPU,
                          then crop + resize each image there

The benchmark folder is generated once outside the repository (default
../data/decode-bench next to the repository): 2,000 JPEGs of 400-500 px on the
long side (--long-side), quality 90: CIFAR-10 JPEGs (../data/cifar10-jpeg,
or the reslab data directory's copy) upsampled bicubically, with a little
Gaussian noise; smooth synthetic pictures when no copy is found. Usage:

  python benchmarks/bench_decode.py [--root DIR] [--workers 1] [--rounds 5] [--json FILE]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision import datasets
from torchvision.io import ImageReadMode, decode_jpeg, read_file
from torchvision.transforms import v2

from reslab.data import StreamingImageFolder, StreamingLoader
from reslab.data.download import data_dir
from reslab.data.streaming import IMAGENET_MEAN, IMAGENET_STD, crop_box, dct_scale, read_train
from reslab.runtime import cpu_name

REPO = Path(__file__).resolve().parents[1]
CLASSES = 10
FOLDER_VERSION = 1  # bump when the generated folder changes


# --- the benchmark folder ----------------------------------------------------------------
def _sources() -> list[Path]:
    for cand in (REPO.parent / "data" / "cifar10-jpeg", data_dir() / "cifar10-jpeg"):
        if (cand / "train").is_dir():
            return sorted((cand / "train").glob("*/*.jpg"))
    return []


def make_folder(root: Path, n: int, noise: float, long_side: tuple[int, int] = (400, 500), seed: int = 0) -> dict:
    """root/train/class<k>/NNNNN.jpg, n JPEGs of long_side[0] to long_side[1] px on the long side,
    quality 90 (reused when root/meta.json says it was made with the same settings)."""
    meta_path = root / "meta.json"
    want = {"version": FOLDER_VERSION, "images": n, "noise": noise, "long_side": list(long_side), "seed": seed}
    if meta_path.is_file():
        meta = json.loads(meta_path.read_text())
        if {k: meta.get(k) for k in want} == want:
            return meta
    rng = np.random.default_rng(seed)
    sources = _sources()
    picks = rng.choice(len(sources), n, replace=False) if len(sources) >= n else None
    sizes, nbytes = [], 0
    for k in range(n):
        long = int(rng.integers(long_side[0], long_side[1] + 1))
        short = int(long * rng.uniform(0.66, 0.8))
        w, h = (long, short) if rng.random() < 0.8 else (short, long)
        if picks is not None:
            img = np.asarray(Image.open(sources[picks[k]]).convert("RGB").resize((w, h), Image.BICUBIC), np.float32)
        else:  # smooth waves of random frequencies and phases
            yy, xx = np.mgrid[0:h, 0:w] / long
            f, ph = rng.uniform(2, 12, (3, 2)), rng.uniform(0, 2 * np.pi, 3)
            img = np.stack([128 + 100 * np.sin(f[c, 0] * xx + f[c, 1] * yy + ph[c]) for c in range(3)], -1)
        img = img + rng.normal(0, noise, img.shape)
        out = root / "train" / f"class{k % CLASSES}" / f"{k:05d}.jpg"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(out, quality=90)
        sizes.append((w, h))
        nbytes += out.stat().st_size
    meta = {**want, "source": "CIFAR-10 JPEG copy, upsampled" if picks is not None else "synthetic waves",
            "mean_size": [round(float(v)) for v in np.mean(sizes, 0)],
            "quality": 90, "mean_kib": round(nbytes / n / 1024, 1)}
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


# --- single-image decode + crop variants (the same box from the same generator) -----------
def _finish(x: Tensor, flip: bool) -> Tensor:
    return x.flip(-1) if flip else x


def _pil_crop(im, box: tuple[int, int, int, int], f: int, size: int) -> Tensor:
    top, left, h, w = box
    x0, y0 = left // f, top // f
    fine = (left / f - x0, top / f - y0, (left + w) / f - x0, (top + h) / f - y0)
    im = im.crop((x0, y0, math.ceil((left + w) / f), math.ceil((top + h) / f)))
    return v2.functional.pil_to_tensor(im.resize((size, size), Image.BILINEAR, box=fine))


def pil_full(path: Path, size: int, g: torch.Generator) -> Tensor:
    with Image.open(path) as im:
        box = crop_box(*im.size, g)
        flip = bool(torch.rand(1, generator=g) < 0.5)
        im = im.convert("RGB")
    return _finish(_pil_crop(im, box, 1, size), flip)


def pil_draft(path: Path, size: int, g: torch.Generator) -> Tensor:
    with Image.open(path) as im:
        width, height = im.size
        box = crop_box(width, height, g)
        flip = bool(torch.rand(1, generator=g) < 0.5)
        f = dct_scale(box[3], box[2], size)
        if f > 1:
            im.draft("RGB", (width // f, height // f))
        im = im.convert("RGB")
    return _finish(_pil_crop(im, box, f, size), flip)


def _tensor_crop(x: Tensor, box: tuple[int, int, int, int], size: int) -> Tensor:
    top, left, h, w = box
    x = x[:, top:top + h, left:left + w].unsqueeze(0).contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)[0]


def tv_decode(path: Path, size: int, g: torch.Generator) -> Tensor:
    x = decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)
    box = crop_box(x.shape[2], x.shape[1], g)
    flip = bool(torch.rand(1, generator=g) < 0.5)
    return _finish(_tensor_crop(x, box, size), flip)


VARIANTS = {"pil-full": pil_full, "pil-draft": pil_draft, "tv-decode": tv_decode, "reslab": read_train}


def per_image_ms(fn, files: list[Path], size: int) -> float:
    """ms per image of fn(path, size, generator) over files, each with its own seeded generator."""
    t = time.perf_counter()
    for k, p in enumerate(files):
        fn(p, size, torch.Generator().manual_seed(k))
    return (time.perf_counter() - t) / len(files) * 1e3


def nvjpeg_ms(files: list[Path], size: int, batch: int = 64, device: str = "cuda") -> float:
    """ms per image: files read on the CPU, decoded in batches by nvJPEG, cropped and resized on
    the GPU (the boxes drawn as above; float resize, as CUDA's antialiased resize takes no
    uint8), timed with synchronize."""
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for s in range(0, len(files), batch):
        chunk = files[s:s + batch]
        images = decode_jpeg([read_file(str(p)) for p in chunk], mode=ImageReadMode.RGB, device=dev)
        out = []
        for k, x in enumerate(images, s):
            g = torch.Generator().manual_seed(k)
            top, left, h, w = crop_box(x.shape[2], x.shape[1], g)
            y = F.interpolate(x[None, :, top:top + h, left:left + w].float(), size=(size, size), mode="bilinear",
                              antialias=True)[0].round_().clamp_(0, 255).to(torch.uint8)
            out.append(_finish(y, bool(torch.rand(1, generator=g) < 0.5)))
        torch.stack(out)
    sync()
    return (time.perf_counter() - t) / len(files) * 1e3


# --- whole loaders -------------------------------------------------------------------------
def images_per_s(loader, batches: int, warmup: int = 2) -> float:
    """Images per second over `batches` batches after `warmup` (worker start-up excluded)."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    n, t = 0, time.perf_counter()
    for _ in range(batches):
        n += len(next(it)[0])
    rate = n / (time.perf_counter() - t)
    del it  # shuts the workers down before the next method starts
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--root", type=Path, default=REPO.parent / "data" / "decode-bench")
    p.add_argument("--images", type=int, default=2000, help="images in the generated folder")
    p.add_argument("--noise", type=float, default=6.0, help="std of the Gaussian noise added, in levels")
    p.add_argument("--long-side", type=int, nargs=2, default=[400, 500], help="range of the generated long sides")
    p.add_argument("--size", type=int, nargs="+", default=[224, 128],
                   help="output sizes S; the loaders run at the first")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=10, help="timed batches per loader per round")
    p.add_argument("--files", type=int, default=150, help="files per variant per round (per image part)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip-loaders", action="store_true")
    p.add_argument("--skip-per-image", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(1)

    t = time.perf_counter()
    meta = make_folder(args.root.expanduser().resolve(), args.images, args.noise, tuple(args.long_side))
    made = time.perf_counter() - t
    train = args.root.expanduser().resolve() / "train"
    files = sorted(train.glob("*/*.jpg"))
    files = [files[i] for i in np.random.default_rng(1).permutation(len(files))[:args.files]]
    info = {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "pillow": Image.__version__,
            "torch_threads": torch.get_num_threads(), "workers": args.workers,
            "batch_size": args.batch_size, "folder": {"path": str(train), **meta},
            "load_average_before": [round(v, 1) for v in os.getloadavg()],
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    print(json.dumps(info), f"(folder ready in {made:.1f} s)", flush=True)

    results: dict = {"info": info, "per_image": {}, "loaders": {}}
    for size in [] if args.skip_per_image else args.size:
        boxes = [crop_box(*Image.open(f).size, torch.Generator().manual_seed(k)) for k, f in enumerate(files)]
        reduced = sum(dct_scale(w, h, size) > 1 for _, _, h, w in boxes) / len(boxes)
        timers = {name: functools.partial(per_image_ms, fn) for name, fn in VARIANTS.items()}
        if torch.cuda.is_available():
            timers["nvjpeg"] = nvjpeg_ms
            nvjpeg_ms(files[:8], size)  # CUDA context and nvJPEG handle made before timing
        runs: dict[str, list[float]] = {}
        for _ in range(args.rounds):
            for name, timer in timers.items():
                runs.setdefault(name, []).append(timer(files, size))
        base = statistics.median(runs["pil-full"])
        rows = {}
        print(f"\nS={size}: {reduced:.0%} of the boxes allow a reduced-scale decode; ms per image, "
              f"{len(files)} files x {args.rounds} rounds, 1 thread")
        for name, r in runs.items():
            med = statistics.median(r)
            rows[name] = {"ms": round(med, 3), "min": round(min(r), 3), "max": round(max(r), 3),
                          "images_per_s": round(1e3 / med), "speedup_vs_pil_full": round(base / med, 2)}
            print(f"  {name:10s} {med:7.3f} ms  (min {min(r):.3f}, max {max(r):.3f})  "
                  f"{1e3 / med:6.0f} img/s  {base / med:4.2f}x pil-full", flush=True)
        results["per_image"][size] = {"reduced_fraction": round(reduced, 3), "rows": rows}

    if not args.skip_loaders:
        size, w, bs = args.size[0], args.workers, args.batch_size
        tv_folder = datasets.ImageFolder(str(train), v2.Compose([
            v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor()]))
        tv_float = datasets.ImageFolder(str(train), v2.Compose([
            v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip(), v2.PILToTensor(),
            v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]))
        streamed = StreamingImageFolder(train, train=True, image_size=size)
        pipelines = {
            f"tv-folder W={w}": lambda r: DataLoader(tv_folder, bs, shuffle=True, num_workers=w, drop_last=True),
            f"tv-float W={w}": lambda r: DataLoader(tv_float, bs, shuffle=True, num_workers=w, drop_last=True),
            f"reslab W={w}": lambda r: StreamingLoader(train, bs, train=True, image_size=size, num_workers=w,
                                                       seed=r),
            f"reslab-uint8 W={w}": lambda r: DataLoader(streamed, bs, shuffle=True, num_workers=w, drop_last=True),
        }
        runs = {}
        for r in range(args.rounds):
            for name, make in pipelines.items():
                runs.setdefault(name, []).append(images_per_s(make(r), args.batches))
        base = statistics.median(runs[f"tv-folder W={w}"])
        print(f"\nloaders, S={size}, batch {bs}, {args.batches} timed batches x {args.rounds} rounds; "
              "ratios within each round against the torchvision pipeline with the same output")
        for name, r in runs.items():
            med = statistics.median(r)
            peer = f"tv-float W={w}" if name.startswith(("tv-float", "reslab W")) else f"tv-folder W={w}"
            ratios = [x / y for x, y in zip(r, runs[peer])]
            results["loaders"][name] = {"images_per_s": round(med), "min": round(min(r)), "max": round(max(r)),
                                        "vs_tv_folder": round(med / base, 2), "peer": peer,
                                        "round_ratio_median": round(statistics.median(ratios), 2),
                                        "round_ratios": [round(x, 2) for x in ratios]}
            print(f"  {name:18s} {med:7.0f} img/s  (min {min(r):.0f}, max {max(r):.0f})  {med / base:4.2f}x "
                  f"tv-folder; x {peer} within each round: median {statistics.median(ratios):.2f} "
                  f"({', '.join(f'{x:.2f}' for x in ratios)})", flush=True)
    info["load_average_after"] = [round(v, 1) for v in os.getloadavg()]
    print("load average after:", info["load_average_after"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
