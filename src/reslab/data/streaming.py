"""ImageNet-style streaming: folders too large for memory, images of any size.

Worker processes decode each image with PIL and crop it to a fixed size S
(training: RandomResizedCrop + horizontal flip; evaluation: resize the
shorter side to S / 0.875 + center crop S, torchvision's reference recipe),
returning uint8 tensors; normalization and the float conversion happen on
whole batches on the device, as in `Loader`. An unreadable image never stops
a worker: it is dropped from its batch, and the loader warns with the count
and names at the end of each pass. The random crop of an image is a pure
function of (seed, epoch, index), and the order of an epoch of (seed, epoch),
so a pass can restart at any batch. Under torchrun each rank reads only its
share of every global batch (the images `Loader` gives that rank).

`reslab train` streams when `loader=stream`, or with `loader=auto` when the
decoded images would not fit `memory_budget()`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from ..errors import ReslabError
from ..runtime import physical_memory
from .datasets import (
    DataWarning,
    FolderScan,
    _warn_skipped,
    check_same_classes,
    folder_classes,
    imagefolder_path,
    open_image,
    paired_train_folder,
    scan_folder,
    split_folder,
)
from .loader import EpochCursor, Normalize, _seed

# Photos' statistics (torchvision's): streamed data is normalized with them, as pretrained
# torchvision and timm weights expect; no pass over the files is needed to compute others.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP = 0.875  # evaluation center-crops this fraction of the resized shorter side: 224 of 256
MEMORY_FRACTION = 0.5  # of the machine's (and the GPU's) memory the decoded uint8 images may take


def eval_resize(image_size: int) -> int:
    """The shorter side an image is resized to before the evaluation center crop: S / 0.875."""
    return round(image_size / EVAL_CROP)


def memory_budget(device: torch.device | None = None) -> int:
    """Bytes that a run's decoded uint8 images may take in memory: half of this machine's
    memory, and of the GPU's when they go to one (`Loader` holds them on the device)."""
    total = physical_memory()
    budget = total * MEMORY_FRACTION if total else float("inf")
    if device is not None and device.type == "cuda":
        budget = min(budget, torch.cuda.get_device_properties(device).total_memory * MEMORY_FRACTION)
    return int(min(budget, 2**62))


@dataclass
class ImageFiles:
    """The image files of one split of a class-folder tree, unread until streamed.

    indices: (N,) int64 positions in scan.paths; labels: (N,) int64, theirs; mean/std:
    per-channel, in [0, 1] units, what the loader normalizes with. Sized, labelled and
    subset like a `Dataset`, so `holdout` splits it the same way.
    """

    scan: FolderScan
    indices: Tensor
    name: str
    split: str = "train"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    labels: Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.indices = torch.as_tensor(self.indices, dtype=torch.int64)
        self.labels = torch.as_tensor(self.scan.labels, dtype=torch.int64)[self.indices]

    @classmethod
    def of_folder(cls, root: str | os.PathLike, name: str | None = None, split: str = "train") -> ImageFiles:
        """Every image of `root`/<class>/**."""
        scan = scan_folder(root)
        return cls(scan, torch.arange(len(scan.paths)), name or str(scan.root), split)

    @property
    def root(self) -> Path:
        return self.scan.root

    @property
    def classes(self) -> list[str]:
        return self.scan.classes

    def __len__(self) -> int:
        return len(self.indices)

    def path(self, i: int) -> str:
        """Item i's file, relative to root."""
        return self.scan.paths[int(self.indices[i])]

    def class_counts(self) -> Tensor:
        """(num_classes,) int64: images per class."""
        return torch.bincount(self.labels, minlength=len(self.classes))

    def subset(self, indices: Tensor | Sequence[int], split: str | None = None) -> ImageFiles:
        """The files at `indices` (positions in this split)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return replace(self, indices=self.indices[idx], split=self.split if split is None else split)


def folder_files(name: str, split: str = "train") -> ImageFiles:
    """The files of `split` of the image folder `name` ("imagefolder:PATH"), found as
    `load` finds them (PATH/<split>, else PATH itself for train); an evaluation split's
    classes must be the train folder's (one line otherwise)."""
    base = imagefolder_path(name)
    if base is None:
        raise ReslabError(f"only image folders (imagefolder:PATH) stream; {name} is held in memory "
                          "(loader=auto or memory)")
    folder = split_folder(base, split)
    files = ImageFiles.of_folder(folder, f"imagefolder:{base}", split)
    _warn_skipped(folder, [], files.scan.ignored)
    if (train_folder := paired_train_folder(base, folder, split)) is not None:
        check_same_classes(folder, files.classes, train_folder, folder_classes(train_folder))
    return files


