"""Loader: batch shapes, normalization, seeded order, augmentation, resume."""

import pytest
import torch

from reslab.data import Dataset, Loader, split
from reslab.data.loader import PAD, Normalize, _seed, augment_index
from reslab.errors import ReslabError


def _ramp(n: int = 40, c: int = 3, h: int = 6, w: int = 6) -> Dataset:
    """Image i has pixel (y, x) = i + 10*y + x in every channel, so crops are recognizable."""
    base = torch.arange(h).view(h, 1) * 10 + torch.arange(w).view(1, w)
    images = (torch.arange(n).view(n, 1, 1, 1) + base).expand(n, c, h, w).to(torch.uint8).clone()
    labels = torch.arange(n) % 4
    return Dataset(images, labels, list("abcd"), (0.0,) * c, (1 / 255,) * c, "ramp")


def test_eval_loader_is_ordered_and_normalized():
    ds = _ramp()
    ds.mean, ds.std = (0.5, 0.25, 0.1), (0.5, 0.2, 0.3)
    loader = Loader(ds, batch_size=16, train=False, augment="cifar")
    assert len(loader) == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 8]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert torch.equal(y, ds.labels)
    mean = torch.tensor(ds.mean).view(1, 3, 1, 1)
    std = torch.tensor(ds.std).view(1, 3, 1, 1)
    expected = (ds.images.float() / 255 - mean) / std
    torch.testing.assert_close(x, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_normalize_is_the_same_in_either_memory_format(dtype):
    # (x / 255 - mean) / std per channel, computed independently; channels_last batches take
    # another code path (rows of W * C values) that must give the same numbers and keep the format
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    torch.manual_seed(0)
    images = torch.randint(0, 256, (4, 3, 5, 7), dtype=torch.uint8).to(dtype)
    want = (images.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    norm = Normalize(mean, std)
    plain = norm(images)
    last = images.contiguous(memory_format=torch.channels_last)
    kept = last.clone()
    got = norm(last)
    assert got.is_contiguous(memory_format=torch.channels_last) and not got.is_contiguous()
    assert torch.equal(got, plain) and plain.dtype == got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=0, atol=1e-5)
    assert torch.equal(last, kept)  # the caller's batch is left as it was


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_normalize_reads_strided_batches(dtype):
    # sliced or transposed views are neither contiguous nor channels_last: the plain path handles them
    mean, std = (0.5, 0.25, 0.75), (0.5, 0.125, 0.25)
    images = torch.arange(2 * 3 * 4 * 6).view(2, 3, 4, 6).to(dtype)
    for view in (images[:, :, :, ::2], images.transpose(2, 3)):
        want = (view.double() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
        torch.testing.assert_close(Normalize(mean, std)(view).double(), want, rtol=0, atol=1e-5)


def test_normalize_moves_the_batch_to_its_device():
    # built for a device, it takes CPU batches there (as a GPU loader does); the meta device
    # stands in for a GPU: a tensor left on the CPU, or a scale kept there, would not end on it
    norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), device="meta")
    assert norm.scale.device.type == norm.shift.device.type == "meta"
    images = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    for batch in (images, images.contiguous(memory_format=torch.channels_last)):
        got = norm(batch)
        assert (got.device.type, got.dtype, got.shape) == ("meta", torch.float32, (2, 3, 4, 4))


def test_seeds_are_fixed_63_bit_numbers():
    # a resumed run recomputes its epoch's order and crops from (seed, epoch, batch): if these numbers
    # changed between platforms or versions, it would train on other images than the run it continues
    assert _seed(0, 0) == 7896617691693857887
    assert _seed(3, 5) == 4895867234429419378
    assert _seed(3, 5, 2, 1) == 6113718104754760344
    assert _seed(2**32 + 3, 5) == _seed(3, 5)  # each part is taken modulo 2**32
    assert _seed(-1) == _seed(2**32 - 1) == 1514021950461116164


