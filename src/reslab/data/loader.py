"""Batches from a uint8 dataset held on the training device, augmented with tensor ops.

The dataset moves to the device once. Each batch is one gather from the
uint8 images (4-pixel zero padding, random crop and horizontal flip folded
into the gather index), then a float conversion and an in-place
multiply-add that normalize, all on one thread. The order and augmentation
of a batch are a pure function of (seed, epoch, batch index), so resuming
needs no saved RNG state.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import ReslabError, is_whole
from .datasets import Dataset

AUGMENTS = ("cifar", "cifar-reflect", "cifar-cutout", "flip", None)
PAD = 4  # the paper's CIFAR padding (He et al. 2016, section 4.2)
CUTOUT = 8  # side of the square that "cifar-cutout" fills with the mean (DeVries & Taylor 2017)


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers, stable across runs and platforms."""
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0]
               >> np.uint64(1))


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the batch's kernels on one thread, restoring the setting afterwards.

    They are small and memory-bound; split across OpenMP threads they gain
    little, and on a shared machine a descheduled thread stalls every
    barrier (benchmarks/RESULTS_data.md, "Why the loader's kernels run on one
    thread"). Changing the setting costs under a microsecond.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def augment_index(n: int, h: int, w: int, pad: int, flip: bool, generator: torch.Generator
                  ) -> Tensor:
    """Gather indices (n, h*w) into (h + 2*pad) x (w + 2*pad) padded images.

    Each image gets a random offset in [0, 2*pad] per axis (a random crop of
    the padded image) and, with `flip`, a horizontal flip with probability 1/2.
    """
    dy = torch.randint(2 * pad + 1, (n, 1, 1), generator=generator)
    dx = torch.randint(2 * pad + 1, (n, 1, 1), generator=generator)
    cols = torch.arange(w)  # broadcast to (n, 1, w), rows to (n, h, 1)
    if flip:
        mirrored = torch.rand(n, 1, 1, generator=generator) < 0.5
        cols = torch.where(mirrored, w - 1 - cols, cols)
    rows = torch.arange(h)[:, None]
    return ((rows + dy) * (w + 2 * pad) + cols + dx).view(n, h * w)


def cutout_mask(n: int, h: int, w: int, size: int, generator: torch.Generator) -> Tensor:
    """(n, 1, h, w) bool: a size x size square per image, centred anywhere in it (clipped at the edges)."""
    cy = torch.randint(h, (n, 1, 1, 1), generator=generator)
    cx = torch.randint(w, (n, 1, 1, 1), generator=generator)
    rows, cols = torch.arange(h)[:, None], torch.arange(w)  # broadcast to (n, 1, h, w)
    lo = size // 2
    return (rows >= cy - lo) & (rows < cy - lo + size) & (cols >= cx - lo) & (cols < cx - lo + size)


def check_ranks(batch_size: int, rank: int, world: int) -> None:
    """One line when rank `rank` of `world` cannot have a share of every batch of `batch_size`."""
    if not 0 <= rank < world:
        raise ReslabError(f"rank must be in [0, {world}), got {rank}")
    if world > batch_size:
        raise ReslabError(f"batch_size {batch_size} leaves no image to some of the {world} ranks")


def share(batch: Sequence[int] | Tensor, rank: int, world: int) -> Sequence[int] | Tensor:
    """Rank `rank`'s share of a global batch: its items rank, rank + world, ..."""
    return batch[rank::world]


def epoch_order(n: int, train: bool, seed: int, epoch: int) -> Tensor:
    """(n,) int64 CPU: the order of n items in `epoch`, a permutation seeded by (seed, epoch) when
    training, else 0..n-1."""
    if not train:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(_seed(seed, epoch)))


