"""Evaluate and predict from a checkpoint or weights file alone.

A reslab checkpoint carries the model name and arguments, the class names,
the normalization and the input size, so nothing else is needed; so do the
files of the families `reslab.weights` knows (akamaster's and chenyaofo's
CIFAR-10 nets, torchvision's and timm's ImageNet nets):

    result, trained = evaluate_checkpoint("runs/r20", data="cifar10")
    preds = predict_files("resnet20-12fca82f.th", ["cat.jpg"], topk=3)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .backends import DEPLOYED_SUFFIXES, Deployed, load_deployed
from .data import (
    decode_image,
    has_val_folder,
    holdout,
    imagefolder_path,
    load,
    shards_path,
    streamed_split,
)
from .data.datasets import IMAGE_EXTENSIONS, Dataset
from .data.loader import Normalize, resize_batch
from .data.streaming import read_eval
from .errors import ReslabError
from .evaluate import EvalResult, evaluate
from .runtime import amp_dtype
from .train.config import TrainConfig
from .train.record import Trained
from .train.splits import make_loader
from .weights import load_ready


def evaluate_checkpoint(path: str | Path, data: str | None = None, split: str = "test",
                        data_dir: str | None = None, batch_size: int = 512, flip_tta: bool = False,
                        device: str = "cpu") -> tuple[EvalResult, Trained]:
    """Top-1/top-5, loss, per-class accuracy and confusion matrix of a checkpoint on a split.

    path: a run directory (its chosen checkpoint), a checkpoint, or a weights file that records
    or is known by its classes and normalization. data: a data name for `reslab.data.load` (the
    run's own data when None); split: "train", "test" or "val" (the run's validation hold-out,
    rebuilt from its seed and size).
    """
    trained = inference_model(path, device, need_classes=False)
    loader = split_loader(trained, data, split, data_dir, batch_size, torch.device(device))
    if trained.record.classes is None:  # a file that records none: the data's (as many, split_loader checked)
        trained = dataclasses.replace(trained, record=dataclasses.replace(trained.record,
                                                                          classes=list(loader.dataset.classes)))
    amp = amp_dtype(trained.config, torch.device(device)) if trained.config else None
    return evaluate(trained.model, loader, len(trained.record.classes), amp, flip_tta=flip_tta), trained


def inference_model(path: str | Path, device: str = "cpu", need_classes: bool = True) -> Trained:
    """The model `path` means for evaluation and prediction, with what it needs to see images
    as it was trained: its input size and normalization (and class names when `need_classes`)."""
    return load_ready(path, device, need_classes)


def split_loader(trained: Trained, data: str | None = None, split: str = "test", data_dir: str | None = None,
                 batch_size: int = 512, device: str | torch.device = "cpu", limit: int | None = None):
    """Batches (x: (N, C, H, W) float, normalized as the model was trained; y: (N,) int64) of
    one split of `data` (the run's own data when None), resized to the model's input; an image
    folder or tar shards of a streamed run are streamed as its validation was (resize S/0.875,
    center crop S).

    limit: at most this many images, the same seeded sample every time, in the split's order.
    """
    if trained.config is None and data is None:
        raise ReslabError("this weights file records no data set; name one with --data")
    record = trained.record
    cfg = trained.config or TrainConfig(data=data, val_size=0)
    name = data or cfg.data
    root, size = data_dir or cfg.data_dir, record.image_size[-1]
    sharded = shards_path(name) is not None
    streamed = record.loader == "stream" and (imagefolder_path(name) is not None or sharded)

    def read(part: str) -> Any:
        return streamed_split(name, part) if streamed else load(name, split=part, root=root, fallback_size=size)

    if split == "val" and trained.config is None:
        raise ReslabError("a weights file records no validation split; use --split test or train")
    if split == "val":
        # the run's validation split: an image folder's val/ or the val shards, else the hold-out,
        # rebuilt from its seed and size
        ds = read("val") if has_val_folder(name) or sharded else holdout(read("train"), cfg.val_size, cfg.seed)[1]
        if ds is None:
            raise ReslabError("this run held out no validation split; use --split test")
    else:
        ds = read(split)
    _check_compatible(ds, trained)
    if limit is not None and limit < len(ds):
        keep = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0))[:limit].sort().values
        sampled = ds.subset(keep) if streamed else dataclasses.replace(ds, images=ds.images[keep],
                                                                       labels=ds.labels[keep])
        ds = dataclasses.replace(sampled, meta={**ds.meta, "sample_of": len(ds)})
    if streamed:
        loader_cfg = cfg.replace(resize=size, channels_last=False)
    else:
        loader_cfg = cfg.replace(resize=record.image_size[1] if ds.images.shape[-1] != record.image_size[2] else None,
                                 channels_last=False)
    # normalize with the checkpoint's statistics, not the evaluated split's own
    ds = dataclasses.replace(ds, mean=record.mean, std=record.std)
    return make_loader(ds, loader_cfg, False, torch.device(device), batch_size=batch_size)


def _check_compatible(ds: Any, trained: Trained) -> None:
    record = trained.record
    channels = ds.images.shape[1] if isinstance(ds, Dataset) else 3  # streamed files are read as RGB
    if channels != record.image_size[0]:
        raise ReslabError(f"the model takes {record.image_size[0]}-channel images; {ds.name} has {channels}")
    if record.classes is None:  # a file that records none: the data's, if as many
        if len(ds.classes) != trained.model.num_classes:
            raise ReslabError(f"{ds.name} has {len(ds.classes)} classes, the model {trained.model.num_classes}")
    elif list(ds.classes) != record.classes:
        raise ReslabError(f"{ds.name} has classes {list(ds.classes)[:5]}..., the checkpoint "
                          f"{record.classes[:5]}...: not the data this model was trained on")


def image_files(inputs: list[str | Path]) -> list[Path]:
    """Files as given, and the image files inside directories (recursively, sorted)."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise ReslabError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {item}")
            files.extend(found)
        elif item.exists():
            files.append(item)
        else:
            raise ReslabError(f"no such image file or directory: {item}")
    return files


