"""Datasets as uint8 tensors: CIFAR-10/100, MNIST, Fashion-MNIST, image folders, digits.

Every source is decoded once into a uint8 array cache under the data
directory (`root`, else $RESLAB_DATA, else ~/.cache/reslab): `cache/<key>/`
holding `images.npy` (N, C, H, W), `labels.npy` (N,) and `meta.json`. The key
hashes the source's content (file names, sizes and modification times, or the
archive's), so a changed source is decoded again; later loads memory-map the
arrays and take about a second even for the 60,000 CIFAR-10 JPEGs.

>>> ds = load("digits")
>>> ds.images.shape, ds.images.dtype, len(ds.classes)
(torch.Size([1437, 1, 8, 8]), torch.uint8, 10)
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import shutil
import tarfile
import warnings
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..atomic import atomic_path
from ..errors import ReslabError
from . import download as dl

# Bump when the cache layout or the decoding changes, so old caches are not read.
CACHE_VERSION = 1
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm", ".pgm")

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck"]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]

# Per-channel mean/std in [0, 1] units over the training set, as published.
STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
}
NAMES = ("digits", "cifar10", "cifar100", "cifar100_coarse", "mnist", "fashion_mnist",
         "imagefolder:PATH", "shards:DIR")


class DataWarning(UserWarning):
    """Something in a data source was skipped (unreadable images, stray files)."""


class MissingSplitError(ReslabError):
    """The data has no such split: an image folder without a test/ (or val/) sub-folder."""


@dataclass
class Dataset:
    """A labelled image set held as tensors.

    images: (N, C, H, W) uint8 on the CPU; labels: (N,) int64 in
    [0, len(classes)); mean/std: per-channel, in [0, 1] units, what the
    loader normalizes with (the training set's, also for test sets).
    """

    images: Tensor
    labels: Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    split: str = "train"
    meta: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ReslabError(f"dataset {self.name}: images must be uint8 (N, C, H, W), got "
                              f"{self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise ReslabError(f"dataset {self.name}: labels must be int64 ({len(self.images)},), "
                              f"got {self.labels.dtype} {tuple(self.labels.shape)}")
        c = self.images.shape[1]
        if len(self.mean) != c or len(self.std) != c:
            raise ReslabError(f"dataset {self.name}: mean/std need {c} values, got "
                              f"{len(self.mean)}/{len(self.std)}")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.images[i], int(self.labels[i])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Tensor | Sequence[int], split: str | None = None) -> Dataset:
        """The images at `indices` (same classes and mean/std)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        return replace(self, images=self.images[idx], labels=self.labels[idx],
                       split=self.split if split is None else split)

    def class_counts(self) -> Tensor:
        """(num_classes,) int64: images per class."""
        return torch.bincount(self.labels, minlength=len(self.classes))


# --- the entry point ---------------------------------------------------------
def load(name: str, split: str = "train", root: str | os.PathLike | None = None,
         download: bool = True, image_size: int | None = None, fallback_size: int | None = None) -> Dataset:
    """Load a dataset by name as uint8 tensors, decoding into the cache the first time.

    name: "digits", "cifar10", "cifar100" (fine labels), "cifar100_coarse",
    "mnist", "fashion_mnist" or "imagefolder:PATH". split: "train" or "test";
    for an image folder, the sub-folder of that name when PATH has one
    (e.g. train/ and test/), else PATH itself for "train". digits (no
    official split) has a fixed stratified 1437/360 train/test split, and
    "all" for the 1,797 images. root: the data directory. download: fetch
    missing published files. image_size: for image folders, resize the
    shorter side to this many pixels and center-crop a square. fallback_size:
    the size to do that at only when the images differ in size (photos), with a
    one-line DataWarning; without either, such a folder is an error.
    """
    if not isinstance(name, str):
        raise ReslabError(f"a data name is a string such as 'cifar10' or 'imagefolder:PATH', got {name!r}")
    folder = imagefolder_path(name)
    if folder is not None:
        return _load_imagefolder(folder, split, root, image_size, fallback_size)
    if shards_path(name) is not None:
        raise ReslabError(f"{name}: tar shards are streamed (reslab train/eval --data {name}), not held in memory; "
                          "load the image folder they were written from instead")
    key = name.strip().lower().replace("-", "_")
    if key == "digits":
        return _load_digits(split)
    if key in ("cifar10", "cifar100", "cifar100_coarse"):
        return _load_cifar(key, _check_split(split, key), root, download)
    if key in ("mnist", "fashion_mnist"):
        return _load_mnist(key, _check_split(split, key), root, download)
    raise ReslabError(f"unknown dataset {name!r}; choose one of {', '.join(NAMES)}")


def _check_split(split: str, name: str) -> str:
    if split not in ("train", "test"):
        raise ReslabError(f"{name} has splits 'train' and 'test', not {split!r}; "
                          "make a validation set with reslab.data.split()")
    return split


def imagefolder_path(name: str) -> Path | None:
    """PATH of a data name "imagefolder:PATH" (with ~ expanded); None for any other name."""
    if not isinstance(name, str) or not name.strip().lower().startswith("imagefolder:"):
        return None
    return Path(name.strip().split(":", 1)[1]).expanduser()


def shards_path(name: str) -> Path | None:
    """DIR of a data name "shards:DIR" (tar shards written by `reslab shard`); None for any other name."""
    if not isinstance(name, str) or not name.strip().lower().startswith("shards:"):
        return None
    return Path(name.strip().split(":", 1)[1]).expanduser()


def has_val_folder(name: str) -> bool:
    """Whether `name` is an image folder with train/ and val/ sub-folders (ImageNet's layout):
    its val/ is then the validation split, and nothing is held out of train/."""
    base = imagefolder_path(name)
    return base is not None and (base / "train").is_dir() and (base / "val").is_dir()


AUTO_VAL_FRACTION, AUTO_VAL_MAX = 0.1, 5000


def holdout(ds: Dataset, val_size: float | None, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """(train, val) of `ds` as a run's val_size asks: an image count >= 1, a fraction in (0, 1),
    0 for no validation split, or None for one that fits the data: 10% of the images, at most
    5,000, stratified; none (with a one-line DataWarning) where that leaves under 2 per class.
    `ds` may also be the unread files of a folder (`streaming.ImageFiles`): the same images are held out."""
    if val_size is None:
        k = min(AUTO_VAL_MAX, round(AUTO_VAL_FRACTION * len(ds)))
        if k < 2 * len(ds.classes):
            warnings.warn(f"{ds.name}: {len(ds)} training images are too few to hold out a validation split; "
                          "the run keeps its last weights (set val_size=N to hold out N images anyway)",
                          DataWarning, stacklevel=3)
            return ds, None
        val_size = k
    if not val_size:
        return ds, None
    return split(ds, val_size=int(val_size) if val_size >= 1 else float(val_size), seed=seed)


def split(ds: Dataset, val_size: int | float = 5000, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Stratified, seeded split into (train, val): the paper's 45k/5k CIFAR protocol by default.

    val_size: an image count, or a fraction of `ds` in (0, 1). Each class
    gives val_size * (its share of ds) images, rounded so the total is exact.
    Both parts keep `ds`'s mean/std and classes.
    """
    n = len(ds)
    k = round(val_size * n) if isinstance(val_size, float) else int(val_size)
    if isinstance(val_size, float) and not 0.0 < val_size < 1.0:
        raise ReslabError(f"val_size as a fraction must be in (0, 1), got {val_size}")
    if not 0 < k < n:
        raise ReslabError(f"val_size must leave both parts non-empty: got {k} of {n} images")
    counts = ds.class_counts().double()
    quota = counts * (k / n)
    take = quota.floor().long()
    # Largest remainders get the leftover images, so the total is exactly k.
    rest = k - int(take.sum())
    if rest:
        take[torch.argsort(quota - take, descending=True, stable=True)[:rest]] += 1
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    shuffled = ds.labels[order]
    val_parts = [order[shuffled == c][: int(take[c])] for c in range(len(ds.classes))]
    val_idx = torch.cat(val_parts).sort().values
    mask = torch.ones(n, dtype=torch.bool)
    mask[val_idx] = False
    train_idx = mask.nonzero().squeeze(1)
    return ds.subset(train_idx, ds.split), ds.subset(val_idx, "val")


def channel_stats(images: Tensor, chunk: int = 4096) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 (N, C, H, W) images, in [0, 1] units."""
    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    ss = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].transpose(0, 1).reshape(c, -1).double()
        s += x.sum(1)
        ss += (x * x).sum(1)
    count = images.numel() / c
    mean = s / count
    std = (ss / count - mean * mean).clamp_min(0).sqrt()
    return tuple(round(v / 255, 6) for v in mean.tolist()), tuple(round(v / 255, 6) for v in std.tolist())


# --- the array cache ---------------------------------------------------------
def _cache_path(root, kind: str, key_parts: Sequence[str]) -> Path:
    h = hashlib.sha256(f"v{CACHE_VERSION}\n".encode())
    for part in key_parts:
        h.update(part.encode())
        h.update(b"\n")
    return dl.data_dir(root) / "cache" / f"{kind}-{h.hexdigest()[:20]}"


def _write_cache(path: Path, arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Write the arrays and meta.json into a temporary folder, then rename it into place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.mkdir()
            for name, a in arrays.items():
                np.save(tmp / f"{name}.npy", np.ascontiguousarray(a))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    except OSError as e:
        if (path / "meta.json").is_file():  # another process's finished copy took the place first
            return
        raise ReslabError(f"cannot write the data cache {path}: {e.strerror or e}; choose a "
                          f"writable data directory with --data-dir or ${dl.ENV_VAR}") from None


def _prune_stale(current: Path, meta: dict) -> None:
    """Delete older caches of the same source and settings: it changed since they were written."""
    for other in current.parent.glob(current.name.rsplit("-", 1)[0] + "-*"):
        if other == current or not (other / "meta.json").is_file():
            continue
        try:
            old = json.loads((other / "meta.json").read_text())
        except (OSError, ValueError):
            continue
        if old.get("source") == meta["source"] and old.get("image_size") == meta["image_size"]:
            # Safe even while another process maps it: the pages stay until unmapped.
            shutil.rmtree(other, ignore_errors=True)


def _read_cache(path: Path, names: Sequence[str]) -> tuple[dict[str, Tensor], dict] | None:
    if not (path / "meta.json").is_file():
        return None
    meta = json.loads((path / "meta.json").read_text())
    # Copy-on-write maps: pages are read lazily and the tensors are writable.
    arrays = {n: torch.from_numpy(np.load(path / f"{n}.npy", mmap_mode="c")) for n in names}
    return arrays, meta


# --- digits ------------------------------------------------------------------
_DIGITS_TEST = 360


def _load_digits(part: str) -> Dataset:
    from sklearn.datasets import load_digits

    if part not in ("train", "test", "all"):
        raise ReslabError(f"digits has splits 'train', 'test' and 'all', not {part!r}")
    d = load_digits()
    # Pixel values are counts 0..16 of set pixels in 4x4 blocks; map them to 0..255.
    images = torch.from_numpy(np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)
    labels = torch.from_numpy(d.target.astype(np.int64))
    ds = Dataset(images, labels, [str(c) for c in range(10)], (0.0,), (1.0,), "digits", "all")
    train, test = split(ds, _DIGITS_TEST, seed=0)
    mean, std = channel_stats(train.images)
    chosen = {"train": train, "test": test, "all": ds}[part]
    return replace(chosen, mean=mean, std=std, split=part)


# --- CIFAR-10 / CIFAR-100 (python pickle batches) ----------------------------
_CIFAR_MEMBERS = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
                "batches.meta"),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta"),
}


def _load_cifar(name: str, split: str, root, download: bool) -> Dataset:
    base = "cifar100" if name.startswith("cifar100") else "cifar10"
    remote = dl.RESOURCES[base][0]
    archive = dl.fetch(base, root, download)[remote.filename]
    st = archive.stat()
    cache = _cache_path(root, base, [remote.md5, str(st.st_size), str(st.st_mtime_ns)])
    label_files = ["labels_train", "labels_test"] + (["coarse_train", "coarse_test"]
                                                     if base == "cifar100" else [])
    names = [f"images_{split}", f"labels_{split}"] + ([f"coarse_{split}"] if base == "cifar100" else [])
    cached = _read_cache(cache, names)
    if cached is None:
        dl.verify(archive, remote)
        arrays, meta = _read_cifar_archive(archive, base)
        if not set(label_files) <= set(arrays):
            raise ReslabError(f"{archive} lacks the labels of {base} ({', '.join(sorted(set(label_files) - set(arrays)))})")
        _write_cache(cache, arrays, meta)
        cached = _read_cache(cache, names)
    arrays, meta = cached
    mean, std = STATS[base]
    if name == "cifar100_coarse":
        return Dataset(arrays[f"images_{split}"], arrays[f"coarse_{split}"], meta["coarse_classes"],
                       mean, std, name, split)
    return Dataset(arrays[f"images_{split}"], arrays[f"labels_{split}"], meta["classes"],
                   mean, std, name, split)


def _read_cifar_archive(archive: Path, base: str) -> tuple[dict[str, np.ndarray], dict]:
    """Read the pickled batches straight out of the official tar.gz."""
    folder, train, test, meta_name = _CIFAR_MEMBERS[base]

    def unpickle(tf: tarfile.TarFile, member: str) -> dict:
        try:
            f = tf.extractfile(f"{folder}/{member}")
        except KeyError:
            raise ReslabError(f"{archive} is not the {base} python archive: it has no "
                              f"{folder}/{member}") from None
        # The archive's MD5 was checked against the published one before this point.
        return pickle.load(io.BytesIO(f.read()), encoding="bytes")

    out: dict[str, np.ndarray] = {}
    try:
        with tarfile.open(archive, "r:gz") as tf:
            meta = unpickle(tf, meta_name)
            for split, members in (("train", train), ("test", test)):
                batches = [unpickle(tf, m) for m in members]
                data = np.concatenate([np.asarray(b[b"data"], dtype=np.uint8) for b in batches])
                out[f"images_{split}"] = data.reshape(-1, 3, 32, 32)
                key = b"labels" if base == "cifar10" else b"fine_labels"
                out[f"labels_{split}"] = np.concatenate([np.asarray(b[key], np.int64) for b in batches])
                if base == "cifar100":
                    out[f"coarse_{split}"] = np.concatenate(
                        [np.asarray(b[b"coarse_labels"], np.int64) for b in batches])
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError, KeyError, ValueError) as e:
        raise ReslabError(f"{archive} is not a readable {base} python archive "
                          f"({e.__class__.__name__}: {e}); delete it and download it again") from None
    decode = [s.decode() for s in meta[b"label_names" if base == "cifar10" else b"fine_label_names"]]
    info = {"classes": decode, "source": str(archive)}
    if base == "cifar100":
        info["coarse_classes"] = [s.decode() for s in meta[b"coarse_label_names"]]
    for split in ("train", "test"):
        n_labels = len(info["classes"])
        if len(out[f"images_{split}"]) != len(out[f"labels_{split}"]) or (
                out[f"labels_{split}"].size and out[f"labels_{split}"].max() >= n_labels):
            raise ReslabError(f"{archive}: {split} images and labels do not match; "
                              "delete it and download it again")
    return out, info