class EpochCursor:
    """The order of each epoch, batches per epoch and where the next pass starts, shared by the loaders.

    Subclasses set `dataset`, `batch_size`, `train`, `drop_last`, `seed`, `rank`, `world`, `epoch`
    and `start_batch`; the streamed loaders `unreadable` after each pass.
    """

    unreadable: Sequence[int] = ()  # dataset positions of the images the last pass skipped, unreadable

    def order(self, epoch: int) -> Tensor:
        """(N,) int64 CPU: the dataset order of `epoch` (a seeded permutation when training)."""
        return epoch_order(len(self.dataset), self.train, self.seed, epoch)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Make the next pass epoch `epoch`, starting at batch `start_batch` (for resuming)."""
        if not 0 <= start_batch <= len(self):
            raise ReslabError(f"start_batch must be in [0, {len(self)}], got {start_batch}")
        self.epoch = epoch
        self.start_batch = start_batch

    def evaluated(self) -> Tensor:
        """(M,) int64: the dataset position of each image the last pass of this evaluation loader
        yielded, in its order: every position of the dataset but the unreadable ones it skipped.
        Row i of `evaluate`'s logits is the image at evaluated()[i]."""
        self._check_evaluation("evaluated")
        kept = torch.ones(len(self.dataset), dtype=torch.bool)
        kept[torch.as_tensor(list(self.unreadable), dtype=torch.int64)] = False
        return kept.nonzero().flatten()

    def _check_evaluation(self, what: str) -> None:
        if self.train:
            raise ReslabError(f"{what}() is for evaluation loaders (train=False): a training pass shuffles and "
                              "augments")