def test_the_defaults_are_a_seeded_augmented_float32_training_loader_on_one_process():
    ds = _ramp(300)
    spelled_out = Loader(ds, batch_size=128, train=True, augment="cifar", resize=None, dtype=torch.float32,
                         channels_last=False, drop_last=False, seed=0, device="cpu", rank=0, world=1)
    got, want = list(Loader(ds)), list(spelled_out)
    assert [len(y) for _, y in got] == [128, 128, 44]
    for (x, y), (wx, wy) in zip(got, want, strict=True):
        assert torch.equal(x, wx) and torch.equal(y, wy)
        assert x.dtype == torch.float32 and x.device.type == "cpu" and x.is_contiguous()
    assert not torch.equal(torch.cat([y for _, y in got]), ds.labels)  # shuffled


def test_drop_last_and_len():
    ds = _ramp(40)
    assert len(Loader(ds, batch_size=16, drop_last=True)) == 2
    assert sum(len(y) for _, y in Loader(ds, batch_size=16, drop_last=True)) == 32
    with pytest.raises(ReslabError, match="drop_last"):
        Loader(ds, batch_size=64, drop_last=True)


def test_train_order_is_seeded_permutation_per_epoch():
    ds = _ramp(50)
    a = Loader(ds, batch_size=7, augment=None, seed=3)
    b = Loader(ds, batch_size=7, augment=None, seed=3)
    c = Loader(ds, batch_size=7, augment=None, seed=4)
    torch.manual_seed(7)
    ep0 = torch.cat([x[:, 0, 0, 0] for x, _ in a])
    after = torch.rand(2)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(2))  # the global RNG was left alone
    ep1 = torch.cat([x[:, 0, 0, 0] for x, _ in a])  # the epoch advanced by itself
    assert sorted(ep0.round().long().tolist()) == list(range(50))
    assert not torch.equal(ep0, ep1)
    for epoch, seen in ((0, ep0), (1, ep1)):  # pass k is epoch k's order (image i has pixel value i)
        assert torch.equal(seen.round().long(), a.order(epoch)[: len(seen)])
    assert torch.equal(ep0, torch.cat([x[:, 0, 0, 0] for x, _ in b]))
    assert not torch.equal(ep0, torch.cat([x[:, 0, 0, 0] for x, _ in c]))


def test_resume_mid_epoch_gives_identical_batches():
    ds = _ramp(64)
    full = Loader(ds, batch_size=8, seed=1)
    full.set_epoch(5)
    expected = list(full)
    resumed = Loader(ds, batch_size=8, seed=1)
    resumed.set_epoch(5, start_batch=3)
    got = list(resumed)
    assert len(got) == len(expected) - 3
    for (x, y), (ex, ey) in zip(got, expected[3:], strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)
    resumed.set_epoch(5, start_batch=len(resumed))  # stopped after the epoch's last batch: nothing left
    assert list(resumed) == [] and resumed.epoch == 6


def test_cifar_augment_is_pad_crop_flip():
    n, h, w = 2000, 6, 6
    ds = _ramp(1, h=h, w=w)
    ds = Dataset(ds.images.expand(n, 3, h, w).clone(), torch.zeros(n, dtype=torch.int64), ["a"],
                 (0.0,) * 3, (1 / 255,) * 3, "same")
    x = torch.cat([b for b, _ in Loader(ds, batch_size=500, augment="cifar", seed=0)])
    img = ds.images[0].float()
    pad = 4  # the paper's 4-pixel zero padding (section 4.2), written out, not read from the loader
    assert PAD == pad
    padded = torch.nn.functional.pad(img, (pad,) * 4)
    crops = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            crops[(dy, dx, 0)] = crop
            crops[(dy, dx, 1)] = crop.flip(2)
    seen = {}
    for i in range(n):
        match = [k for k, c in crops.items() if torch.equal(c, x[i])]
        assert match, f"sample {i} is not a padded crop (or its mirror) of the image"
        seen[match[0]] = seen.get(match[0], 0) + 1
    offsets = {(dy, dx) for dy, dx, _ in seen}
    assert len(offsets) == (2 * pad + 1) ** 2 == 81  # every offset drawn
    flips = sum(v for (_, _, f), v in seen.items() if f) / n
    assert 0.45 < flips < 0.55


