"""Streaming ImageNet-style loader: any sizes and modes, workers, bad files, determinism, and the
training crop drawn before decoding (torchvision's boxes, reduced-scale JPEG decode)."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from reslab.data import DataWarning, StreamingImageFolder, StreamingLoader
from reslab.data.streaming import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    _jpeg_frame,
    crop_box,
    dct_scale,
    read_train,
)
from reslab.errors import ReslabError


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    sizes = [(50, 30), (80, 100), (33, 33), (120, 64)]
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(10):
            w, h = sizes[i % 4]
            img = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))
            if i == 3:
                img = img.convert("L")
            if i == 5:
                img = img.convert("CMYK")
            img.save(tmp_path / cls / f"{i:02d}.{'jpg' if i % 2 else 'png'}")
    (tmp_path / "dog" / "zz_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return tmp_path


def _collect(loader):
    with pytest.warns(DataWarning, match="skipped 1 unreadable image.*zz_broken.jpg"):
        return list(loader)


def test_train_batches_workers_and_determinism(folder):
    a = StreamingLoader(folder, batch_size=8, train=True, image_size=24, num_workers=2, seed=1)
    assert a.classes == ["cat", "dog"] and len(a) == 2  # 21 files, drop_last when training
    batches = _collect(a)
    assert a.skipped == ["dog/zz_broken.jpg"]
    xs = torch.cat([x for x, _ in batches])
    ys = torch.cat([y for _, y in batches])
    assert xs.shape[1:] == (3, 24, 24) and xs.dtype == torch.float32 and 14 <= len(xs) <= 16
    # Same seed and epoch: the same crops, whatever worker decoded them.
    b = StreamingLoader(folder, batch_size=8, train=True, image_size=24, num_workers=0, seed=1)
    torch.manual_seed(123)
    xb = torch.cat([x for x, _ in _collect(b)])
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))  # the global RNG was left alone
    assert torch.equal(xs, xb)
    assert not torch.equal(torch.cat([x for x, _ in _collect(b)]), xb)  # epoch 1 differs
    b.set_epoch(0, start_batch=1)  # resume: the second batch of epoch 0 again
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        resumed = list(b)
    assert len(resumed) == 1 and torch.equal(resumed[0][0], xb[-len(batches[-1][0]):])
    assert set(ys.tolist()) <= {0, 1}


def test_eval_is_resize_center_crop_in_order(folder):
    loader = StreamingLoader(folder, batch_size=32, train=False, image_size=24, num_workers=2)
    (x, y), = _collect(loader)
    assert len(x) == 20 and y.tolist() == [0] * 10 + [1] * 10
    ref = v2.Compose([v2.Resize(27, antialias=True), v2.CenterCrop(24)])
    img = Image.open(folder / "cat" / "01.jpg")
    img.draft("RGB", (27, 27))
    expected = v2.functional.pil_to_tensor(ref(img.convert("RGB"))).float() / 255
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(x[1], (expected - mean) / std, rtol=1e-5, atol=1e-5)
    # each image decoded alone is the one the pass gave (the broken file skipped: 20 rows of 21 files)
    assert loader.unreadable == [20] and torch.equal(loader.evaluated(), torch.arange(20))
    assert torch.equal(loader.output.normalize(loader.decoded([19, 1, 4])), x[[19, 1, 4]])
    with pytest.raises(ReslabError, match=r"cannot read dog/zz_broken.jpg$"):
        loader.decoded([3, 20])


def test_ranks_read_disjoint_shares_of_each_global_batch(folder):
    one = StreamingLoader(folder, batch_size=8, train=True, image_size=24, num_workers=0, seed=3)
    ranks = [StreamingLoader(folder, batch_size=8, train=True, image_size=24, num_workers=0, seed=3,
                             rank=r, world=2) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) == 2  # the ranks step together
    for epoch in (0, 1):
        order = one.order(epoch)
        shares = [sum(r.shares(epoch), []) for r in ranks]
        assert len(shares[0]) == len(set(shares[0])) == 8 and not set(shares[0]) & set(shares[1])
        # together the epoch's first 16 images in its seeded order; the other 5 of 21 are the remainder
        assert sorted(shares[0] + shares[1]) == sorted(order[:16].tolist())
        # a rank's share of a batch is the one the memory Loader gives it: positions rank, rank + world, ...
        assert ranks[1].shares(epoch)[0] == order[1:8:2].tolist()
    assert ranks[0].shares(0, start=1) == ranks[0].shares(0)[1:]  # a resumed pass starts at its batch
    x, y = next(iter(ranks[1]))
    files = one.dataset.files
    assert x.shape[0] <= 4 and y.tolist() == [int(files.labels[i]) for i in ranks[1].shares(0)[0]
                                             if "zz_broken" not in files.path(i)]


def _smooth(path, width, height, noise=0.0, seed=0):
    """A smooth color image (low-frequency waves), with optional Gaussian noise, saved to path."""
    yy, xx = np.mgrid[0:height, 0:width] / (width / 12)
    img = np.stack([128 + 100 * np.sin(0.7 * xx + 0.3 * yy), 128 + 90 * np.cos(0.5 * yy),
                    128 + 80 * np.sin(0.4 * (xx + yy))], -1)
    img += np.random.default_rng(seed).normal(0, noise, img.shape)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path, quality=90)
    return path


def _torchvision_crop(path, size, seed):
    """(3, S, S) uint8: the full decode + v2 RandomResizedCrop + flip, from the global RNG seeded."""
    t = v2.Compose([v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return v2.functional.pil_to_tensor(t(Image.open(path).convert("RGB")))


def test_crop_box_is_torchvisions_random_resized_crop():
    rrc = v2.RandomResizedCrop(24)
    for width, height in [(500, 375), (375, 500), (40, 400), (400, 30), (1, 1), (3000, 2000)]:
        for seed in range(40):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                ref = rrc.make_params([torch.empty(3, height, width)])
            box = crop_box(width, height, torch.Generator().manual_seed(seed))
            assert box == (ref["top"], ref["left"], ref["height"], ref["width"])


def test_dct_scale_keeps_the_box_at_least_the_output_size():
    assert [dct_scale(w, h, 224) for w, h in [(100, 50), (447, 900), (448, 448), (900, 895), (896, 1000),
                                              (1792, 1792), (9000, 5000)]] == [1, 1, 2, 2, 4, 8, 8]


def test_training_crop_decodes_at_reduced_scale_close_to_a_full_decode(tmp_path, monkeypatch):
    from PIL import JpegImagePlugin

    path = _smooth(tmp_path / "big.jpg", 1200, 900)
    drafted = []
    draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        full = self.size
        out = draft(self, mode, size)
        drafted.append(full[0] // self.size[0])
        return out

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    for seed in range(30):
        x = read_train(path, 96, torch.Generator().manual_seed(seed))
        assert x.shape == (3, 96, 96) and x.dtype == torch.uint8
        assert torch.equal(x, read_train(path, 96, torch.Generator().manual_seed(seed)))  # pure
        # the same region as the full decode + torchvision's crop, up to resampling
        diff = (x.float() - _torchvision_crop(path, 96, seed).float()).abs()
        assert diff.mean() < 1.0 and diff.max() <= 4
    assert set(drafted) == {2, 4, 8} and len(drafted) == 60  # every box was decoded at 1/2 to 1/8


@pytest.mark.parametrize("name,mode", [("photo.jpg", "RGB"), ("gray.jpg", "L"), ("cmyk.jpg", "CMYK"),
                                       ("photo.png", "RGB")])
def test_training_crop_at_full_scale_matches_torchvision(tmp_path, name, mode):
    path = _smooth(tmp_path / "photo.jpg", 480, 360, noise=6)
    if name != "photo.jpg":
        Image.open(path).convert(mode).save(tmp_path / name)
    for seed in range(10):
        x = read_train(tmp_path / name, 224, torch.Generator().manual_seed(seed))
        ref = _torchvision_crop(tmp_path / name, 224, seed)
        if name == "photo.jpg":  # libjpeg-turbo into a tensor, resized by torch: within a level
            assert (x.float() - ref.float()).abs().max() <= 1
        else:  # decoded and resized by PIL as before
            assert torch.equal(x, ref)


def test_training_items_are_a_function_of_seed_epoch_and_index(folder):
    a = StreamingImageFolder(folder, train=True, image_size=24, seed=5)
    b = StreamingImageFolder(folder, train=True, image_size=24, seed=5)
    a.epoch = b.epoch = 2
    for i in (0, 1, 7, 13):
        x, y, j = a[i]
        assert j == i and torch.equal(x, b[i][0]) and torch.equal(x, a[i][0])
    b.epoch = 3
    assert not all(torch.equal(a[i][0], b[i][0]) for i in range(8))


def test_jpeg_frame_header_is_read_as_pil_reads_it(tmp_path):
    path = _smooth(tmp_path / "a.jpg", 301, 203)
    im = Image.open(path)
    exif = Image.Exif()
    exif[0x010E] = "x" * 70_000  # a large APP1 segment before the frame header
    variants = {"baseline": {}, "progressive": {"progressive": True}, "exif": {"exif": exif.tobytes()[:60_000]}}
    for name, kwargs in variants.items():
        im.save(tmp_path / f"{name}.jpg", quality=90, **kwargs)
    im.convert("L").save(tmp_path / "gray.jpg")
    im.convert("CMYK").save(tmp_path / "cmyk.jpg")
    for name, components in [("baseline", 3), ("progressive", 3), ("exif", 3), ("gray", 1), ("cmyk", 4)]:
        data = (tmp_path / f"{name}.jpg").read_bytes()
        marker, width, height, n = _jpeg_frame(data)
        assert (width, height, n) == (301, 203, components) and marker in (0xC0, 0xC2)
    im.save(tmp_path / "a.png")
    assert _jpeg_frame((tmp_path / "a.png").read_bytes()) is None
    assert _jpeg_frame(b"\xff\xd8 not really a jpeg") is None


def test_a_truncated_jpeg_is_unreadable_not_half_gray(tmp_path):
    (tmp_path / "c").mkdir()
    data = _smooth(tmp_path / "c" / "a.jpg", 480, 360, noise=6).read_bytes()
    (tmp_path / "c" / "b.jpg").write_bytes(data[:len(data) // 2])
    items = StreamingImageFolder(tmp_path, train=True, image_size=224)
    assert items[0][0].shape == (3, 224, 224) and items[1][0] is None  # dropped and counted by the loader
