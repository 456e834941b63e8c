"""ImageNet-style streaming: folders too large for memory, images of any size.

Worker processes decode each image and crop it to a fixed size S (training:
RandomResizedCrop + horizontal flip, the box drawn before decoding so that
only what it needs is decoded, see `read_train`; evaluation: resize the
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

import io
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, default_collate
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms import v2

from ..errors import ReslabError, is_whole
from ..runtime import physical_memory
from .datasets import (
    DataWarning,
    FolderScan,
    _warn_skipped,
    check_same_classes,
    folder_classes,
    imagefolder_path,
    load_image,
    open_image,
    paired_train_folder,
    scan_folder,
    split_folder,
)
from .loader import EpochCursor, Normalize, _seed, check_ranks, share

# Photos' statistics (torchvision's): streamed data is normalized with them, as pretrained
# torchvision and timm weights expect; no pass over the files is needed to compute others.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EVAL_CROP = 0.875  # evaluation center-crops this fraction of the resized shorter side: 224 of 256
MEMORY_FRACTION = 0.5  # of the machine's (and the GPU's) memory the decoded uint8 images may take
# torchvision's RandomResizedCrop defaults: the box's share of the image area and its aspect ratio
CROP_SCALE = (0.08, 1.0)
CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_LOG_RATIO = tuple(torch.log(torch.tensor(CROP_RATIO)).tolist())  # in float32, as torchvision takes it


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
    per-channel, in [0, 1] units, what the loader normalizes with; meta: as a `Dataset`'s
    (e.g. "sample_of"). Sized, labelled and subset like a `Dataset`, so `holdout` splits it
    the same way.
    """

    scan: FolderScan
    indices: Tensor
    name: str
    split: str = "train"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    meta: dict[str, Any] = field(default_factory=dict)
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


def crop_box(width: int, height: int, generator: torch.Generator) -> tuple[int, int, int, int]:
    """(top, left, height, width) in pixels: a RandomResizedCrop box of a width x height image,
    drawn from `generator` as torchvision's `RandomResizedCrop` draws it from the global RNG (the
    same draws in the same order, so the same box for the same generator state)."""
    area = width * height
    for _ in range(10):
        target = area * torch.empty(1).uniform_(*CROP_SCALE, generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(*_LOG_RATIO, generator=generator).item())
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - w + 1, (1,), generator=generator))
            return top, left, h, w
    # ten misses: the largest central box of an allowed aspect ratio
    w, h = width, height
    if width / height < CROP_RATIO[0]:
        h = round(width / CROP_RATIO[0])
    elif width / height > CROP_RATIO[1]:
        w = round(height * CROP_RATIO[1])
    return (height - h) // 2, (width - w) // 2, h, w