def test_flip_augment_and_resize_dtype_channels_last():
    ds = _ramp(32)
    x, _ = next(iter(Loader(ds, batch_size=32, augment="flip", train=True, seed=0)))
    originals = ds.images.float()
    for xi in x:
        assert any(torch.equal(xi, o) or torch.equal(xi, o.flip(2)) for o in originals)
    x, _ = next(iter(Loader(ds, batch_size=8, resize=12, dtype=torch.bfloat16, channels_last=True)))
    assert x.shape == (8, 3, 12, 12) and x.dtype == torch.bfloat16
    assert x.is_contiguous(memory_format=torch.channels_last)
    plain, _ = next(iter(Loader(ds, batch_size=8, train=False)))
    big, _ = next(iter(Loader(ds, batch_size=8, train=False, resize=12, channels_last=True)))
    expected = torch.nn.functional.interpolate(plain, size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(big, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("augment", ["cifar", "cifar-reflect", "cifar-cutout", "flip"])
def test_augmentation_is_a_function_of_seed_and_epoch_alone(augment):
    # the global RNG (which a model's dropout or a user's code draws from) changes nothing
    ds = _ramp(n=64)
    batches = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        loader = Loader(ds, batch_size=32, augment=augment, seed=3)
        loader.set_epoch(1)
        batches.append(torch.cat([x for x, _ in loader]))
    assert torch.equal(*batches)
    loader = Loader(ds, batch_size=32, augment=augment, seed=4)
    loader.set_epoch(1)
    assert not torch.equal(batches[0], torch.cat([x for x, _ in loader]))


def test_flip_mirrors_about_half_of_the_images():
    n = 400
    ramp = (torch.arange(6) * 10).to(torch.uint8).view(1, 1, 1, 6).expand(n, 3, 6, 6).contiguous()  # rising to the right
    ds = Dataset(ramp, torch.zeros(n, dtype=torch.int64), ["a"], (0.0,) * 3, (1 / 255,) * 3, "ramp")
    x, _ = next(iter(Loader(ds, batch_size=n, augment="flip", seed=0)))
    mirrored = x[:, 0, 0, 0] > x[:, 0, 0, -1]
    assert torch.equal(x[mirrored], ramp[mirrored].flip(3).float())  # mirrored whole (std 1/255: x = pixel)
    assert 0.4 < mirrored.float().mean().item() < 0.6


def test_cutout_fills_one_clipped_square_with_the_mean():
    n, h, w = 400, 32, 32
    mean = (0.5, 0.25, 0.75)
    images = torch.full((n, 3, h, w), 1, dtype=torch.uint8)  # no pixel equals the fill
    ds = Dataset(images, torch.zeros(n, dtype=torch.int64), ["a"], mean, (1 / 255,) * 3, "ones")
    x = torch.cat([b for b, _ in Loader(ds, batch_size=100, augment="cifar-cutout", seed=0)])
    fill = torch.tensor(mean).view(3, 1) * 255
    fill_normalized = fill.round() - fill  # (v / 255 - mean) / std with std = 1/255
    sizes = []
    for xi in x:
        cut = torch.isclose(xi[0], fill_normalized[0], atol=1e-3)
        assert torch.equal(cut, torch.isclose(xi[2], fill_normalized[2], atol=1e-3))  # same square in every channel
        rows, cols = cut.any(1).nonzero(), cut.any(0).nonzero()
        if len(rows):  # one filled rectangle, at most 8x8 (smaller where clipped at an edge)
            assert cut.sum() == len(rows) * len(cols) <= 64
            sizes.append(int(cut.sum()))
    assert len(sizes) == n and sizes.count(64) > n / 3  # every image is cut; most squares are whole


def test_cutout_mask_is_a_seeded_square_centred_anywhere():
    # DeVries & Taylor 2017: a size x size square centred on any pixel, clipped at the edges;
    # the same generator state gives the same squares (resume depends on it)
    from reslab.data.loader import cutout_mask

    n, h, w = 800, 8, 6
    for size in (5, 4):
        a = cutout_mask(n, h, w, size, torch.Generator().manual_seed(1))
        assert a.shape == (n, 1, h, w) and a.dtype == torch.bool
        assert torch.equal(a, cutout_mask(n, h, w, size, torch.Generator().manual_seed(1)))
        assert not torch.equal(a, cutout_mask(n, h, w, size, torch.Generator().manual_seed(2)))
        centres = set()
        for m in a[:, 0]:
            rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
            assert m.sum() == len(rows) * len(cols) and len(rows) <= size and len(cols) <= size  # one rectangle
            assert (rows.diff() == 1).all() and (cols.diff() == 1).all()
            # the square's first row and column, also where the image edge clips it
            top = int(rows[-1]) - size + 1 if rows[0] == 0 and len(rows) < size else int(rows[0])
            left = int(cols[-1]) - size + 1 if cols[0] == 0 and len(cols) < size else int(cols[0])
            if 0 <= top <= h - size and 0 <= left <= w - size:
                assert len(rows) == len(cols) == size
            centres.add((top + size // 2, left + size // 2))
        assert centres == {(y, x) for y in range(h) for x in range(w)}  # every pixel is a centre


def test_reflect_padding_mirrors_the_border_where_zero_padding_blacks_it():
    n = 64
    # Each image is a horizontal ramp 1..32: a shifted crop shows the pad.
    ramp = torch.arange(1, 33, dtype=torch.uint8).view(1, 1, 1, 32).expand(n, 3, 32, 32).contiguous()
    ds = Dataset(ramp, torch.zeros(n, dtype=torch.int64), ["a"], (0.0,) * 3, (1 / 255,) * 3, "ramp")
    black = torch.cat([b for b, _ in Loader(ds, batch_size=n, augment="cifar", seed=0)])
    mirrored = torch.cat([b for b, _ in Loader(ds, batch_size=n, augment="cifar-reflect", seed=0)])
    shifted = (black == 0).flatten(1).any(1)
    assert shifted.sum() > n / 2  # most crops reach into the zero border
    assert (mirrored >= 1).all()  # a mirrored border repeats real pixels, never black
    # Same seed, same crops and flips: where a crop stays inside the image, the two agree.
    assert torch.equal(black[~shifted], mirrored[~shifted])
    # Every row is a 32-wide window of the mirrored ramp 5 4 3 2 | 1 2 ... 32 | 31 30 29 28, maybe flipped.
    padded = torch.nn.functional.pad(torch.arange(1.0, 33).view(1, 1, 32), (4, 4), mode="reflect").flatten()
    windows = [padded[o:o + 32] for o in range(9)]
    windows += [w.flip(0) for w in windows]
    for row in mirrored[:, 0, 0]:
        assert any(torch.equal(row, w) for w in windows)


def test_augment_index_in_bounds():
    g = torch.Generator().manual_seed(0)
    idx = augment_index(100, 32, 32, 4, True, g)
    assert idx.shape == (100, 1024) and idx.min() >= 0 and idx.max() < 40 * 40


def test_split_is_stratified_and_seeded():
    ds = _ramp(240)  # pixel (0, 0) of image i is i: an id
    tr, va = split(ds, val_size=60, seed=0)
    assert len(tr) == 180 and len(va) == 60
    assert va.class_counts().tolist() == [15, 15, 15, 15]
    assert set(tr.images[:, 0, 0, 0].tolist()).isdisjoint(va.images[:, 0, 0, 0].tolist())
    _, va2 = split(ds, val_size=60, seed=0)
    assert torch.equal(va.images, va2.images)
    _, va3 = split(ds, val_size=60, seed=1)
    assert not torch.equal(va.images, va3.images)
    _, vf = split(ds, val_size=0.1)
    assert len(vf) == 24
    _, odd = split(ds, val_size=7)  # 7 over 4 equal classes: 2, 2, 2, 1
    assert sorted(odd.class_counts().tolist()) == [1, 2, 2, 2]
    with pytest.raises(ReslabError):
        split(ds, val_size=240)


def test_bad_arguments():
    ds = _ramp()
    with pytest.raises(ReslabError, match="augment"):
        Loader(ds, augment="autoaugment")
    with pytest.raises(ReslabError, match="dtype"):
        Loader(ds, dtype=torch.uint8)
    for start in (6, -1):
        with pytest.raises(ReslabError, match=rf"start_batch must be in \[0, 5\], got {start}"):
            Loader(ds, batch_size=8).set_epoch(0, start_batch=start)
    for kwargs, line in (({"batch_size": 0}, "batch_size must be positive, got 0"),
                         ({"resize": 0}, "resize must be a positive size in pixels, got 0"),
                         ({"rank": -1, "world": 2}, r"rank must be in \[0, 2\), got -1"),
                         ({"rank": 2, "world": 2}, r"rank must be in \[0, 2\), got 2"),
                         ({"batch_size": 2, "world": 3}, "batch_size 2 leaves no image to some of the 3 ranks"),
                         ({"batch_size": 41, "drop_last": True}, "leaves no batch of the 40 images of ramp")):
        with pytest.raises(ReslabError, match=line):
            Loader(ds, **kwargs)
    # the edges themselves are allowed: one image a batch, 1 x 1 pixels, the last rank, one image a rank
    assert len(Loader(ds, batch_size=1)) == 40 and len(Loader(ds, batch_size=40, drop_last=True)) == 1
    assert Loader(ds, batch_size=4, train=False, resize=1).batch(0, 0)[0].shape == (4, 3, 1, 1)
    assert Loader(ds, batch_size=2, train=False, rank=1, world=2).batch(0, 0)[1].tolist() == [1]


def test_resize_batch_antialiases_only_when_shrinking():
    import torch.nn.functional as F

    from reslab.data.loader import resize_batch

    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert resize_batch(x, 16) is x
    down = resize_batch(x, 6)
    torch.testing.assert_close(down, F.interpolate(x, size=(6, 6), mode="bilinear", antialias=True), rtol=0, atol=0)
    assert (down - F.interpolate(x, size=(6, 6), mode="bilinear")).abs().max() > 0.05  # it matters
    up = F.interpolate(x, size=(24, 24), mode="bilinear", align_corners=False)
    torch.testing.assert_close(resize_batch(x, 24), up, rtol=0, atol=0)


def test_decoded_reads_raw_images_of_an_evaluation_loader_only():
    ds = _ramp()
    loader = Loader(ds, batch_size=8, train=False)
    assert torch.equal(loader.decoded([5, 0, 5]), ds.images[[5, 0, 5]])
    assert loader.decoded([]).shape == (0, 3, 6, 6)  # an empty list is no index of floats
    for what in ("decoded", "evaluated"):
        with pytest.raises(ReslabError) as e:
            getattr(Loader(ds, batch_size=8), what)(*([[0]] if what == "decoded" else []))
        assert str(e.value) == (f"{what}() is for evaluation loaders (train=False): a training pass "
                                "shuffles and augments")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_match_cpu():
    ds = _ramp(64)
    cpu = list(Loader(ds, batch_size=16, seed=2))
    gpu = list(Loader(ds, batch_size=16, seed=2, device="cuda"))
    assert len(cpu) == len(gpu) == 4
    for (x, y), (gx, gy) in zip(cpu, gpu, strict=True):
        assert gx.is_cuda and gy.is_cuda
        torch.testing.assert_close(gx.cpu(), x)
        assert torch.equal(gy.cpu(), y)
