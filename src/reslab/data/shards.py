"""Tar shards: an image folder written as WebDataset-layout tar files, streamed back for
training on many machines.

Writing (`write_shards`, `reslab shard imagefolder:PATH --out DIR`): each split of the
folder (train/, val/, test/; PATH itself as train when it has no train/) becomes its own
shards, `train-000000.tar`, `train-000001.tar`, ..., of `shard_size` images each (the last
one fewer). An image is two members, `KEY.<ext>` (the file's bytes as they are: .jpg,
.png, ...) and `KEY.cls` (its class index as text); KEY is the image's position in its
split after a seeded shuffle, so every shard mixes the classes. `DIR/manifest.json` holds
the classes in order and, per split, the image count and per shard its count, size in
bytes and SHA-256. Each file is written under a temporary name and renamed into place
(`outputs.output_file`), the manifest last; DIR must be new, empty, or hold only reslab's
own shards and manifest (a re-run replaces them). The same folder and seed give the same
bytes.

Reading (`open_split`, `ShardLoader`, `--data shards:DIR`): an image becomes what
`StreamingLoader` makes of a file (`ImageCrops`: RandomResizedCrop + flip to train, resize
S/0.875 + center crop S to evaluate; `DeviceBatches`: ImageNet mean/std on the device).

Order, shares and resume. Epoch e of a training split is one sequence: the shards in a
permutation seeded by (seed, e), each shard's images in their order. Its first
(N // B) * B images are the epoch's B-image global batches; the rest (the tail of the
shard read last) waits for another epoch, as the last partial batch does in
`StreamingLoader`. Rank r of W reads one contiguous stretch of the sequence, its share of
every global batch (b_r images of B, the count `streaming.share` gives it) times the
number of batches, so the ranks read disjoint images, together each of the epoch's
images exactly once, and each mostly whole shards (at most two in part). A shuffle
buffer of `buffer` images seeded by (seed, e, r) orders the rank's stretch; its batch j
is the next b_r images the buffer emits. The sequence, the buffer's order and each crop
(from (seed, e, image index)) are pure functions of (seed, e, W, B), so a pass can start
at any batch: resuming a checkpoint taken mid-epoch gives, to the bit, the batches the
uninterrupted run would have given (with the same number of ranks; with another, the
rest of that epoch is read in the new shares, which may repeat or miss images of that
epoch only).

Workers. DataLoader worker k of K decodes batches k, k + K, ... of the rank's pass (all
of it when K is 0 or 1). Each worker reads the rank's shards in order and keeps the
bytes of its own batches' images only until they are decoded, so the DataLoader's
round-robin yields the batches in their order whatever K is: the order, and so resuming,
does not depend on the worker count. The cost is that the K workers of a rank each read
its shards (the page cache serves all but the first) where they decode a K-th of them.

Checks. When a split is opened, each shard's size is checked against the manifest: a
truncated or replaced shard stops there, in one line naming it. A shard read whole is
hashed (by one worker) and checked against its SHA-256; a member that is not KEY.<image
extension> or KEY.cls, or a tar that cannot be read, stops the pass in one line naming
the shard. An image that cannot be decoded is skipped, and the pass warns with the count
and names (SHARD:KEY.ext), as `StreamingLoader` does for files.

Why `tarfile` and not webdataset or litdata: the exact shares above (each image once per
epoch across ranks, the same number of steps on every rank, which DDP needs) and the
order as a pure function of (seed, epoch) for bit-exact mid-epoch resume need the
manifest's per-shard counts and a reader that starts at any sample of a shard;
webdataset splits whole shards between ranks and workers (unequal counts, an order that
depends on the worker count; its answer is resampling with `with_epoch`), and litdata
uses its own chunk format rather than tar. Reading a tar sequentially is a few lines of
the standard library, and the shards stay WebDataset's layout: `webdataset.WebDataset`
and `tar` read them as they are.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import ReslabError, is_whole
from ..outputs import output_file, write_text
from .datasets import IMAGE_EXTENSIONS, MissingSplitError, imagefolder_path, shards_path
from .loader import _seed, epoch_order, share
from .streaming import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    DeviceBatches,
    ImageCrops,
    ImageFiles,
    StreamCursor,
    StreamedBatch,
    folder_files,
    stack_decoded,
)

FORMAT = "reslab-shards-1"
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
SHARD_SIZE = 1000  # images per shard: about 100 MB of ImageNet JPEGs (WebDataset advises 100 MB to 1 GB)
SHUFFLE_BUFFER = 2000  # images a rank's shuffle buffer mixes (the order is computed on indices)
SHARD_NAME = re.compile(r"^(train|val|test)-(\d{6})\.tar$")
_IMAGE_EXTS = {e.lstrip(".") for e in IMAGE_EXTENSIONS}


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


# --- writing -------------------------------------------------------------------------
def write_shards(name: str, out: str | os.PathLike, shard_size: int = SHARD_SIZE, seed: int = 0,
                 log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Writes every split of image folder `name` ("imagefolder:PATH") as tar shards in `out`;
    returns the manifest (also written as out/manifest.json). log(line): one line per split."""
    base = imagefolder_path(name)
    if base is None:
        raise ReslabError(f"reslab shard writes image folders (imagefolder:PATH) as shards; got {name!r}")
    if not is_whole(shard_size, 1):
        raise ReslabError(f"shard_size must be a positive number of images, got {shard_size!r}")
    splits: dict[str, ImageFiles] = {}
    for split in SPLITS:
        try:
            splits[split] = folder_files(name, split)
        except MissingSplitError:
            continue
    out = Path(out).expanduser()
    old = _check_out_dir(out, base)
    manifest: dict[str, Any] = {"format": FORMAT, "source": str(base.resolve()), "classes": splits["train"].classes,
                                "seed": seed, "shard_size": shard_size, "splits": {}}
    written = set()
    for split, files in splits.items():
        if -(-len(files) // shard_size) > 10**6:
            raise ReslabError(f"{len(files):,} images in shards of {shard_size} make over a million shards; "
                              "raise --shard-size")
        order = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
        width = max(8, len(str(len(files) - 1)))
        shards = [_write_shard(out / shard_name(split, s), files, order[first:first + shard_size], first, width)
                  for s, first in enumerate(range(0, len(files), shard_size))]
        written |= {sh["name"] for sh in shards}
        manifest["splits"][split] = {"count": len(files), "class_counts": files.class_counts().tolist(),
                                     "shards": shards}
        if log is not None:
            size = sum(sh["bytes"] for sh in shards)
            log(f"{split}: {len(files):,} images in {len(shards)} shard(s) of {shard_size} "
                f"({size / 2**20:.1f} MiB), {out / shards[0]['name']} ...")
    write_text(out / MANIFEST, json.dumps(manifest, indent=1) + "\n", (".json",), "shard manifest")
    for stale in old - written:  # shards of an earlier, larger set in the same directory
        (out / stale).unlink(missing_ok=True)
    return manifest


def _check_out_dir(out: Path, source: Path) -> set[str]:
    """The shard files already in `out` (reslab's own, replaced by a re-run); one line if
    `out` is a file or holds anything else."""
    if out.exists() and not out.is_dir():
        raise ReslabError(f"{out} is a file; --out takes a directory for the shards")
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise ReslabError(f"{out} is inside the image folder {source}; write the shards elsewhere")
    if not out.is_dir():
        return set()
    names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    others = [n for n in names if n != MANIFEST and not SHARD_NAME.match(n)]
    shards = {n for n in names if SHARD_NAME.match(n)}
    if others:
        raise ReslabError(f"{out} holds files that are not reslab shards ({', '.join(others[:3])}"
                          f"{', ...' if len(others) > 3 else ''}); pick another --out or an empty directory")
    if MANIFEST in names:
        read_manifest(out)  # one line if it is not reslab's
    elif shards:
        raise ReslabError(f"{out} holds shards that no {MANIFEST} lists (another tool's, or a write that "
                          f"did not finish): remove them or pick another --out")
    return shards


def _write_shard(path: Path, files: ImageFiles, items: list[int], first: int, width: int) -> dict[str, Any]:
    with output_file(path, (".tar",), "tar shard") as tmp:
        with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
            for k, i in enumerate(items):
                src = files.root / files.path(i)
                try:
                    data = src.read_bytes()
                except OSError as e:
                    raise ReslabError(f"cannot read {src}: {e.strerror or e}") from None
                key = f"{first + k:0{width}d}"
                _add(tar, f"{key}{src.suffix.lower()}", data)
                _add(tar, f"{key}.cls", str(int(files.labels[i])).encode())
        h = hashlib.sha256()
        with open(tmp, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        size = tmp.stat().st_size
    return {"name": path.name, "count": len(items), "bytes": size, "sha256": h.hexdigest()}


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 0  # no time stamp: the same files, the same bytes
    tar.addfile(info, io.BytesIO(data))


# --- the manifest and a split ----------------------------------------------------------
def read_manifest(root: Path) -> dict[str, Any]:
    """DIR/manifest.json, checked for the fields the reader uses; one line when it is not a reslab manifest."""
    path = root / MANIFEST
    if not root.is_dir():
        raise ReslabError(f"shard directory {root} does not exist or is not a directory")
    if not path.is_file():
        raise ReslabError(f"{root} has no {MANIFEST}: not shards written by reslab shard, or the writing did not "
                          f"finish; write them with: reslab shard imagefolder:PATH --out {root}")
    try:
        m = json.loads(path.read_text())
        if m.get("format") != FORMAT:
            raise ValueError(f"format {m.get('format')!r}, expected {FORMAT!r}")
        classes = m["classes"]
        for entry in m["splits"].values():
            for sh in entry["shards"]:
                if not SHARD_NAME.match(sh["name"]) or int(sh["count"]) < 0 or int(sh["bytes"]) < 0 \
                        or len(sh["sha256"]) != 64:
                    raise ValueError(f"shard entry {sh}")
            if entry["count"] != sum(sh["count"] for sh in entry["shards"]):
                raise ValueError("split counts differ from their shards'")
        if "train" not in m["splits"] or len(classes) < 1:
            raise ValueError("no train split or no classes")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ReslabError(f"{path} is not a reslab shard manifest ({e}); write the shards again") from None
    return m


@dataclass
class ShardSplit:
    """One split of a shard directory, unread until streamed.

    shards: the manifest's entries (name, count, bytes, sha256); image g of the split is
    image g - offsets[s] of shard s, offsets the running counts. keep: the image indices
    of a subset (sorted), None for all; position i of the split is image keep[i] (i with
    no subset). meta: as a `Dataset`'s (e.g. "sample_of"). Sized and subset like `ImageFiles`.
    """

    root: Path
    split: str
    classes: list[str]
    shards: list[dict[str, Any]]
    name: str
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    keep: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    offsets: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.offsets = np.concatenate([[0], np.cumsum([int(sh["count"]) for sh in self.shards])]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1]) if self.keep is None else len(self.keep)

    def subset(self, indices: Tensor | Sequence[int], split: str | None = None) -> ShardSplit:
        """The images at `indices` (positions in this split)."""
        idx = torch.as_tensor(indices, dtype=torch.int64)
        kept = torch.arange(len(self)) if self.keep is None else self.keep
        return replace(self, keep=kept[idx].sort().values, split=self.split if split is None else split)

    def positions(self, images: np.ndarray | Sequence[int]) -> np.ndarray:
        """(n,) int64: the positions in this split of image indices `images` (all kept ones)."""
        images = np.asarray(images, dtype=np.int64)
        return images if self.keep is None else np.searchsorted(self.keep.numpy(), images)

    def read(self, positions: Sequence[int] | Tensor) -> Iterator[tuple[int, str, bytes | None, int]]:
        """(position, "SHARD:KEY.ext", image bytes, class) of the images at `positions`, in the split's
        order: one sequential read of each shard that holds any of them, up to the last one, the
        other images' bytes skipped (`read_shard`)."""
        wanted = sorted({int(p) for p in torch.as_tensor(positions, dtype=torch.int64).tolist()})
        if wanted and not 0 <= wanted[0] <= wanted[-1] < len(self):
            raise ReslabError(f"positions {wanted[0]}..{wanted[-1]} out of the {len(self)} images of {self.name}")
        ids = np.asarray(wanted, dtype=np.int64) if self.keep is None else self.keep.numpy()[wanted]
        at = dict(zip(ids.tolist(), wanted, strict=True))  # image index -> position
        for s, first, stop in _pieces(ids, self.offsets):
            base, entry = int(self.offsets[s]), self.shards[s]
            for i, name, data, label in read_shard(self.root / entry["name"], entry, len(self.classes), first, stop,
                                                   want=lambda i, base=base: base + i in at):
                if base + i in at:
                    yield at[base + i], name, data, label


def open_split(name: str, split: str = "train") -> ShardSplit:
    """Split `split` of the shards of data name `name` ("shards:DIR"), each shard's size
    checked against the manifest (one line naming a missing, truncated or replaced shard)."""
    root = shards_path(name)
    if root is None:
        raise ReslabError(f"{name!r} is not a shard directory (shards:DIR)")
    m = read_manifest(root)
    if split not in m["splits"]:
        raise MissingSplitError(f"{root} has no {split} shards (it holds {', '.join(m['splits'])}); shard a folder "
                                f"with a {split}/ sub-folder, or evaluate a run on its validation split")
    shards = m["splits"][split]["shards"]
    for sh in shards:
        path = root / sh["name"]
        try:
            size = path.stat().st_size
        except OSError:
            raise ReslabError(f"{path} is missing (listed in {root / MANIFEST}); write the shards again") from None
        if size != sh["bytes"]:
            raise ReslabError(f"{path}: {size:,} bytes where {MANIFEST} says {sh['bytes']:,}: the shard is truncated "
                              "or is not the one reslab shard wrote; write the shards again")
    return ShardSplit(root, split, list(m["classes"]), shards, f"shards:{root}")


def streamed_split(name: str, split: str) -> ImageFiles | ShardSplit:
    """Split `split` of a streamed data name: the shards of "shards:DIR", else the files of an
    image folder ("imagefolder:PATH", `folder_files`)."""
    return open_split(name, split) if shards_path(name) is not None else folder_files(name, split)


# --- one rank's pass ---------------------------------------------------------------------
def buffer_order(n: int, size: int, seed: int) -> np.ndarray:
    """(n,) int64: positions 0..n-1 in the order a shuffle buffer of `size` items emits a stream
    of n: it takes the first `size`; then for each next item it emits one it holds, drawn at
    random, and holds the new one in its place; at the end it emits the rest in random order."""
    rng = np.random.default_rng(seed)
    size = max(1, min(size, n))
    held = list(range(min(size, n)))
    out = np.empty(n, dtype=np.int64)
    for t, j in enumerate(rng.integers(0, size, max(n - size, 0)).tolist()):
        out[t] = held[j]
        held[j] = size + t
    out[n - len(held):] = rng.permutation(np.asarray(held, dtype=np.int64))
    return out


@dataclass
class Pass:
    """One rank's pass over a split in one epoch.

    ids: (n,) int64 image indices of the split in reading order; order: (n,) positions in
    ids in batch order, batch j being order[j * batch:(j + 1) * batch]; pieces: (shard,
    first, stop) in reading order, the images first..stop-1 of the shard that the ids hold.
    """

    ids: np.ndarray
    order: np.ndarray
    batch: int
    steps: int
    pieces: list[tuple[int, int, int]]


def _pieces(ids: np.ndarray, offsets: np.ndarray) -> list[tuple[int, int, int]]:
    if not len(ids):
        return []
    shard = np.searchsorted(offsets, ids, side="right") - 1
    cuts = np.flatnonzero(np.diff(shard)) + 1
    return [(int(shard[a]), int(ids[a] - offsets[shard[a]]), int(ids[b - 1] - offsets[shard[a]]) + 1)
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, len(ids)])]


