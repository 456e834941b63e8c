"""The data of a run: its train/val/test splits and their loaders.

    splits = load_data(cfg)                              # an image folder, a named dataset, shards
    loader = make_loader(splits.train, cfg, True, device)  # Loader, StreamingLoader or ShardLoader

An image folder is decoded into memory when it fits (`loader=auto`), else
streamed from its files; tar shards are always streamed.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..data import (
    DataWarning,
    ImageFiles,
    Loader,
    MissingSplitError,
    ShardLoader,
    ShardSplit,
    StreamingLoader,
    has_val_folder,
    holdout,
    imagefolder_path,
    load,
    shards_path,
    streamed_split,
    streaming,
)
from ..errors import ReslabError
from ..models import list_models, model_info
from ..runtime import Dist
from .config import TrainConfig


@dataclass
class Splits:
    train: Any  # a Dataset held in memory, the ImageFiles of a streamed folder, or a ShardSplit
    val: Any | None
    test: Any | None
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int, int]  # (C, H, W) the model sees, after resize
    loader: str = "memory"  # how the splits are read: "memory" or "stream"


def input_side(cfg: TrainConfig) -> int | None:
    """The side S of the run's square inputs: resize, else the model's default input."""
    return cfg.resize or (model_info(cfg.model).input_size[-1] if cfg.model in list_models() else None)


def load_data(cfg: TrainConfig, with_test: bool = True, loader: str | None = None,
              device: torch.device | None = None) -> Splits:
    """Train/val/test splits of `cfg.data`: an image folder's val/ when it has train/ and val/, else
    val held out of train (stratified, seeded); tar shards' val shards (none without). loader:
    "memory" or "stream" (default cfg.loader; "auto" chooses by `choose_loader`, for the memory of
    `device`); shards are always streamed."""
    side = input_side(cfg)
    listed: dict[str, Any] = {}
    sharded = shards_path(cfg.data) is not None

    def files(split: str) -> Any:  # each split folder is walked (or manifest read) once
        if split not in listed:
            listed[split] = streamed_split(cfg.data, split)
        return listed[split]

    kind = "stream" if sharded else loader or cfg.loader
    if kind == "auto":
        kind = choose_loader(cfg, side, files, device)
    if kind == "stream":
        read = files
    else:  # photos of different sizes are fitted to the run's input side
        def read(split: str) -> Any:
            return load(cfg.data, split=split, root=cfg.data_dir, fallback_size=side)

    full = read("train")
    if len(full.classes) < 2:
        raise ReslabError(f"{cfg.data} has {len(full.classes)} class ({', '.join(full.classes)}); a classifier needs "
                          "at least 2 class folders")
    if sharded:
        train, val = full, _val_shards(cfg, read)
    else:
        train, val = (full, read("val")) if has_val_folder(cfg.data) else holdout(full, cfg.val_size, cfg.seed)
    test = None
    if with_test:
        try:
            test = read("test")
        except MissingSplitError:  # e.g. one folder of class folders: train and validate on it
            warnings.warn(f"{cfg.data} has no test split (no test/ sub-folder): this run ends without a test "
                          "evaluation; the validation split still picks the model", DataWarning, stacklevel=2)
    if kind == "stream":
        return Splits(train, val, test, list(full.classes), tuple(full.mean), tuple(full.std), (3, side, side),
                    "stream")
    c, h, w = full.images.shape[1:]
    if cfg.resize:
        h = w = cfg.resize
    return Splits(train, val, test, list(full.classes), tuple(full.mean), tuple(full.std), (c, h, w))


def _val_shards(cfg: TrainConfig, read: Callable[[str], Any]) -> Any:
    """The val shards of a shard directory; without them (nothing is held out of train shards)
    no validation split, said in one line unless val_size=0 asked for none."""
    try:
        return read("val")
    except MissingSplitError:
        if cfg.val_size != 0:
            warnings.warn(f"{cfg.data} has no val shards (nothing is held out of the train shards): the run keeps "
                          "its last weights; shard a folder with a val/ sub-folder to validate", DataWarning,
                          stacklevel=3)
        return None


def choose_loader(cfg: TrainConfig, side: int, files: Callable[[str], Any],
                  device: torch.device | None = None) -> str:
    """loader=auto: "stream" for an image folder whose decoded images, N x 3 x S x S bytes over
    all its splits (`files(split)`), exceed `memory_budget(device)`, said in one line; else "memory"."""
    if imagefolder_path(cfg.data) is None:
        return "memory"
    n = 0
    for split in ("train", "val", "test"):
        try:
            n += len(files(split))
        except MissingSplitError:
            pass
    need, budget = n * 3 * side * side, streaming.memory_budget(device)
    if need <= budget:
        return "memory"
    warnings.warn(f"{cfg.data}: {n:,} images at {side}x{side} take {_size(need)} decoded, over the memory budget "
                  f"of {_size(budget)} (half the memory): streaming them from the files (--set loader=memory "
                  "decodes them into memory anyway)", DataWarning, stacklevel=3)
    return "stream"


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def make_loader(ds: Any, cfg: TrainConfig, train: bool, device: torch.device, batch_size: int | None = None,
                dist: Dist | None = None):
    """The loader of a split: `Loader` for a Dataset in memory, `StreamingLoader` for streamed
    ImageFiles, `ShardLoader` for tar shards; with `dist`, batches are this rank's share of every
    global batch."""
    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    batch_size = batch_size or cfg.batch_size
    if isinstance(ds, ImageFiles | ShardSplit):
        stream = StreamingLoader if isinstance(ds, ImageFiles) else ShardLoader
        return stream(ds, batch_size=batch_size, train=train, image_size=input_side(cfg),
                      num_workers=_workers(cfg, world), dtype=torch.float32,
                      channels_last=cfg.channels_last, drop_last=train, seed=cfg.seed, device=device,
                      rank=rank, world=world)
    return Loader(ds, batch_size=batch_size, train=train,
                  augment=cfg.augment if train else None, resize=cfg.resize, dtype=torch.float32,
                  channels_last=cfg.channels_last, drop_last=train, seed=cfg.seed, device=device,
                  rank=rank, world=world)


def _workers(cfg: TrainConfig, world: int) -> int:
    """Decode processes per rank: cfg.workers, else the machine's cores shared by its ranks, at most 8."""
    if cfg.workers is not None:
        return cfg.workers
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return max(1, min(8, (os.cpu_count() or 1) // max(local, 1)))


def model_args_for(cfg: TrainConfig, data: Splits) -> dict[str, Any]:
    """The model's arguments: the classifier and input channels sized from the data."""
    fitted = {"num_classes": len(data.classes), "in_chans": data.image_size[0]}
    for key, value in fitted.items():
        if key in cfg.model_args and cfg.model_args[key] != value:
            raise ReslabError(f"model_args {key}={cfg.model_args[key]!r}, but {cfg.data} has {value} "
                              f"{'classes' if key == 'num_classes' else 'channels'}; drop it (it is sized from the data)")
    return {**fitted, **cfg.model_args}