def read_eval(path: str | os.PathLike | BinaryIO, image_size: int, resize_size: int | None = None) -> Tensor:
    """(3, S, S) uint8: an image file (or open binary file) as streamed evaluation sees it,
    shorter side resized to `resize_size` (S / 0.875 by default), then the center S x S."""
    resize_size = resize_size or eval_resize(image_size)
    im = open_image(path, "RGB", draft=resize_size)
    im = v2.functional.center_crop(v2.functional.resize(im, [resize_size], antialias=True), [image_size])
    return v2.functional.pil_to_tensor(im)


class ImageCrops:
    """What a streamed image becomes: (3, S, S) uint8, or None if it cannot be read.

    train: RandomResizedCrop(S, scale=(0.08, 1)) + flip, drawn from (seed, epoch, index); else
    `read_eval` (resize the shorter side to `resize_size`, default S / 0.875, e.g. 256 for 224,
    and center-crop S). The loaders set `epoch` before each pass.
    """

    def __init__(self, train: bool, image_size: int = 224, resize_size: int | None = None, seed: int = 0):
        self.train = train
        self.image_size = image_size
        self.resize_size = resize_size or eval_resize(image_size)
        self.seed = seed
        self.epoch = 0
        self.transform = v2.Compose([v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()])

    def decode(self, source: str | os.PathLike | BinaryIO, i: int) -> Tensor | None:
        """Image file (or open binary file) `source` as item `i` of this epoch."""
        try:
            if not self.train:
                return read_eval(source, self.image_size, self.resize_size)
            im = open_image(source, "RGB")
            # torchvision draws from the global RNG; seed a forked copy so the
            # crop depends on (seed, epoch, i) alone and the caller's RNG is untouched.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(_seed(self.seed, self.epoch, i))
                return v2.functional.pil_to_tensor(self.transform(im))
        except Exception:  # PIL signals bad files with many types; the batch drops this one
            return None


class StreamingImageFolder(ImageCrops, torch.utils.data.Dataset):
    """Image files decoded per item: (uint8 (3, S, S) or None if unreadable, label, index).

    source: `ImageFiles`, or a folder `root`/<class>/<image> (classes sorted by name); each
    file as `ImageCrops` makes it.
    """

    def __init__(self, source: str | os.PathLike | ImageFiles, train: bool, image_size: int = 224,
                 resize_size: int | None = None, seed: int = 0):
        super().__init__(train, image_size, resize_size, seed)
        self.files = source if isinstance(source, ImageFiles) else ImageFiles.of_folder(source)
        self.root = self.files.root
        self.classes = self.files.classes

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor | None, int, int]:
        return self.decode(self.root / self.files.path(i), i), int(self.files.labels[i]), i


def _collate(items: list[tuple[Tensor | None, int, int]]) -> tuple[Tensor | None, Tensor, list[int]]:
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [i for x, _, i in items if x is None]
    if not good:
        return None, torch.empty(0, dtype=torch.int64), bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good]), bad


def check_shares(batch_size: int, image_size: int, rank: int, world: int, drop_last: bool | None) -> None:
    """One line when a streamed loader's batch cannot be shared between `world` ranks as asked."""
    if batch_size < 1 or image_size < 1:
        raise ReslabError(f"batch_size and image_size must be positive, got {batch_size}, {image_size}")
    if not 0 <= rank < world:
        raise ReslabError(f"rank must be in [0, {world}), got {rank}")
    if world > batch_size:
        raise ReslabError(f"batch_size {batch_size} leaves no image to some of the {world} ranks")
    if world > 1 and drop_last is False:
        raise ReslabError("ranks share whole batches only: drop_last must be True with world > 1")


def share(batch: Sequence[int] | Tensor, rank: int, world: int) -> Sequence[int] | Tensor:
    """Rank `rank`'s share of a global batch: its items rank, rank + world, ..."""
    return batch[rank::world]