class ShardLoader(StreamCursor):
    """Batches (x, y) streamed from a `ShardSplit`, decoded by `num_workers` processes.

    x: (B, 3, S, S) `dtype` on `device`, normalized with mean/std (the split's, ImageNet's),
    channels_last if asked; y: (B,) int64. With world > 1 (torchrun) the pass yields rank
    `rank`'s share of every global batch of `batch_size`, read from its own stretch of the
    epoch's shards (see the module's docstring). `set_epoch` as for `Loader`. B is smaller
    where unreadable images were dropped; a training batch (share) with no readable image
    stops the run with one line.
    """

    remedy = "write the shards again from readable files"

    def __init__(self, split: ShardSplit, batch_size: int = 256, train: bool = True, image_size: int = 224,
                 resize_size: int | None = None, num_workers: int | None = None,
                 mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
                 dtype: torch.dtype = torch.float32, channels_last: bool = False, drop_last: bool | None = None,
                 seed: int = 0, device: str | torch.device = "cpu", rank: int = 0, world: int = 1,
                 buffer: int = SHUFFLE_BUFFER):
        super().__init__(batch_size, train, image_size, num_workers, drop_last, seed, device, rank, world)
        self.dataset = split
        self.crops = ImageCrops(train, image_size, resize_size, seed)
        self.output = DeviceBatches(split.mean if mean is None else mean, split.std if std is None else std,
                                    dtype, channels_last, self.device)
        self.buffer = buffer

    def decoded(self, positions: Sequence[int] | Tensor) -> Tensor:
        """(n, 3, S, S) uint8 on the CPU: the images at `positions` of the split, in that order, read
        in one pass over the shards that hold them (`ShardSplit.read`) and decoded as the evaluation
        pass decodes them, before normalizing; one line naming any that cannot be read."""
        self._check_evaluation("decoded")
        positions = torch.as_tensor(positions, dtype=torch.int64).tolist()
        got = {p: (name, self.crops.decode(io.BytesIO(data), p)) for p, name, data, _ in self.dataset.read(positions)}
        return stack_decoded([got[p][1] for p in positions], [got[p][0] for p in positions], self.dataset.root,
                             self.crops.image_size)

    def sequence(self, epoch: int) -> np.ndarray:
        """(N,) int64: the image indices of `epoch` in the order the ranks read them (the
        shards in a seeded order when training, else in theirs), before the shares."""
        split = self.dataset
        shards = epoch_order(len(split.shards), self.train, self.seed, epoch).tolist()
        seq = np.concatenate([np.arange(split.offsets[s], split.offsets[s + 1]) for s in shards] or [[]])
        seq = seq.astype(np.int64)
        return seq if split.keep is None else seq[np.isin(seq, split.keep.numpy())]

    def order(self, epoch: int) -> Tensor:
        """(N,) int64: `sequence(epoch)` as positions in the split."""
        return torch.from_numpy(self.dataset.positions(self.sequence(epoch)))

    def plan(self, epoch: int) -> Pass:
        """This rank's pass of `epoch`."""
        seq, total = self.sequence(epoch), self.batch_size
        steps = len(self)
        if self.drop_last:
            sizes = [len(share(range(total), r, self.world)) for r in range(self.world)]
            begin = steps * sum(sizes[:self.rank])
            ids, b = seq[begin:begin + steps * sizes[self.rank]], sizes[self.rank]
        else:  # one rank (check_shares): every image, the last batch partial
            ids, b = seq, total
        order = (buffer_order(len(ids), self.buffer, _seed(self.seed, epoch, self.rank, 3)) if self.train
                 else np.arange(len(ids), dtype=np.int64))
        return Pass(ids, order, b, steps, _pieces(ids, self.dataset.offsets))

    def _batches(self, epoch: int, start: int) -> Iterator[StreamedBatch]:
        stream = _ShardStream(self.dataset, self.crops, self.plan(epoch), start)
        for x, y, unread, error in self._decoders(stream, epoch, batch_size=None, collate_fn=_as_is):
            if error is not None:
                raise ReslabError(error)
            yield x, y, unread

    def _unreadable(self, bad: list[tuple[int, str]]) -> tuple[list[str], list[int]]:
        # ids are image indices of the split; the names stay in the order the pass met them
        return [name for _, name in bad], sorted(self.dataset.positions([g for g, _ in bad]).tolist())


