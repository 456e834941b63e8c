"""Datasets: digits, image folders (odd modes, broken files), the array cache."""

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.data import DataWarning, channel_stats, load, split
from reslab.errors import ReslabError


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    monkeypatch.setenv("RESLAB_DATA", str(root))
    return root


def _solid(color, size=(8, 8), mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


def _folder(base, classes: dict[str, list[tuple[str, Image.Image]]]):
    for cls, files in classes.items():
        d = base / cls
        d.mkdir(parents=True, exist_ok=True)
        for name, img in files:
            img.save(d / name)
    return base


def test_digits_shapes_labels_stats():
    ds = load("digits")
    assert ds.images.shape == (1437, 1, 8, 8) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64 and ds.classes == [str(i) for i in range(10)]
    assert int(ds.images.max()) == 255
    test = load("digits", split="test")
    everything = load("digits", split="all")
    assert len(test) == 360 and len(everything) == 1797
    assert torch.bincount(test.labels).min() >= 35  # stratified: about 36 per class
    mean, std = channel_stats(ds.images)
    assert ds.mean == mean and ds.std == std and test.mean == ds.mean
    expected = ds.images.float().mean() / 255
    assert abs(ds.mean[0] - expected.item()) < 1e-5
    assert abs(ds.std[0] - (ds.images.float() / 255).std(unbiased=False).item()) < 1e-5


def test_unknown_name_and_split():
    with pytest.raises(ReslabError, match="unknown dataset"):
        load("cifar11")
    with pytest.raises(ReslabError, match="split"):
        load("digits", split="val")


def test_imagefolder_modes_labels_and_values(tmp_path, data_root):
    red, blue = (255, 0, 0), (0, 0, 255)
    _folder(tmp_path / "imgs", {
        "b_cls": [("rgb.png", _solid(blue)), ("gray.png", _solid(128, mode="L")),
                  ("rgba.png", _solid(blue + (10,), mode="RGBA"))],
        "a_cls": [("red.jpg", _solid(red)), ("pal.bmp", _solid(red).convert("P")),
                  ("cmyk.jpg", _solid((0, 255, 255, 0), mode="CMYK")),
                  ("w.webp", _solid(red))],
    })
    ds = load(f"imagefolder:{tmp_path / 'imgs'}")
    assert ds.classes == ["a_cls", "b_cls"]
    assert ds.images.shape == (7, 3, 8, 8)
    assert ds.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]  # sorted by class, then file name
    px = ds.images[:, :, 4, 4].int()
    # a_cls files sorted: cmyk.jpg, pal.bmp, red.jpg, w.webp; all red within JPEG/WebP error
    for i in range(4):
        assert px[i, 0] > 230 and px[i, 1] < 25 and px[i, 2] < 25, px[i]
    assert px[4].tolist() == [128, 128, 128]  # gray.png -> RGB
    assert px[5].tolist() == [0, 0, 255] and px[6].tolist() == [0, 0, 255]
    mean, std = channel_stats(ds.images)
    assert ds.mean == mean and ds.std == std


def test_imagefolder_train_test_subfolders_use_train_stats(tmp_path, data_root):
    base = tmp_path / "set"
    _folder(base / "train", {"x": [("1.png", _solid((200, 0, 0)))], "y": [("1.png", _solid(0))]})
    _folder(base / "test", {"x": [("1.png", _solid((10, 0, 0)))], "y": [("1.png", _solid(0))]})
    tr = load(f"imagefolder:{base}", split="train")
    te = load(f"imagefolder:{base}", split="test")
    assert tr.images[0, 0, 0, 0] == 200 and te.images[0, 0, 0, 0] == 10
    assert te.mean == tr.mean and te.split == "test"
    with pytest.raises(ReslabError, match="no val/ sub-folder"):
        load(f"imagefolder:{base}", split="val")
    _folder(base / "test", {"z": [("1.png", _solid(0))]})
    with pytest.raises(ReslabError, match="different class folders"):
        load(f"imagefolder:{base}", split="test")


