"""The real CIFAR-10 JPEG copy in ../shared/data, when this machine has it.

The archive is extracted once per machine into the data directory
($RESLAB_DATA or ~/.cache/reslab)/cifar10-jpeg; the decoded arrays land in
the same directory's cache, so later runs read them in about a second.
"""

import os
import shutil
import tarfile
import time
from pathlib import Path

import pytest
import torch

from reslab.data import Loader, channel_stats, load, split
from reslab.data.download import data_dir

ARCHIVE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Published per-channel statistics of the CIFAR-10 training set (official pickles).
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

pytestmark = pytest.mark.skipif(not ARCHIVE.is_file(),
                                reason=f"the CIFAR-10 JPEG copy is not on this machine ({ARCHIVE})")


@pytest.fixture(scope="module")
def jpeg_root() -> Path:
    target = data_dir() / "cifar10-jpeg"
    done = target / ".extracted"
    if done.is_file():
        return target
    lock = target.with_name("cifar10-jpeg.lock")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock.mkdir()
    except FileExistsError:  # another process is extracting: wait for it
        for _ in range(600):
            if done.is_file():
                return target
            time.sleep(1)
        pytest.fail(f"{lock} stayed for 10 minutes; remove it if no extraction is running")
    try:
        tmp = target.with_name(f".cifar10-jpeg.{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        with tarfile.open(ARCHIVE) as tf:
            tf.extractall(tmp, filter="data")
        shutil.rmtree(target, ignore_errors=True)
        os.rename(tmp, target)
        done.touch()
    finally:
        lock.rmdir()
    return target


def test_test_split_counts_order_and_stats(jpeg_root):
    ds = load(f"imagefolder:{jpeg_root / 'test'}")  # the folder alone: its own statistics
    assert ds.images.shape == (10_000, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.classes == CLASSES
    assert ds.class_counts().tolist() == [1000] * 10
    for m, ref in zip(ds.mean, MEAN, strict=True):
        assert abs(m - ref) < 0.006
    for s, ref in zip(ds.std, STD, strict=True):
        assert abs(s - ref) < 0.006
    t = time.perf_counter()
    again = load(f"imagefolder:{jpeg_root / 'test'}")
    assert time.perf_counter() - t < 3.0  # read from the array cache, not decoded
    assert torch.equal(again.images[:100], ds.images[:100])
    x, y = next(iter(Loader(ds, batch_size=512, train=True, seed=0)))
    assert x.shape == (512, 3, 32, 32) and abs(x.mean().item()) < 0.3


@pytest.mark.slow
def test_train_and_test_splits(jpeg_root):
    train = load(f"imagefolder:{jpeg_root}", split="train")
    test = load(f"imagefolder:{jpeg_root}", split="test")
    assert len(train) == 50_000 and len(test) == 10_000
    assert train.classes == CLASSES and test.classes == CLASSES
    assert train.class_counts().tolist() == [5000] * 10
    assert test.class_counts().tolist() == [1000] * 10
    # JPEG smoothing lowers the std a little below the official pickles' values.
    for m, ref in zip(train.mean, MEAN, strict=True):
        assert abs(m - ref) < 0.002
    for s, ref in zip(train.std, STD, strict=True):
        assert abs(s - ref) < 0.004
    assert test.mean == train.mean and (train.mean, train.std) == channel_stats(train.images)
    t = time.perf_counter()
    load(f"imagefolder:{jpeg_root}", split="train")
    assert time.perf_counter() - t < 3.0
    tr, val = split(train, val_size=5000, seed=0)  # the paper's 45k/5k protocol
    assert len(tr) == 45_000 and val.class_counts().tolist() == [500] * 10