def read_image(path: Path, image_size: tuple[int, int, int], streamed: bool = False) -> Tensor:
    """(C, H, W) uint8 at the model's size, fitted as the training cache fits photos (shorter
    side, then center crop); grayscale or RGB as the model expects. streamed: as a streamed
    run evaluated (shorter side to S/0.875, then the center S x S)."""
    from PIL import Image, UnidentifiedImageError

    c, h, w = image_size
    try:
        if streamed and c == 3 and h == w:
            return read_eval(path, h)
        a = decode_image(path, size=h if (h == w) else None, mode="L" if c == 1 else "RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise ReslabError(f"cannot read image {path}: {e}") from None
    x = torch.from_numpy(a.copy()).reshape(a.shape[0], a.shape[1], c).permute(2, 0, 1)
    if tuple(x.shape[1:]) != (h, w):
        x = F.interpolate(x[None].float(), size=(h, w), mode="bilinear", antialias=True)[0].round().to(torch.uint8)
    return x.contiguous()


@torch.no_grad()
def predict_tensor(trained: Trained | Deployed, images: Tensor) -> Tensor:
    """images: (N, C, H, W) uint8 -> (N, K) class probabilities (float32)."""
    return F.softmax(trained.model(normalize(trained, images)).float(), dim=1)


def normalize(trained: Trained | Deployed, images: Tensor) -> Tensor:
    """(N, C, H, W) uint8 -> float on the model's device, normalized as the model was trained."""
    param = next(trained.model.parameters(), None) if isinstance(trained.model, torch.nn.Module) else None
    return Normalize(trained.record.mean, trained.record.std, param.device if param is not None else "cpu")(images)


def model_input(trained: Trained | Deployed, images: Tensor) -> Tensor:
    """(N, C, H, W) uint8 of a split, as a loader of `split_loader` decodes them (`decoded`) ->
    the batch it makes of them: normalized as the model was trained, resized to the model's
    input as `Loader` resizes when their size is not its."""
    x, size = normalize(trained, images), trained.record.image_size
    return x if tuple(x.shape[-2:]) == tuple(size[1:]) else resize_batch(x, size[1])


def predict_files(checkpoint: str | Path, inputs: list[str | Path], topk: int = 5,
                  batch_size: int = 256, device: str = "cpu") -> list[dict[str, Any]]:
    """For each image: {"file", "top": [{"class", "prob"}, ...]} with the `topk` likeliest classes.

    checkpoint: a run directory or checkpoint, or a file `reslab export` wrote for another
    runtime (.xml for OpenVINO, .onnx for ONNX Runtime; run on the CPU).
    """
    if Path(checkpoint).suffix in DEPLOYED_SUFFIXES:
        trained = load_deployed(checkpoint)
    else:
        trained = inference_model(checkpoint, device)
    files, record = image_files(inputs), trained.record
    streamed = record.loader == "stream"  # exported files record it too
    k = max(1, min(topk, len(record.classes)))
    results = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        probs = predict_tensor(trained, torch.stack([read_image(p, record.image_size, streamed) for p in chunk]))
        p, idx = probs.topk(k, dim=1)
        for f, pr, ix in zip(chunk, p.tolist(), idx.tolist(), strict=True):
            results.append({"file": str(f), "top": [{"class": record.classes[i], "prob": round(q, 6)}
                                                    for i, q in zip(ix, pr, strict=True)]})
    return results