def test_corrupt_images_are_counted_named_and_skipped(tmp_path, data_root):
    base = _folder(tmp_path / "imgs", {"a": [("ok.png", _solid((1, 2, 3)))],
                                       "b": [("ok.png", _solid((4, 5, 6)))]})
    (base / "a" / "garbage.jpg").write_bytes(b"not an image at all")
    good = base / "b" / "ok.png"
    (base / "b" / "truncated.png").write_bytes(good.read_bytes()[:40])
    (base / "b" / "notes.txt").write_text("a stray file")
    with pytest.warns(DataWarning) as record:
        ds = load(f"imagefolder:{base}")
    text = " ".join(str(w.message) for w in record)
    assert "skipped 2 unreadable" in text and "garbage.jpg" in text and "truncated.png" in text
    assert "notes.txt" in text
    assert len(ds) == 2 and ds.labels.tolist() == [0, 1]
    assert ds.images[:, :, 0, 0].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_bad_folders(tmp_path, data_root):
    with pytest.raises(ReslabError, match="does not exist"):
        load(f"imagefolder:{tmp_path / 'missing'}")
    flat = tmp_path / "flat"
    flat.mkdir()
    _solid(0).save(flat / "x.png")
    with pytest.raises(ReslabError, match="no class sub-folders"):
        load(f"imagefolder:{flat}")
    base = _folder(tmp_path / "imgs", {"a": [("1.png", _solid(0))]})
    (base / "empty").mkdir()
    with pytest.raises(ReslabError, match="empty hold no images"):
        load(f"imagefolder:{base}")
    bad = _folder(tmp_path / "bad", {"a": [("1.png", _solid(0))]})
    (bad / "b").mkdir()
    (bad / "b" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(ReslabError, match="no readable image in class folder"):
        load(f"imagefolder:{bad}")


def test_mixed_sizes_need_image_size(tmp_path, data_root):
    base = _folder(tmp_path / "imgs", {"a": [("1.png", _solid(0, (40, 20)))],
                                       "b": [("1.png", _solid((9, 9, 9), (16, 16)))]})
    with pytest.raises(ReslabError, match="differ in size.*image_size"):
        load(f"imagefolder:{base}")
    ds = load(f"imagefolder:{base}", image_size=12)
    assert ds.images.shape == (2, 3, 12, 12)
    assert ds.images[1].eq(9).all()


def test_cache_is_reused_and_invalidated(tmp_path, data_root):
    base = _folder(tmp_path / "imgs", {"a": [("1.png", _solid((7, 7, 7)))],
                                       "b": [("1.png", _solid((8, 8, 8)))]})
    first = load(f"imagefolder:{base}")
    caches = list((data_root / "cache").iterdir())
    assert len(caches) == 1 and (caches[0] / "images.npy").is_file()
    # A cached load reads the arrays, not the images: replace an image's bytes
    # but keep its size and mtime, and the cache still answers.
    img = base / "a" / "1.png"
    st = img.stat()
    _solid((9, 9, 9)).save(img)
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert img.stat().st_size == st.st_size
    assert load(f"imagefolder:{base}").images[0, 0, 0, 0] == 7
    # A changed source (new mtime, new file) is decoded again.
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert load(f"imagefolder:{base}").images[0, 0, 0, 0] == 9
    _solid((5, 5, 5)).save(base / "b" / "2.png")
    again = load(f"imagefolder:{base}")
    assert len(again) == 3 and len(first) == 2
    # The stale caches of this folder were removed; other settings keep theirs.
    assert len(list((data_root / "cache").iterdir())) == 1
    load(f"imagefolder:{base}", image_size=4)
    assert len(list((data_root / "cache").iterdir())) == 2
    assert not [p for p in (data_root / "cache").iterdir() if p.name.startswith(".")]


def test_parallel_decode_matches_serial(tmp_path, data_root):
    rng = np.random.default_rng(0)
    files = {c: [(f"{i:04d}.png", Image.fromarray(rng.integers(0, 256, (4, 4, 3), np.uint8)))
                 for i in range(1100)] for c in ("a", "b")}
    base = _folder(tmp_path / "imgs", files)
    t = time.perf_counter()
    ds = load(f"imagefolder:{base}")  # 2,200 files: decoded by a process pool
    assert time.perf_counter() - t < 60
    expected = np.stack([np.asarray(img) for c in ("a", "b") for _, img in files[c]])
    assert np.array_equal(ds.images.permute(0, 2, 3, 1).numpy(), expected)
    tr, va = split(ds, 200)
    assert va.class_counts().tolist() == [100, 100]
