"""ImageNet-style streaming: folders too large for memory, images of any size.

Worker processes decode each image with PIL and crop it to a fixed size
(training: RandomResizedCrop + horizontal flip; evaluation: resize the
shorter side + center crop), returning uint8 tensors; normalization and the
float conversion happen on whole batches on the device, as in `Loader`.
An unreadable image never stops a worker: it is dropped from its batch, and
the loader warns with the count and names at the end of each pass. The
random crop of an image is a pure function of (seed, epoch, dataset index).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from torchvision.transforms import v2

from ..errors import ReslabError
from .datasets import DataWarning, FolderScan, scan_folder
from .loader import EpochCursor, _seed

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class StreamingImageFolder(torch.utils.data.Dataset):
    """`root`/<class>/<image> decoded per item: (uint8 (3, S, S) or None, label, index).

    train: RandomResizedCrop(S, scale=(0.08, 1)) + flip; else resize the
    shorter side to `resize_size` (default S / 0.875, e.g. 256 for 224) and
    center-crop S. Classes are sorted by folder name.
    """

    def __init__(self, root: str | os.PathLike, train: bool, image_size: int = 224,
                 resize_size: int | None = None, seed: int = 0, scan: FolderScan | None = None):
        self.scan = scan or scan_folder(root)
        self.root = self.scan.root
        self.classes = self.scan.classes
        self.train = train
        self.image_size = image_size
        self.resize_size = resize_size or round(image_size / 0.875)
        self.seed = seed
        self.epoch = 0
        if train:
            self.transform = v2.Compose([v2.RandomResizedCrop(image_size, antialias=True),
                                         v2.RandomHorizontalFlip()])
        else:
            self.transform = v2.Compose([v2.Resize(self.resize_size, antialias=True),
                                         v2.CenterCrop(image_size)])

    def __len__(self) -> int:
        return len(self.scan.paths)

    def __getitem__(self, i: int) -> tuple[Tensor | None, int, int]:
        from PIL import Image

        try:
            with Image.open(self.root / self.scan.paths[i]) as im:
                if not self.train and im.format == "JPEG":
                    # Decode at a reduced DCT scale when the image is far larger than needed.
                    im.draft("RGB", (self.resize_size, self.resize_size))
                if im.mode == "P" and "transparency" in im.info:
                    im = im.convert("RGBA")
                im = im.convert("RGB")
                # torchvision draws from the global RNG; seed a forked copy so the
                # crop depends on (seed, epoch, i) alone and the caller's RNG is untouched.
                with torch.random.fork_rng(devices=[]):
                    torch.default_generator.manual_seed(_seed(self.seed, self.epoch, i))
                    x = v2.functional.pil_to_tensor(self.transform(im))
        except Exception:  # PIL signals bad files with many types; the batch drops this one
            return None, self.scan.labels[i], i
        return x, self.scan.labels[i], i


def _collate(items: list[tuple[Tensor | None, int, int]]) -> tuple[Tensor | None, Tensor, list[int]]:
    good = [(x, y) for x, y, _ in items if x is not None]
    bad = [i for x, _, i in items if x is None]
    if not good:
        return None, torch.empty(0, dtype=torch.int64), bad
    return torch.stack([x for x, _ in good]), torch.tensor([y for _, y in good]), bad


class StreamingLoader(EpochCursor):
    """Batches (x, y) from a large image folder, decoded by `num_workers` processes.

    x: (B, 3, S, S) `dtype` on `device`, normalized with mean/std (ImageNet's
    by default), channels_last if asked; y: (B,) int64. B can be smaller
    than batch_size where unreadable images were dropped. The order is a
    seeded permutation per epoch when training; `set_epoch` as for `Loader`.
    """

    def __init__(self, root: str | os.PathLike, batch_size: int = 256, train: bool = True,
                 image_size: int = 224, resize_size: int | None = None,
                 num_workers: int | None = None, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD, dtype: torch.dtype = torch.float32,
                 channels_last: bool = False, drop_last: bool | None = None, seed: int = 0,
                 device: str | torch.device = "cpu"):
        if batch_size < 1 or image_size < 1:
            raise ReslabError(f"batch_size and image_size must be positive, got {batch_size}, {image_size}")
        if len(mean) != 3 or len(std) != 3:
            raise ReslabError("mean and std need 3 values (images are converted to RGB)")
        self.dataset = StreamingImageFolder(Path(root).expanduser(), train, image_size, resize_size, seed)
        self.batch_size = batch_size
        self.train = train
        self.num_workers = min(os.cpu_count() or 1, 8) if num_workers is None else num_workers
        self.drop_last = train if drop_last is None else drop_last
        self.dtype = dtype
        self.channels_last = channels_last
        self.seed = seed
        self.device = torch.device(device)
        std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self._scale = (1.0 / (255.0 * std_t)).to(self.device)
        self._shift = (-torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) / std_t).to(self.device)
        self.epoch = 0
        self.start_batch = 0
        self.skipped: list[str] = []  # unreadable files met in the last pass

    @property
    def classes(self) -> list[str]:
        return self.dataset.classes

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.epoch, self.start_batch
        n = len(self.dataset)
        if self.train:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(_seed(self.seed, epoch)))
        else:
            order = torch.arange(n)
        order = order[start * self.batch_size: len(self) * self.batch_size].tolist()
        self.dataset.epoch = epoch
        loader = DataLoader(self.dataset, batch_size=self.batch_size, sampler=order,
                            num_workers=self.num_workers, collate_fn=_collate,
                            # its own generator: the workers' base seed never draws from
                            # (or shifts) the caller's global RNG
                            generator=torch.Generator().manual_seed(_seed(self.seed, epoch, 2)),
                            pin_memory=self.device.type == "cuda",
                            persistent_workers=False, prefetch_factor=4 if self.num_workers else None)
        bad: list[int] = []
        for x, y, b in loader:
            bad += b
            if x is None:
                continue
            x = x.to(self.device, non_blocking=True).float().mul_(self._scale).add_(self._shift)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x.to(self.dtype), y.to(self.device, non_blocking=True)
        self.skipped = [self.dataset.scan.paths[i] for i in sorted(bad)]
        if bad:
            more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
            warnings.warn(f"{self.dataset.root}: skipped {len(bad)} unreadable image(s) in epoch "
                          f"{epoch}: {', '.join(self.skipped[:5])}{more}", DataWarning, stacklevel=2)
        self.epoch, self.start_batch = epoch + 1, 0