def _as_is(item: Any) -> Any:
    return item


# (x uint8, y, (image index, name) of the unreadable images, error)
Item = tuple[Tensor | None, Tensor | None, list[tuple[int, str]], str | None]


class _ShardStream(IterableDataset):
    """A worker's batches of one rank's pass: worker k of K decodes batches start + k, start + k + K, ...

    Errors come back as an item (one line), not as an exception through the DataLoader
    (which would add the worker's traceback to the message).
    """

    def __init__(self, split: ShardSplit, crops: ImageCrops, plan: Pass, start: int):
        self.split, self.crops, self.plan, self.start = split, crops, plan, start

    def __iter__(self) -> Iterator[Item]:
        info = get_worker_info()
        k, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        try:
            yield from self._batches(k, workers)
        except ReslabError as e:
            yield None, None, [], str(e)

    def _batches(self, k: int, workers: int) -> Iterator[Item]:
        p, start = self.plan, self.start
        mine = range(start + k, p.steps, workers)
        if not mine:
            return
        batch_of = np.empty(len(p.ids), dtype=np.int64)  # reading position -> its batch
        batch_of[p.order] = np.arange(len(p.ids)) // p.batch

        def wanted(q: int) -> bool:
            j = int(batch_of[q])
            return j >= start and (j - start) % workers == k

        samples = self._read(wanted, k, workers)
        held: dict[int, tuple[str, bytes, int]] = {}
        read = -1
        for j in mine:
            positions = p.order[j * p.batch:(j + 1) * p.batch].tolist()
            while read < max(positions):
                read, name, data, label = next(samples)
                if data is not None:
                    held[read] = (name, data, label)
            xs, ys, bad = [], [], []
            for q in positions:
                name, data, label = held.pop(q)
                x = self.crops.decode(io.BytesIO(data), int(p.ids[q]))
                if x is None:
                    bad.append((int(p.ids[q]), name))
                else:
                    xs.append(x)
                    ys.append(label)
            yield (torch.stack(xs) if xs else None), torch.tensor(ys, dtype=torch.int64), bad, None

    def _read(self, wanted: Callable[[int], bool], k: int, workers: int
              ) -> Iterator[tuple[int, str, bytes | None, int]]:
        """(reading position, name, bytes or None when another worker's, label) of the pass's images in order."""
        p, split = self.plan, self.split
        q = 0
        for s, first, stop in p.pieces:
            entry = split.shards[s]
            # reading positions of this piece's images, by their place in the shard
            here = {}
            while q < len(p.ids) and first <= p.ids[q] - split.offsets[s] < stop:
                here[int(p.ids[q] - split.offsets[s])] = q
                q += 1
            whole = first == 0 and stop == entry["count"]
            for i, name, data, label in read_shard(split.root / entry["name"], entry, len(split.classes), first,
                                                   stop, want=lambda i, here=here: i in here and wanted(here[i]),
                                                   verify=whole and s % workers == k):
                if i in here:
                    yield here[i], name, data, label


