"""Streaming ImageNet-style loader: any sizes and modes, workers, bad files, determinism."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from reslab.data import DataWarning, StreamingLoader
from reslab.data.streaming import IMAGENET_MEAN, IMAGENET_STD


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
