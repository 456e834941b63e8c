"""CIFAR python batches and MNIST IDX files written by the tests in the published formats."""

import gzip
import hashlib
import io
import pickle
import tarfile

import numpy as np
import pytest
import torch

from reslab.data import STATS, load
from reslab.data import download as dl
from reslab.data.download import Remote
from reslab.errors import ReslabError

RNG = np.random.default_rng(0)


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _tar(path, folder: str, members: dict[str, dict]):
    with tarfile.open(path, "w:gz") as tf:
        for name, obj in members.items():
            raw = pickle.dumps(obj)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(raw)
            tf.addfile(info, io.BytesIO(raw))
    return path


def _cifar10_archive(path, per_batch=6):
    batches, data = {}, {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x = RNG.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [(i + j) % 10 for j in range(per_batch)]
        batches[name] = {b"batch_label": name.encode(), b"data": x, b"labels": y,
                         b"filenames": [b"f.png"] * per_batch}
        data[name] = (x, y)
    batches["batches.meta"] = {b"label_names": [c.encode() for c in
                                                ["airplane", "automobile", "bird", "cat", "deer",
                                                 "dog", "frog", "horse", "ship", "truck"]]}
    return _tar(path, "cifar-10-batches-py", batches), data


def _use(monkeypatch, name, archive_or_files, urls=None):
    files = archive_or_files if isinstance(archive_or_files, list) else [archive_or_files]
    remotes = tuple(Remote(p.name, _md5(p), ((urls or {}).get(p.name, p.as_uri()),)) for p in files)
    monkeypatch.setitem(dl.RESOURCES, name, remotes)


def test_cifar10_download_decode_and_cache(tmp_path, monkeypatch):
    src, data = _cifar10_archive(tmp_path / "cifar-10-python.tar.gz")
    _use(monkeypatch, "cifar10", src)
    root = tmp_path / "data"
    train = load("cifar10", root=root)  # fetched through its file:// URL
    assert (root / "cifar10" / "cifar-10-python.tar.gz").is_file()
    assert train.images.shape == (30, 3, 32, 32) and train.images.dtype == torch.uint8
    x0, y0 = data["data_batch_1"]
    # The pickled rows are R plane, G plane, B plane, each row-major 32x32.
    assert np.array_equal(train.images[:6].numpy(), x0.reshape(6, 3, 32, 32))
    assert train.images[0, 1, 2, 3] == x0[0, 1024 + 2 * 32 + 3]
    assert train.labels[:6].tolist() == y0
    assert train.classes[0] == "airplane" and train.classes[9] == "truck"
    assert (train.mean, train.std) == STATS["cifar10"]
    test = load("cifar10", split="test", root=root)
    xt, yt = data["test_batch"]
    assert np.array_equal(test.images.numpy(), xt.reshape(-1, 3, 32, 32))
    assert test.labels.tolist() == yt
    # Second load: from the cache, no download (the source URL is gone).
    src.unlink()
    assert torch.equal(load("cifar10", root=root).images, train.images)


def test_cifar100_fine_and_coarse(tmp_path, monkeypatch):
    n = 8
    members = {
        "train": {b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
                  b"fine_labels": list(range(90, 98)), b"coarse_labels": list(range(10, 18))},
        "test": {b"data": RNG.integers(0, 256, (4, 3072), dtype=np.uint8),
                 b"fine_labels": [0, 1, 2, 99], b"coarse_labels": [0, 0, 1, 19]},
        "meta": {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                 b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]},
    }
    src = _tar(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", members)
    _use(monkeypatch, "cifar100", src)
    fine = load("cifar100", root=tmp_path / "d")
    coarse = load("cifar100_coarse", root=tmp_path / "d")
    assert fine.labels.tolist() == list(range(90, 98)) and len(fine.classes) == 100
    assert coarse.labels.tolist() == list(range(10, 18)) and len(coarse.classes) == 20
    assert torch.equal(fine.images, coarse.images)
    assert load("cifar100", "test", root=tmp_path / "d").labels.tolist() == [0, 1, 2, 99]
    assert (fine.mean, fine.std) == STATS["cifar100"]


def test_wrong_and_corrupt_archives(tmp_path, monkeypatch):
    # A CIFAR-100 archive under the CIFAR-10 name (checksum made to match).
    (tmp_path / "w").mkdir()
    wrong = _tar(tmp_path / "w" / "cifar-10-python.tar.gz", "cifar-100-python", {"train": {}})
    _use(monkeypatch, "cifar10", wrong)
    with pytest.raises(ReslabError, match="not the cifar10 python archive: it has no cifar-10-batches-py/"):
        load("cifar10", root=tmp_path / "d1")
    # A file with the right name but not the published content.
    (tmp_path / "d2" / "cifar10").mkdir(parents=True)
    (tmp_path / "d2" / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"<html>error page</html>")
    with pytest.raises(ReslabError, match="is not the published cifar-10-python.tar.gz"):
        load("cifar10", root=tmp_path / "d2")
    # Not gzip at all, but with a matching checksum: still a clear error.
    junk = tmp_path / "j" / "cifar-10-python.tar.gz"
    junk.parent.mkdir()
    junk.write_bytes(b"\x1f\x8b junk")
    _use(monkeypatch, "cifar10", junk)
    with pytest.raises(ReslabError, match="not a readable cifar10 python archive"):
        load("cifar10", root=tmp_path / "d3")


def test_missing_files_without_download(tmp_path):
    with pytest.raises(ReslabError, match="download=False.*cifar-10-python.tar.gz"):
        load("cifar10", root=tmp_path, download=False)


def _idx_gz(path, array: np.ndarray, magic: int | None = None):
    header = (magic or 0x0800 + array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())
    return path


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_mnist_idx(tmp_path, monkeypatch, name):
    d = tmp_path / "data" / name
    d.mkdir(parents=True)
    tr_x = RNG.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    tr_y = np.arange(12) % 10
    te_x = RNG.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    te_y = np.array([9, 8, 7, 6, 5])
    files = [_idx_gz(d / "train-images-idx3-ubyte.gz", tr_x), _idx_gz(d / "train-labels-idx1-ubyte.gz", tr_y),
             _idx_gz(d / "t10k-images-idx3-ubyte.gz", te_x), _idx_gz(d / "t10k-labels-idx1-ubyte.gz", te_y)]
    _use(monkeypatch, name, files)
    train = load(name, root=tmp_path / "data", download=False)
    test = load(name, split="test", root=tmp_path / "data", download=False)
    assert train.images.shape == (12, 1, 28, 28) and np.array_equal(train.images[:, 0].numpy(), tr_x)
    assert train.labels.tolist() == tr_y.tolist() and test.labels.tolist() == te_y.tolist()
    assert np.array_equal(test.images[:, 0].numpy(), te_x)
    assert (train.mean, train.std) == STATS[name]
    assert train.classes[0] == ("0" if name == "mnist" else "T-shirt/top")


def test_bad_idx_files(tmp_path, monkeypatch):
    d = tmp_path / "data" / "mnist"
    d.mkdir(parents=True)
    x = RNG.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    files = [_idx_gz(d / "train-images-idx3-ubyte.gz", x, magic=0x0801),  # labels magic
             _idx_gz(d / "train-labels-idx1-ubyte.gz", np.arange(3)),
             _idx_gz(d / "t10k-images-idx3-ubyte.gz", x), _idx_gz(d / "t10k-labels-idx1-ubyte.gz", np.arange(4))]
    _use(monkeypatch, "mnist", files)
    with pytest.raises(ReslabError, match="not an IDX file of 3-D"):
        load("mnist", root=tmp_path / "data", download=False)
    with pytest.raises(ReslabError, match="3 images but t10k-labels-idx1-ubyte.gz 4 labels"):
        load("mnist", split="test", root=tmp_path / "data", download=False)
    raw = gzip.decompress((d / "t10k-images-idx3-ubyte.gz").read_bytes())
    (d / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(raw[:-100]))
    _use(monkeypatch, "mnist", files)
    with pytest.raises(ReslabError, match="truncated"):
        load("mnist", split="test", root=tmp_path / "data", download=False)