# --- reading one shard -------------------------------------------------------------------
class _Hashing:
    """A file read through `read`, fed to a hash on the way (when one is given)."""

    def __init__(self, f: Any, h: Any):
        self.f, self.h = f, h

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        if self.h is not None:
            self.h.update(data)
        return data


def read_shard(path: Path, entry: dict[str, Any], num_classes: int, first: int = 0, stop: int | None = None,
               want: Callable[[int], bool] = lambda i: True, verify: bool = False
               ) -> Iterator[tuple[int, str, bytes | None, int]]:
    """(i, "SHARD:KEY.ext", image bytes or None where not `want(i)`, class) of images first..stop-1
    of a shard, read in one sequential pass. verify: read it to its end and check its image count
    and SHA-256 against `entry` (the manifest's) before the last image is given."""
    stop = entry["count"] if stop is None else stop
    h = hashlib.sha256() if verify else None

    def bad(why: str) -> ReslabError:
        return ReslabError(f"{path}: {why}; not a shard written by reslab shard: write the shards again")

    def sample(i: int, key: str, members: dict[str, bytes | None]) -> tuple[int, str, bytes | None, int]:
        images = [e for e in members if e != "cls"]
        if "cls" not in members or len(images) != 1 or images[0].lower() not in _IMAGE_EXTS:
            raise bad(f"sample {key} holds {', '.join(sorted(members))}, not one image and a .cls")
        text = members["cls"] or b""
        if not text.strip().isdigit() or not 0 <= int(text) < num_classes:
            raise bad(f"{key}.cls holds {text[:20]!r}, not a class index below {num_classes}")
        return i, f"{path.name}:{key}.{images[0]}", members[images[0]], int(text)

    try:
        with open(path, "rb") as raw:
            f = _Hashing(raw, h)
            with tarfile.open(fileobj=f, mode="r|") as tar:  # sequential: no seeks, one read of each byte
                i, key, members = -1, None, {}
                for m in tar:
                    k, dot, ext = m.name.partition(".")
                    if not m.isfile() or not dot or "/" in m.name:
                        raise bad(f"member {m.name!r} is not KEY.<image extension> or KEY.cls")
                    if k != key:
                        if key is not None and first <= i < stop:
                            yield sample(i, key, members)
                        i, key, members = i + 1, k, {}
                        if i >= stop and not verify:
                            return
                    if ext in members:
                        raise bad(f"member {m.name!r} appears twice")
                    take = ext == "cls" or (first <= i < stop and want(i))
                    members[ext] = tar.extractfile(m).read() if take else None
            while f.read(1 << 20):  # the end-of-archive blocks count in the checksum
                pass
    except (tarfile.TarError, EOFError, OSError) as e:
        raise ReslabError(f"{path}: not a readable tar shard ({e}); write the shards again") from None
    if i + 1 != entry["count"]:
        raise bad(f"{i + 1} images where {MANIFEST} says {entry['count']}")
    if h is not None and h.hexdigest() != entry["sha256"]:
        raise ReslabError(f"{path}: its SHA-256 differs from the one in {MANIFEST}: the shard changed or is damaged "
                          "since reslab shard wrote it; write the shards again")
    if key is not None and first <= i < stop:
        yield sample(i, key, members)