class Normalize:
    """uint8 (N, C, H, W) images -> float32, (x / 255 - mean) / std per channel: the one place
    reslab normalizes images (training loaders, streaming, predict). Computed as x * scale +
    shift, two in-place passes that keep the memory format."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], device: str | torch.device = "cpu"):
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.scale = (1.0 / (255.0 * std_t)).to(device)
        self.shift = (-torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t).to(device)

    def __call__(self, images: Tensor) -> Tensor:
        x = images.to(self.scale.device, non_blocking=True)
        x = x.clone() if x.dtype == torch.float32 else x.float()  # the caller's tensor is never changed
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            # channels innermost: broadcasting over a dim of 3 does not vectorize; as rows of W * C
            # values, each row takes the same scale and shift repeated W times (benchmarks/RESULTS_data.md)
            n, c, h, w = x.shape
            rows = x.permute(0, 2, 3, 1).view(n * h, w * c)
            rows.mul_(self.scale.view(c).repeat(w)).add_(self.shift.view(c).repeat(w))
            return x
        return x.mul_(self.scale).add_(self.shift)


def resize_batch(x: Tensor, size: int) -> Tensor:
    """Normalized float (N, C, H, W) to size x size as `Loader` resizes: bilinear, antialiased
    when shrinking. Bilinear interpolation and the per-channel affine map of `Normalize`
    commute, so resizing before or after normalization gives the same numbers."""
    if tuple(x.shape[-2:]) == (size, size):
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


class Loader(EpochCursor):
    """Iterate (x, y) batches of a `Dataset` on `device`.

    x: (B, C, H, W) normalized with the dataset's mean/std, `dtype`,
    channels_last if asked, `resize` x `resize` when given; y: (B,) int64.
    train=True shuffles with a seeded permutation per epoch and applies
    `augment` ("cifar": 4-pixel zero padding, random crop, horizontal flip;
    "cifar-reflect": the same with the border mirrored instead of black;
    "cifar-cutout": "cifar", then an 8x8 square filled with the mean;
    "flip": flip only; None). Evaluation loaders (train=False) keep the
    dataset order and never augment. After a full pass the epoch advances by
    one; `set_epoch(epoch, start_batch)` picks where the next pass starts.
    With world > 1 (torchrun) each batch is rank `rank`'s share of the global
    batch of `batch_size`: its images rank, rank + world, ..., augmented as
    in the whole batch.
    """

    def __init__(self, ds: Dataset, batch_size: int = 128, train: bool = True,
                 augment: str | None = "cifar", resize: int | None = None,
                 dtype: torch.dtype = torch.float32, channels_last: bool = False,
                 drop_last: bool = False, seed: int = 0, device: str | torch.device = "cpu",
                 rank: int = 0, world: int = 1):
        if augment not in AUGMENTS:
            raise ReslabError(f"augment must be one of {AUGMENTS}, got {augment!r}")
        if not is_whole(batch_size, 1):
            raise ReslabError(f"batch_size must be positive, got {batch_size}")
        if resize is not None and resize < 1:
            raise ReslabError(f"resize must be a positive size in pixels, got {resize}")
        if not dtype.is_floating_point:
            raise ReslabError(f"dtype must be a floating type (float32, bfloat16, ...), got {dtype}")
        check_ranks(batch_size, rank, world)
        if drop_last and len(ds) < batch_size:
            raise ReslabError(f"drop_last with batch_size {batch_size} leaves no batch of the "
                              f"{len(ds)} images of {ds.name}")
        self.dataset = ds
        self.batch_size = batch_size
        self.train = train
        self.augment = augment if train else None
        self.resize = resize
        self.dtype = dtype
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.seed = seed
        self.device = torch.device(device)
        self.rank, self.world = rank, world
        self.images = ds.images.to(self.device)
        self.labels = ds.labels.to(self.device)
        c = ds.images.shape[1]
        self.normalize = Normalize(ds.mean, ds.std, self.device)
        mean = torch.tensor(ds.mean, dtype=torch.float32)
        self._fill = (mean * 255).round().to(torch.uint8).view(1, c, 1, 1).to(self.device)  # normalizes to ~0
        self.epoch = 0
        self.start_batch = 0

    def decoded(self, positions: Sequence[int] | Tensor) -> Tensor:
        """(n, C, H, W) uint8 on the CPU: the dataset's images at `positions`, as evaluation reads
        them before normalizing (and before `resize`, which acts on the normalized batch)."""
        self._check_evaluation("decoded")
        return self.dataset.images[torch.as_tensor(positions, dtype=torch.int64)]

    def batch(self, epoch: int, index: int, order: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Batch `index` of `epoch`: (x, y) as the iterator yields them."""
        with _one_thread():
            return self._batch(epoch, index, order)

    def _batch(self, epoch: int, index: int, order: Tensor | None) -> tuple[Tensor, Tensor]:
        order = self.order(epoch) if order is None else order
        idx = order[index * self.batch_size:(index + 1) * self.batch_size].to(self.device)
        x = self.images.index_select(0, idx)
        y = self.labels.index_select(0, idx)
        if self.augment is not None:
            g = torch.Generator().manual_seed(_seed(self.seed, epoch, index, 1))
            x = self._augment(x, g)
        if self.world > 1:  # after the batch's augmentation draws: the same crops as on one process
            x, y = share(x, self.rank, self.world), share(y, self.rank, self.world)
        return self._to_float(x), y

    def _augment(self, x: Tensor, g: torch.Generator) -> Tensor:
        n, c, h, w = x.shape
        if self.augment == "flip":
            mirrored = (torch.rand(n, generator=g) < 0.5).to(self.device).view(n, 1, 1, 1)
            return torch.where(mirrored, x.flip(3), x)
        padded = F.pad(x, (PAD, PAD, PAD, PAD), mode="reflect" if self.augment == "cifar-reflect" else "constant")
        index = augment_index(n, h, w, PAD, True, g).to(self.device)
        out = padded.view(n, c, -1).gather(2, index.unsqueeze(1).expand(n, c, h * w)).view(n, c, h, w)
        if self.augment == "cifar-cutout":
            out = torch.where(cutout_mask(n, h, w, CUTOUT, g).to(self.device), self._fill, out)
        return out

    def _to_float(self, x: Tensor) -> Tensor:
        if self.channels_last:  # reorder the uint8 batch: a quarter of the bytes of float
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.normalize(x)
        if self.resize is not None and tuple(x.shape[-2:]) != (self.resize, self.resize):
            x = resize_batch(x, self.resize)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
        return x.to(self.dtype)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        epoch, start = self.epoch, self.start_batch
        order = self.order(epoch)
        for b in range(start, len(self)):
            yield self.batch(epoch, b, order)
        self.epoch, self.start_batch = epoch + 1, 0