def dct_scale(width: int, height: int, size: int) -> int:
    """The largest JPEG decode reduction (1, 2, 4 or 8) at which a width x height region still
    spans at least `size` pixels each way: the reduced decode keeps at least as many pixels of
    the box as the output has."""
    return next((f for f in (8, 4, 2) if min(width, height) >= f * size), 1)


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int] | None:
    """(marker, width, height, components) of a JPEG's frame header, read from the file's bytes
    without decoding; None if `data` is not a JPEG or this plain scan does not find the header."""
    if data[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 10 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return (marker, int.from_bytes(data[i + 7:i + 9], "big"), int.from_bytes(data[i + 5:i + 7], "big"),
                    data[i + 9])
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
        elif marker in (0xD9, 0xDA):  # end of image, or a scan, before any frame header
            return None
        else:
            i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


# Huffman-coded baseline, extended and progressive frames: the JPEGs decoded by torchvision
_HUFFMAN_FRAMES = (0xC0, 0xC1, 0xC2)


def _pil_resized_crop(opened, box: tuple[int, int, int, int], f: int, size: int) -> Tensor:
    """(3, size, size) uint8: `box` (top, left, height, width in the file's pixels) of an opened
    PIL image, a JPEG decoded at 1/f of its size, cropped and resized; the image is closed."""
    top, left, h, w = box
    with opened:
        if f > 1 and opened.draft("RGB", (opened.width // f, opened.height // f)) is None:
            f = 1  # a file PIL cannot decode at a reduced scale
        im = load_image(opened, "RGB")
    # the box in the decoded image's pixels: whole pixels cropped, the fraction resized away
    x0, y0 = left // f, top // f
    fine = (left / f - x0, top / f - y0, (left + w) / f - x0, (top + h) / f - y0)
    im = im.crop((x0, y0, math.ceil((left + w) / f), math.ceil((top + h) / f)))
    return v2.functional.pil_to_tensor(im.resize((size, size), Image.BILINEAR, box=fine))


def read_train(source: str | os.PathLike | BinaryIO, image_size: int, generator: torch.Generator) -> Tensor:
    """(3, S, S) uint8: an image file (or open binary file) as streamed training sees it, torchvision's
    RandomResizedCrop(S) (bilinear, antialiased) then a horizontal flip with probability 1/2,
    both drawn from `generator` in torchvision's order.

    The box is drawn from the size in the file's header, before any pixel is decoded; then only
    what it needs is decoded. A JPEG whose box spans at least 2S pixels each way is decoded at the
    largest DCT reduction (1/2, 1/4, 1/8) that still gives the box S pixels a side (PIL `draft`);
    another color JPEG at full scale by torchvision's libjpeg-turbo decoder, cropped and resized
    as a tensor (faster than PIL on 400-500 px photos: benchmarks/RESULTS_data.md); any other
    file by PIL, converted as `open_image` converts it. Within a level or two of a full-scale
    decode + crop of the same box.
    """
    if hasattr(source, "read"):
        data = source.read()
    else:
        with open(source, "rb") as file:
            data = file.read()
    frame = _jpeg_frame(data)
    opened = None
    if frame is not None and frame[0] in _HUFFMAN_FRAMES and frame[3] == 3 and min(frame[1:3]) > 0:
        width, height = frame[1:3]
    else:  # PIL reads the header (and checks the size against its decompression-bomb limit)
        opened = Image.open(io.BytesIO(data))
        width, height = opened.size
    top, left, h, w = crop_box(width, height, generator)
    flip = bool(torch.rand(1, generator=generator) < 0.5)
    f = dct_scale(w, h, image_size) if frame is not None else 1
    if opened is None and f == 1:
        x = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
        # (3, H, W) strided over (H, W, 3): cropped, made channels_last, the layout for which
        # torch's antialiased uint8 resize has its fast kernel
        x = x[:, top:top + h, left:left + w].unsqueeze(0).contiguous(memory_format=torch.channels_last)
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)[0]
    else:
        x = _pil_resized_crop(opened if opened is not None else Image.open(io.BytesIO(data)),
                              (top, left, h, w), f, image_size)
    return x.flip(-1) if flip else x


class ImageCrops:
    """What a streamed image becomes: (3, S, S) uint8, or None if it cannot be read.

    train: `read_train`, RandomResizedCrop(S, scale=(0.08, 1)) + flip drawn from (seed, epoch, index); else
    `read_eval` (resize the shorter side to `resize_size`, default S / 0.875, e.g. 256 for 224,
    and center-crop S). The loaders set `epoch` before each pass.
    """

    def __init__(self, train: bool, image_size: int = 224, resize_size: int | None = None, seed: int = 0):
        self.train = train
        self.image_size = image_size
        self.resize_size = resize_size or eval_resize(image_size)
        self.seed = seed
        self.epoch = 0

    def decode(self, source: str | os.PathLike | BinaryIO, i: int) -> Tensor | None:
        """Image file (or open binary file) `source` as item `i` of this epoch."""
        try:
            if not self.train:
                return read_eval(source, self.image_size, self.resize_size)
            # its own generator: the crop depends on (seed, epoch, i) alone, the global RNG is untouched
            return read_train(source, self.image_size, torch.Generator().manual_seed(_seed(self.seed, self.epoch, i)))
        except Exception:  # PIL and torchvision signal bad files with many types; the batch drops this one
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

    @property
    def meta(self) -> dict[str, Any]:
        return self.files.meta

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor | None, int, int]:
        return self.decode(self.root / self.files.path(i), i), int(self.files.labels[i]), i


def _collate(items: list[tuple[Tensor | None, int, int]]) -> tuple[Tensor | None, Tensor, list[int]]:
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [i for x, _, i in items if x is None]
    if not good:
        return None, torch.empty(0, dtype=torch.int64), bad
    # default_collate stacks straight into shared memory in a worker: no copy on the way out
    return default_collate([x for x, _ in good]), torch.tensor([y for _, y in good]), bad


def check_shares(batch_size: int, image_size: int, rank: int, world: int, drop_last: bool | None) -> None:
    """One line when a streamed loader's batch cannot be shared between `world` ranks as asked."""
    if not (is_whole(batch_size, 1) and is_whole(image_size, 1)):
        raise ReslabError(f"batch_size and image_size must be positive, got {batch_size}, {image_size}")
    check_ranks(batch_size, rank, world)
    if world > 1 and drop_last is False:
        raise ReslabError("ranks share whole batches only: drop_last must be True with world > 1")


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


def stack_decoded(images: Sequence[Tensor | None], names: Sequence[str], where: str | os.PathLike,
                  image_size: int) -> Tensor:
    """(n, 3, S, S) uint8: decoded images stacked; one line naming those that could not be read."""
    bad = [name for x, name in zip(images, names, strict=True) if x is None]
    if bad:
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        raise ReslabError(f"{where}: cannot read {', '.join(bad[:5])}{more}")
    return torch.stack(list(images)) if images else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)