class DeviceBatches:
    """uint8 (B, 3, S, S) CPU batches to what the model reads: (x - mean) / std as `dtype` on
    `device`, channels_last if asked; one float conversion and a multiply-add per batch."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype,
                 channels_last: bool, device: torch.device):
        if len(mean) != 3 or len(std) != 3:
            raise ReslabError("mean and std need 3 values (images are converted to RGB)")
        self.dtype, self.channels_last, self.device = dtype, channels_last, device
        self.normalize = Normalize(mean, std, device)

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self.normalize(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.dtype), y.to(self.device, non_blocking=True)


def warn_unreadable(where: str | os.PathLike, epoch: int, names: list[str]) -> None:
    """The one-line warning of a streamed pass that skipped unreadable images: count and first names."""
    if names:
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        warnings.warn(f"{where}: skipped {len(names)} unreadable image(s) in epoch {epoch}: "
                      f"{', '.join(names[:5])}{more}", DataWarning, stacklevel=3)


class StreamingLoader(EpochCursor):
    """Batches (x, y) from a large image folder, decoded by `num_workers` processes.

    source: `ImageFiles` (a split, e.g. held out by `holdout`) or a folder path. x: (B, 3,
    S, S) `dtype` on `device`, normalized with mean/std (the files', else ImageNet's),
    channels_last if asked; y: (B,) int64. The order is a seeded permutation per epoch
    when training; `set_epoch` as for `Loader`. With world > 1 (torchrun) the pass yields
    rank `rank`'s share of every global batch of `batch_size`: the images at positions
    rank, rank + world, ... of the batch, so the ranks read disjoint images and together
    the whole epoch (less the last partial batch when drop_last). B is smaller where
    unreadable images were dropped; a training batch (share) with no readable image stops
    the run with one line.
    """

    def __init__(self, source: str | os.PathLike | ImageFiles, batch_size: int = 256, train: bool = True,
                 image_size: int = 224, resize_size: int | None = None,
                 num_workers: int | None = None, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, drop_last: bool | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", rank: int = 0, world: int = 1):
        check_shares(batch_size, image_size, rank, world, drop_last)
        files = source if isinstance(source, ImageFiles) else ImageFiles.of_folder(Path(source).expanduser())
        self.dataset = StreamingImageFolder(files, train, image_size, resize_size, seed)
        self.batch_size = batch_size
        self.train = train
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.drop_last = train if drop_last is None else drop_last
        self.dtype = dtype
        self.channels_last = channels_last
        self.seed = seed
        self.device = torch.device(device)
        self.rank, self.world = rank, world
        self.output = DeviceBatches(files.mean if mean is None else mean, files.std if std is None else std,
                                    dtype, channels_last, self.device)
        self.epoch = 0
        self.start_batch = 0
        self.skipped: list[str] = []  # unreadable files met in the last pass

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def order(self, epoch: int) -> Tensor:
        """(N,) int64: the dataset order of `epoch` (a seeded permutation when training)."""
        n = len(self.dataset)
        if not self.train:
            return torch.arange(n)
        return torch.randperm(n, generator=torch.Generator().manual_seed(_seed(self.seed, epoch)))

    def shares(self, epoch: int, start: int = 0) -> list[list[int]]:
        """This rank's dataset indices of each batch of `epoch` from batch `start` on."""
        order, b = self.order(epoch), self.batch_size
        return [share(order[i * b:(i + 1) * b], self.rank, self.world).tolist() for i in range(start, len(self))]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.epoch, self.start_batch
        self.dataset.epoch = epoch
        loader = DataLoader(self.dataset, batch_sampler=self.shares(epoch, start),
                            num_workers=self.num_workers, collate_fn=_collate,
                            # its own generator: the workers' base seed never draws from
                            # (or shifts) the caller's global RNG
                            generator=torch.Generator().manual_seed(_seed(self.seed, epoch, 2)),
                            pin_memory=self.device.type == "cuda",
                            persistent_workers=False, prefetch_factor=4 if self.num_workers else None)
        bad: list[int] = []
        for index, (x, y, b) in enumerate(loader, start):
            bad += b
            if x is None:
                if self.train:  # a skipped step would shift the run's position in the epoch
                    raise ReslabError(f"{self.dataset.root}: none of the {len(b)} images of batch {index} of "
                                      f"epoch {epoch} could be read (e.g. {self.dataset.files.path(b[0])}); "
                                      "fix or remove the unreadable files")
                continue
            yield self.output(x, y)
        self.skipped = [self.dataset.files.path(i) for i in sorted(bad)]
        warn_unreadable(self.dataset.root, epoch, self.skipped)
        self.epoch, self.start_batch = epoch + 1, 0


def default_workers() -> int:
    """Decode processes of a streamed loader when not given: one per core, at most 8."""
    return min(os.cpu_count() or 1, 8)