# --- MNIST / Fashion-MNIST (IDX) ---------------------------------------------
def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Read a gzipped IDX file of unsigned bytes with `ndim` dimensions."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ReslabError(f"{path} is not a readable gzip file ({e}); delete it and download it again") from None
    magic = int.from_bytes(raw[:4], "big")
    if len(raw) < 4 + 4 * ndim or magic != 0x0800 + ndim:
        raise ReslabError(f"{path} is not an IDX file of {ndim}-D unsigned bytes "
                          f"(magic {magic:#x}, expected {0x0800 + ndim:#x})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ReslabError(f"{path} is truncated: header says {shape}, holds {data.size} bytes")
    return data.reshape(shape)


def _load_mnist(name: str, split: str, root, download: bool) -> Dataset:
    paths = dl.fetch(name, root, download)
    prefix = "train" if split == "train" else "t10k"
    img_path = paths[f"{prefix}-images-idx3-ubyte.gz"]
    lbl_path = paths[f"{prefix}-labels-idx1-ubyte.gz"]
    remotes = {r.filename: r for r in dl.RESOURCES[name]}
    stamp = [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in (img_path, lbl_path)]
    cache = _cache_path(root, f"{name}-{split}", stamp)
    cached = _read_cache(cache, ["images", "labels"])
    if cached is None:
        for p in (img_path, lbl_path):
            dl.verify(p, remotes[p.name])
        images = _read_idx(img_path, 3)[:, None]
        labels = _read_idx(lbl_path, 1).astype(np.int64)
        if len(images) != len(labels) or (labels.size and labels.max() > 9):
            raise ReslabError(f"{img_path.name} holds {len(images)} images but {lbl_path.name} "
                              f"{len(labels)} labels (max {labels.max()}); delete them and download again")
        _write_cache(cache, {"images": images, "labels": labels}, {"source": str(img_path.parent)})
        cached = _read_cache(cache, ["images", "labels"])
    arrays, _ = cached
    classes = [str(i) for i in range(10)] if name == "mnist" else FASHION_MNIST_CLASSES
    mean, std = STATS[name]
    return Dataset(arrays["images"], arrays["labels"], list(classes), mean, std, name, split)


# --- image folders -----------------------------------------------------------
@dataclass
class FolderScan:
    """What an image-folder walk found: image paths, their labels, ignored files."""

    root: Path
    classes: list[str]
    paths: list[str]  # relative to root
    labels: list[int]
    ignored: list[str]  # files without an image extension
    key: str  # hash over relative paths, sizes and modification times


def folder_classes(root: Path) -> list[str]:
    """The class names of image folder `root`: its sub-folders, sorted; one line if there are none."""
    if not root.is_dir():
        raise ReslabError(f"image folder {root} does not exist or is not a directory")
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise ReslabError(f"image folder {root} has no class sub-folders; expected "
                          f"{root}/<class>/<image>.jpg")
    return classes


def split_folder(base: Path, split: str) -> Path:
    """The folder holding `split` of image folder `base`: its sub-folder of that name, else
    `base` itself for "train"."""
    if not base.is_dir():
        raise ReslabError(f"image folder {base} does not exist or is not a directory")
    if (base / split).is_dir():
        return base / split
    if split == "train":
        return base
    raise MissingSplitError(f"image folder {base} has no {split}/ sub-folder: put the images in train/ "
                            f"and {split}/ sub-folders, or evaluate a run on its validation split "
                            "(reslab eval --split val)")


def paired_train_folder(base: Path, folder: Path, split: str) -> Path | None:
    """The train/ folder whose classes (and normalization) evaluation split `folder` of `base`
    shares; None for the training split itself or a base without train/."""
    if folder != base and split != "train" and (base / "train").is_dir():
        return base / "train"
    return None


def check_same_classes(folder: Path, classes: list[str], train_folder: Path, train_classes: list[str]) -> None:
    """One line when an evaluation folder's classes are not the train folder's (labels would not match)."""
    if list(classes) != list(train_classes):
        only = sorted(set(classes) ^ set(train_classes))
        more = f" and {len(only) - 5} more" if len(only) > 5 else ""
        raise ReslabError(f"{folder} and {train_folder} have different class folders "
                          f"({', '.join(only[:5])}{more} in one only); labels would not match")


def scan_folder(root: str | os.PathLike) -> FolderScan:
    """Walk `root`/<class>/**/<image>: classes sorted by name, files sorted by path.

    Raises `ReslabError` for a missing root, a root without class folders, or
    a class folder without images (its label would silently be missing).
    """
    root = Path(root).expanduser()
    classes = folder_classes(root)
    h = hashlib.sha256()
    paths, labels, ignored, empty = [], [], [], []

    def walk(directory: str, rel: str, label: int) -> int:
        found = 0
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.startswith("."):
                continue
            r = rel + e.name
            if e.is_dir():
                found += walk(e.path, r + "/", label)
            elif not e.name.lower().endswith(IMAGE_EXTENSIONS):
                ignored.append(r)
            else:
                st = e.stat()
                h.update(f"{r}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
                paths.append(r)
                labels.append(label)
                found += 1
        return found

    for label, cls in enumerate(classes):
        if not walk(str(root / cls), cls + "/", label):
            empty.append(cls)
    if empty:
        raise ReslabError(f"image folder {root}: class folder(s) {', '.join(empty)} hold no images "
                          f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder(s)")
    return FolderScan(root, classes, paths, labels, ignored, h.hexdigest())


def decode_image(path: str | os.PathLike, size: int | None = None, mode: str = "RGB") -> np.ndarray:
    """Decode one image file as (H, W, 3) uint8 RGB, or (H, W) for mode "L"; grayscale, RGBA,
    palette, CMYK and 16-bit images converted (16-bit scaled to 8, not clipped to white).

    size: resize the shorter side to `size` (bilinear, antialiased) and
    center-crop a size x size square.
    """
    im = open_image(path, mode, draft=size)
    return np.asarray(im if size is None else _fit(im, size), dtype=np.uint8)


def open_image(path: str | os.PathLike, mode: str = "RGB", draft: int | None = None):
    """One image file as a decoded PIL image in `mode` ("RGB" or "L"), converted as `decode_image`
    says. draft: a JPEG much larger than draft x draft is decoded at a reduced scale (at least that)."""
    from PIL import Image

    with Image.open(path) as im:
        if draft is not None and im.format == "JPEG":
            im.draft(mode, (draft, draft))
        return load_image(im, mode)


def load_image(im, mode: str = "RGB"):
    """An opened PIL image (its header read, `draft` set if wanted) decoded in `mode`, converted
    as `decode_image` says. Call it while the file is open; the result stays readable after."""
    from PIL import Image

    if im.mode.startswith("I"):  # 16- or 32-bit integer grayscale, e.g. a 16-bit PNG
        deep = np.asarray(im, dtype=np.float64)
        im = Image.fromarray((deep * 255.0 / (65535.0 if deep.max() > 255 else 255.0)).round()
                             .clip(0, 255).astype(np.uint8))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode != mode:
        return im.convert(mode)
    im.load()
    return im


def _fit(im, size: int):
    """A PIL image resized (bilinear, antialiased) to shorter side `size`, center-cropped square."""
    from PIL import Image

    w, h = im.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    im = im.resize((nw, nh), Image.BILINEAR, reducing_gap=None)
    left, top = (nw - size) // 2, (nh - size) // 2
    return im.crop((left, top, left + size, top + size))


def _decode_many(args: tuple[list[str], int | None]) -> list[tuple[np.ndarray | None, str | None]]:
    paths, size = args
    out = []
    for p in paths:
        try:
            out.append((decode_image(p, size), None))
        except Exception as e:  # PIL signals bad files with many types (OSError, SyntaxError, ...)
            out.append((None, f"{e.__class__.__name__}: {e}"))
    return out


def _decode_all(paths: list[str], size: int | None, workers: int | None = None
                ) -> list[tuple[np.ndarray | None, str | None]]:
    workers = workers or min(os.cpu_count() or 1, 8)
    if workers < 2 or len(paths) < 2000:
        return _decode_many((paths, size))
    step = 500
    jobs = [(paths[i:i + step], size) for i in range(0, len(paths), step)]
    with ProcessPoolExecutor(workers) as pool:
        return [r for chunk in pool.map(_decode_many, jobs) for r in chunk]


def _warn_skipped(root: Path, skipped: list[list[str]], ignored: list[str]) -> None:
    if skipped:
        names = "; ".join(f"{p} ({why})" for p, why in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(f"{root}: skipped {len(skipped)} unreadable image(s): {names}{more}",
                      DataWarning, stacklevel=5)
    if ignored:
        more = f" and {len(ignored) - 3} more" if len(ignored) > 3 else ""
        warnings.warn(f"{root}: ignored {len(ignored)} non-image file(s): "
                      f"{', '.join(ignored[:3])}{more}", DataWarning, stacklevel=5)


def _load_folder(folder: Path, root, image_size: int | None, warn: bool = True,
                 fallback_size: int | None = None) -> tuple[dict[str, Tensor], dict]:
    """Decode (or read from the cache) every image of a class-folder tree; images of mixed
    sizes are fitted to `fallback_size` when given."""
    from PIL import Image

    scan = scan_folder(folder)
    for size in dict.fromkeys((image_size, image_size or fallback_size)):
        cache = _cache_path(root, "imagefolder", [scan.key, f"size={size}"])
        cached = _read_cache(cache, ["images", "labels"])
        if cached is not None:
            break
    if cached is None:
        results = _decode_all([str(scan.root / p) for p in scan.paths], image_size)
        keep = [i for i, (a, _) in enumerate(results) if a is not None]
        skipped = [[scan.paths[i], why] for i, (a, why) in enumerate(results) if a is None]
        if not keep:
            raise ReslabError(f"image folder {folder}: none of its {len(results)} images could be "
                              f"decoded (first: {skipped[0][0]}: {skipped[0][1]})")
        shapes = {results[i][0].shape for i in keep}
        fitted = None
        if len(shapes) > 1:
            if fallback_size is None:
                a, b = sorted(shapes)[:2]
                raise ReslabError(f"images in {folder} differ in size (e.g. {a[1]}x{a[0]} and "
                                  f"{b[1]}x{b[0]}); set a size to resize them to (--set resize=N, or "
                                  "image_size=N in reslab.data.load)")
            fitted = fallback_size
            results = [(None, why) if a is None else (np.asarray(_fit(Image.fromarray(a), fitted)), why)
                       for a, why in results]
            cache = _cache_path(root, "imagefolder", [scan.key, f"size={fitted}"])
        labels = np.asarray([scan.labels[i] for i in keep], dtype=np.int64)
        lost = [c for i, c in enumerate(scan.classes) if not (labels == i).any()]
        if lost:
            raise ReslabError(f"image folder {folder}: no readable image in class folder(s) "
                              f"{', '.join(lost)}; fix or remove them")
        images = np.stack([results[i][0] for i in keep]).transpose(0, 3, 1, 2)
        mean, std = channel_stats(torch.from_numpy(images))
        meta = {"classes": scan.classes, "mean": mean, "std": std, "source": str(folder.resolve()),
                "image_size": image_size or fitted, "fitted": fitted, "skipped": skipped, "ignored": scan.ignored}
        _write_cache(cache, {"images": images, "labels": labels}, meta)
        _prune_stale(cache, meta)
        cached = _read_cache(cache, ["images", "labels"])
    arrays, meta = cached
    if warn:
        _warn_skipped(folder, meta["skipped"], meta["ignored"])
        if meta.get("fitted"):
            warnings.warn(f"images in {folder} differ in size: each is resized to {meta['fitted']} px on its "
                          "shorter side and center-cropped square (set resize=N for another size)",
                          DataWarning, stacklevel=4)
    return arrays, meta


def _load_imagefolder(base: Path, split: str, root, image_size: int | None,
                      fallback_size: int | None = None) -> Dataset:
    folder = split_folder(base, split)
    arrays, meta = _load_folder(folder, root, image_size, fallback_size=fallback_size)
    mean, std = tuple(meta["mean"]), tuple(meta["std"])
    if (train_folder := paired_train_folder(base, folder, split)) is not None:
        # Evaluation data is normalized with the training set's statistics.
        train_meta = _load_folder(train_folder, root, image_size, warn=False, fallback_size=fallback_size)[1]
        check_same_classes(folder, meta["classes"], train_folder, train_meta["classes"])
        mean, std = tuple(train_meta["mean"]), tuple(train_meta["std"])
    return Dataset(arrays["images"], arrays["labels"], list(meta["classes"]), mean, std,
                   f"imagefolder:{base}", split, {"skipped": meta["skipped"]})