def warn_unreadable(where: str | os.PathLike, epoch: int, names: list[str]) -> None:
    """The one-line warning of a streamed pass that skipped unreadable images: count and first names."""
    if names:
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        warnings.warn(f"{where}: skipped {len(names)} unreadable image(s) in epoch {epoch}: "
                      f"{', '.join(names[:5])}{more}", DataWarning, stacklevel=3)


# a pass's batch: x uint8 (None where no image of it could be read), y, (id, name) of its unreadable images
StreamedBatch = tuple[Tensor | None, Tensor, list[tuple[int, str]]]


class StreamCursor(EpochCursor):
    """The epoch cursor of the streamed loaders (`StreamingLoader`, `shards.ShardLoader`).

    It checks and holds what they share (`check_shares`; drop_last defaults to `train`, and
    `num_workers` to `default_workers`), has `num_workers` processes decode each pass from batch
    `start_batch` of epoch `epoch` on, stops a training pass in one line at a batch with no readable
    image, warns with the unreadable ones at the end, and advances the epoch. A subclass sets
    `dataset`, `crops` and `output` and says how a pass reads its batches (`_batches`) and what it
    keeps of their unreadable images (`_unreadable`).
    """

    remedy: str  # the end of the line that stops a training pass: what to do about unreadable images

    def __init__(self, batch_size: int, train: bool, image_size: int, num_workers: int | None,
                 drop_last: bool | None, seed: int, device: str | torch.device, rank: int, world: int):
        check_shares(batch_size, image_size, rank, world, drop_last)
        self.batch_size = batch_size
        self.train = train
        self.num_workers = default_workers() if num_workers is None else num_workers
        self.drop_last = train if drop_last is None else drop_last
        self.seed = seed
        self.device = torch.device(device)
        self.rank, self.world = rank, world
        self.epoch = 0
        self.start_batch = 0
        self.skipped: list[str] = []  # the unreadable images met in the last pass, by name (path, SHARD:KEY.ext)
        self.unreadable: list[int] = []  # and their dataset positions

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def _decoders(self, data: torch.utils.data.Dataset, epoch: int, **batching: Any) -> DataLoader:
        """A DataLoader of `data` in `num_workers` processes (none: this one), batched as `batching` says."""
        return DataLoader(data, num_workers=self.num_workers, **batching,
                          # its own generator: the workers' base seed never draws from
                          # (or shifts) the caller's global RNG
                          generator=torch.Generator().manual_seed(_seed(self.seed, epoch, 2)),
                          pin_memory=self.device.type == "cuda",
                          persistent_workers=False, prefetch_factor=4 if self.num_workers else None)

    def _batches(self, epoch: int, start: int) -> Iterator[StreamedBatch]:
        """This rank's batches of `epoch` from batch `start` on, in order."""
        raise NotImplementedError

    def _unreadable(self, bad: list[tuple[int, str]]) -> tuple[list[str], list[int]]:
        """(skipped, unreadable) of a pass from the (id, name) of the unreadable images it met, in order."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.epoch, self.start_batch
        self.crops.epoch = epoch
        bad: list[tuple[int, str]] = []
        for index, (x, y, unread) in enumerate(self._batches(epoch, start), start):
            bad += unread
            if x is None:
                if self.train:  # a skipped step would shift the run's position in the epoch
                    raise ReslabError(f"{self.dataset.root}: none of the {len(unread)} images of batch {index} of "
                                      f"epoch {epoch} could be read (e.g. {unread[0][1]}); {self.remedy}")
                continue
            yield self.output(x, y)
        self.skipped, self.unreadable = self._unreadable(bad)
        warn_unreadable(self.dataset.root, epoch, self.skipped)
        self.epoch, self.start_batch = epoch + 1, 0


class StreamingLoader(StreamCursor):
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

    remedy = "fix or remove the unreadable files"

    def __init__(self, source: str | os.PathLike | ImageFiles, batch_size: int = 256, train: bool = True,
                 image_size: int = 224, resize_size: int | None = None,
                 num_workers: int | None = None, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, drop_last: bool | None = None, seed: int = 0,
                 device: str | torch.device = "cpu", rank: int = 0, world: int = 1):
        super().__init__(batch_size, train, image_size, num_workers, drop_last, seed, device, rank, world)
        files = source if isinstance(source, ImageFiles) else ImageFiles.of_folder(Path(source).expanduser())
        self.dataset = self.crops = StreamingImageFolder(files, train, image_size, resize_size, seed)
        self.output = DeviceBatches(files.mean if mean is None else mean, files.std if std is None else std,
                                    dtype, channels_last, self.device)

    def decoded(self, positions: Sequence[int] | Tensor) -> Tensor:
        """(n, 3, S, S) uint8 on the CPU: the files at dataset `positions`, each read alone as the
        evaluation pass decodes it (`read_eval`), before normalizing; one line naming any that
        cannot be read."""
        self._check_evaluation("decoded")
        positions = torch.as_tensor(positions, dtype=torch.int64).tolist()
        return stack_decoded([self.dataset[i][0] for i in positions],
                             [self.dataset.files.path(i) for i in positions], self.dataset.root,
                             self.dataset.image_size)

    def shares(self, epoch: int, start: int = 0) -> list[list[int]]:
        """This rank's dataset indices of each batch of `epoch` from batch `start` on."""
        order, b = self.order(epoch), self.batch_size
        return [share(order[i * b:(i + 1) * b], self.rank, self.world).tolist() for i in range(start, len(self))]

    def _batches(self, epoch: int, start: int) -> Iterator[StreamedBatch]:
        files = self.dataset.files
        for x, y, bad in self._decoders(self.dataset, epoch, batch_sampler=self.shares(epoch, start),
                                        collate_fn=_collate):
            yield x, y, [(i, files.path(i)) for i in bad]

    def _unreadable(self, bad: list[tuple[int, str]]) -> tuple[list[str], list[int]]:
        bad = sorted(bad)  # by dataset position
        return [path for _, path in bad], [i for i, _ in bad]


def default_workers() -> int:
    """Decode processes of a streamed loader when not given: one per core, at most 8."""
    return min(os.cpu_count() or 1, 8)
