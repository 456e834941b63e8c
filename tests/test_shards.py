"""Tar shards: `reslab shard` writes every image once (bytes, class, extension kept), refuses
to overwrite what is not its own; `--data shards:DIR` trains, resumes and evaluates from them,
each rank reading its own share; bad shards are named in one line.

Folders of a few dozen random JPEGs/PNGs of 40-60 px, ResNet-20 at 32x32, one thread, no
decode worker processes in training: each test takes seconds, but the two-process one (slow).
"""

import hashlib
import io
import json
import os
import tarfile
import warnings

import numpy as np
import pytest
import torch

from helpers import WORLD, interrupt_at, photos, run_ranks
from reslab import cli
from reslab.data import DataWarning, ShardLoader, ShardSplit, open_split, write_shards
from reslab.data.shards import MANIFEST, buffer_order
from reslab.errors import ReslabError
from reslab.train import TrainConfig, load_checkpoint, train
from reslab.train.splits import load_data, make_loader

CPU = torch.device("cpu")
CLASSES = ("ant", "bee", "cat")


def _photos(root, per_class=10, seed=0, classes=CLASSES):
    """root/<class>/NN.jpg (every fourth a .png): random RGB images of 40-60 px a side."""
    return photos(root, classes, per_class, seed, png_every=4)


def _members(path):
    """{key: {ext: bytes}} of a tar shard, and its member names in order."""
    out, names = {}, []
    with tarfile.open(path) as tar:
        for m in tar:
            names.append(m.name)
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out, names


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "cache"))


@pytest.fixture
def sharded(tmp_path):
    """(folder, shard dir): train/ 30 images, val/ 9, test/ 6, in shards of 7."""
    base = tmp_path / "set"
    _photos(base / "train")
    _photos(base / "val", per_class=3, seed=1)
    _photos(base / "test", per_class=2, seed=2)
    write_shards(f"imagefolder:{base}", tmp_path / "shards", shard_size=7)
    return base, tmp_path / "shards"


def tiny(data, **changes) -> TrainConfig:
    base = dict(model="resnet20", data=f"shards:{data}", iters=6, batch_size=8, lr=0.05, schedule="cosine",
                log_every=1, compile="off", seed=0, threads=1, device="cpu", amp="none", resize=32, workers=0,
                test=False)
    return TrainConfig(**{**base, **changes})


# --- writing --------------------------------------------------------------------------------
def test_shard_writes_each_image_once_with_its_bytes_and_class(tmp_path, capsys):
    base = tmp_path / "set"
    _photos(base / "train")
    _photos(base / "test", per_class=2, seed=2)
    out = tmp_path / "shards"
    assert cli.main(["shard", f"imagefolder:{base}", "--out", str(out), "--shard-size", "7"]) == 0
    assert "train: 30 images in 5 shard(s)" in capsys.readouterr().out
    m = json.loads((out / MANIFEST).read_text())
    assert m["classes"] == list(CLASSES) and set(m["splits"]) == {"train", "test"}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [MANIFEST] + [f"train-{i:06d}.tar" for i in range(5)] + ["test-000000.tar"])  # no temporary file left
    for split, folder, n in (("train", base / "train", 30), ("test", base / "test", 6)):
        entry = m["splits"][split]
        assert entry["count"] == n and entry["class_counts"] == [n // 3] * 3
        assert [sh["count"] for sh in entry["shards"]] == ([7, 7, 7, 7, 2] if split == "train" else [6])
        files = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in folder.rglob("*.*")}
        seen, keys, mixed = [], [], 0
        for sh in entry["shards"]:
            path = out / sh["name"]
            assert sh["bytes"] == path.stat().st_size
            assert sh["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
            samples, names = _members(path)
            assert len(samples) == sh["count"] and len(names) == 2 * sh["count"]
            classes = set()
            keys += samples
            for member in samples.values():
                (ext,) = set(member) - {"cls"}
                source = files[hashlib.sha256(member[ext]).hexdigest()]  # the file's bytes, as they are
                assert ext == source.suffix[1:] and int(member["cls"]) == CLASSES.index(source.parent.name)
                seen.append(source)
                classes.add(source.parent.name)
            mixed += len(classes) > 1
        assert sorted(seen) == sorted(files.values())  # every image exactly once
        assert keys == [f"{i:08d}" for i in range(n)]  # KEY: the image's place in the shuffled split
        assert mixed == len(entry["shards"])  # shuffled before sharding: every shard mixes classes
    # the same folder and seed: the same bytes; a re-run replaces its own shards, stale ones go
    again = write_shards(f"imagefolder:{base}", tmp_path / "again", shard_size=7)
    assert again["splits"] == m["splits"]
    assert cli.main(["shard", f"imagefolder:{base}", "--out", str(out), "--shard-size", "20"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "test-000000.tar", "train-000000.tar",
                                                     "train-000001.tar"]


def test_shard_never_replaces_files_it_did_not_write(tmp_path, capsys):
    base = _photos(tmp_path / "imgs", per_class=2)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for target in (out, out / "notes.txt", base / "shards"):
        assert cli.main(["shard", f"imagefolder:{base}", "--out", str(target)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(target) in err
    (out / "notes.txt").unlink()
    (out / MANIFEST).write_text('{"not": "reslab"}')
    assert cli.main(["shard", f"imagefolder:{base}", "--out", str(out)]) == 2
    assert "not a reslab shard manifest" in capsys.readouterr().err
    assert (out / MANIFEST).read_text() == '{"not": "reslab"}' and sorted(os.listdir(out)) == [MANIFEST]


# --- reading ----------------------------------------------------------------------------------
def test_buffer_order_is_a_seeded_permutation_within_its_window():
    order = buffer_order(1000, 50, seed=7)
    assert sorted(order.tolist()) == list(range(1000))
    assert np.array_equal(order, buffer_order(1000, 50, seed=7))
    assert not np.array_equal(order, buffer_order(1000, 50, seed=8))
    assert all(order[t] < t + 50 for t in range(1000))  # never ahead of what the buffer has read
    assert buffer_order(3, 50, 0).tolist() != [] and sorted(buffer_order(3, 50, 0).tolist()) == [0, 1, 2]


def test_loader_shares_epochs_between_ranks_and_order_ignores_workers(sharded):
    _, shards = sharded
    split = open_split(f"shards:{shards}")
    assert isinstance(split, ShardSplit) and len(split) == 30 and split.classes == list(CLASSES)

    def loader(**kw):
        return ShardLoader(split, **{"batch_size": 8, "image_size": 16, "seed": 3, "num_workers": 0, **kw})

    one = loader()
    assert len(one) == 3  # 30 images, 3 global batches of 8: the 6 last of the epoch's sequence wait
    for epoch in range(2):
        seq = one.sequence(epoch)
        assert sorted(seq.tolist()) == list(range(30))
        shares = [loader(rank=r, world=2).plan(epoch) for r in range(2)]
        assert [p.steps for p in shares] == [3, 3] and [len(p.ids) for p in shares] == [12, 12]
        assert np.array_equal(np.concatenate([p.ids for p in shares]), seq[:24])  # disjoint, all once
    assert not np.array_equal(one.sequence(0), one.sequence(1))  # shards reordered each epoch
    direct = list(one)
    assert [tuple(x.shape) for x, _ in direct] == [(8, 3, 16, 16)] * 3
    workers = list(loader(num_workers=2))  # two worker processes decode alternate batches
    for (xa, ya), (xb, yb) in zip(direct, workers, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    resumed = loader()
    resumed.set_epoch(0, start_batch=2)
    (tail,) = list(resumed)
    assert torch.equal(tail[0], direct[2][0])
    evaluation = ShardLoader(open_split(f"shards:{shards}", "test"), batch_size=4, train=False, image_size=16,
                             num_workers=0)
    labels = torch.cat([y for _, y in evaluation])
    assert len(labels) == 6 and labels.bincount().tolist() == [2, 2, 2]


def test_order_is_the_epochs_sequence_as_positions_of_the_split(sharded):
    _, shards = sharded
    split = open_split(f"shards:{shards}").subset(range(0, 30, 3))
    loader = ShardLoader(split, batch_size=2, image_size=16, seed=3, num_workers=0)
    for epoch in range(2):
        order = loader.order(epoch)
        assert sorted(order.tolist()) == list(range(10))
        assert np.array_equal(split.keep[order].numpy(), loader.sequence(epoch))


def test_resume_mid_epoch_from_shards_is_bit_exact(sharded):
    """Guarantee: the order of an epoch is a pure function of (seed, epoch, ranks, batch size), so
    3 steps, an interrupt inside epoch 1, and 3 more give the same weights as 6 steps straight."""
    _, shards = sharded
    cfg = tiny(shards)  # 30 train images, batch 8: 3 steps per epoch
    tmp = shards.parent
    train(cfg, tmp / "full", progress=False)
    interrupt_at(cfg, tmp / "split", 4)
    mid = load_checkpoint(tmp / "split" / "last.pt")
    assert (mid["state"]["step"], mid["state"]["epoch"], mid["state"]["batch"]) == (4, 1, 1)
    assert mid["env"]["loader"] == "stream"
    train(None, tmp / "split", resume=True, progress=False)
    a, b = load_checkpoint(tmp / "full" / "last.pt"), load_checkpoint(tmp / "split" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 6
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert not torch.equal(a["model"]["fc.weight"], mid["model"]["fc.weight"])


def test_train_validates_on_val_shards_and_eval_agrees_with_the_folder(sharded, capsys):
    base, shards = sharded
    run = shards.parent / "run"
    result = train(tiny(shards, iters=None, epochs=1, test=True), run, progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epoch = next(r for r in records if r["kind"] == "epoch")
    assert "val_acc" in epoch and result.test.n == 6
    assert cli.main(["eval", str(run), "--split", "val", "--json"]) == 0
    on_val = json.loads(capsys.readouterr().out)
    assert on_val["n"] == 9 and on_val["loss"] == pytest.approx(epoch["val_loss"], rel=1e-6)
    # the shards hold the folder's bytes and the evaluation crop is streaming's: the same figures
    assert cli.main(["eval", str(run), "--json", "--data", f"shards:{shards}"]) == 0
    from_shards = json.loads(capsys.readouterr().out)
    assert cli.main(["eval", str(run), "--json", "--data", f"imagefolder:{base}"]) == 0
    from_folder = json.loads(capsys.readouterr().out)
    assert from_shards["n"] == from_folder["n"] == 6
    assert from_shards["loss"] == pytest.approx(from_folder["loss"], rel=1e-6)
    assert from_shards["top1"] == from_folder["top1"] == result.test.top1


def test_shards_without_val_train_without_validation_and_memory_is_refused(tmp_path):
    base = _photos(tmp_path / "imgs", per_class=4)
    write_shards(f"imagefolder:{base}", tmp_path / "shards", shard_size=5)
    with pytest.warns(DataWarning, match="no val shards"):
        data = load_data(tiny(tmp_path / "shards"), with_test=False, device=CPU)
    assert data.val is None and data.loader == "stream" and len(data.train) == 12
    with pytest.raises(ReslabError, match="streamed"):
        tiny(tmp_path / "shards", loader="memory")


# --- bad input ----------------------------------------------------------------------------------
def _one_line_error(capsys, argv):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_truncated_foreign_or_changed_shards_are_named_in_one_line(sharded, capsys):
    _, shards = sharded
    argv = ["train", "--data", f"shards:{shards}", "--model", "resnet20", "--iters", "1",
            "--out", str(shards.parent / "run"), "--set", "device=cpu", "--set", "workers=0",
            "--set", "compile=off", "--set", "threads=1", "--set", "resize=32", "--set", "batch_size=8"]
    victim = shards / "train-000001.tar"
    original = victim.read_bytes()
    victim.write_bytes(original[:len(original) // 2])
    err = _one_line_error(capsys, argv)
    assert str(victim) in err and "truncated" in err

    # a foreign tar of the listed size: named when read
    foreign = io.BytesIO()
    with tarfile.open(fileobj=foreign, mode="w") as tar:
        info = tarfile.TarInfo("README.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    victim.write_bytes(foreign.getvalue().ljust(len(original), b"\0"))  # zeros after the end of a tar are allowed
    split = open_split(f"shards:{shards}")
    with pytest.raises(ReslabError, match="train-000001.tar: .*not a shard written by reslab shard") as e:
        for epoch in range(3):  # the shard is read (in part at least) in every epoch
            list(ShardLoader(split, batch_size=8, image_size=16, num_workers=0, seed=epoch))
    assert "\n" not in str(e.value)

    # one flipped byte inside an image: same size, the SHA-256 no longer matches
    with tarfile.open(fileobj=io.BytesIO(original)) as tar:
        first = tar.next()
    changed = bytearray(original)
    changed[first.offset_data + first.size // 2] ^= 0xFF
    victim.write_bytes(bytes(changed))
    evaluation = ShardLoader(split, batch_size=8, train=False, image_size=16, num_workers=0)
    with warnings.catch_warnings(), pytest.raises(ReslabError, match="train-000001.tar: its SHA-256 differs"):
        warnings.simplefilter("ignore", DataWarning)  # the flipped byte may also spoil the image
        list(evaluation)

    (shards / MANIFEST).write_text("{broken")
    err = _one_line_error(capsys, argv)
    assert str(shards / MANIFEST) in err


def test_unreadable_images_in_a_shard_are_skipped_with_count_and_names(tmp_path):
    base = _photos(tmp_path / "imgs", per_class=4)
    (base / "bee" / "zz_broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    write_shards(f"imagefolder:{base}", tmp_path / "shards", shard_size=5)
    loader = ShardLoader(open_split(f"shards:{tmp_path / 'shards'}"), batch_size=13, train=False, image_size=16,
                         num_workers=0)
    with pytest.warns(DataWarning, match=r"skipped 1 unreadable image\(s\) in epoch 0: train-00000\d.tar:\d+.jpg"):
        batches = list(loader)
    assert sum(len(y) for _, y in batches) == 12 and len(loader.skipped) == 1
    key = loader.skipped[0].split(":")[1]
    samples, _ = _members(tmp_path / "shards" / loader.skipped[0].split(":")[0])
    assert samples[key.split(".")[0]]["jpg"] == b"\xff\xd8 not really a jpeg"
    # row i of the pass is the image at evaluated()[i], decoded alone (one read of the shards) the same
    (bad,) = loader.unreadable
    rows = loader.evaluated()
    assert 0 < bad < 12 and rows.tolist() == [p for p in range(13) if p != bad]
    x = torch.cat([x for x, _ in batches])
    assert torch.equal(loader.output.normalize(loader.decoded(rows.flip(0))), x.flip(0))
    with pytest.raises(ReslabError, match=f"cannot read {loader.skipped[0]}$"):
        loader.decoded([bad])


# --- two ranks (gloo, CPU) ---------------------------------------------------------------
def _rank_main(rank: int, cfg: TrainConfig, out: str, record: str) -> None:
    import torch.distributed as dist

    import reslab.data.streaming as s

    read = []
    decode = s.ImageCrops.decode

    def recorded(self, source, i):  # the training images this rank decodes
        if self.train:
            read.append((self.epoch, i))
        return decode(self, source, i)

    s.ImageCrops.decode = recorded
    train(cfg, out, progress=False)
    torch.save(read, f"{record}.{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # two processes start torch: about 13 s on 2 busy cores
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_two_ranks_read_each_image_of_an_epoch_once(sharded):
    _, shards = sharded
    tmp = shards.parent
    cfg = tiny(shards, iters=None, epochs=2)  # 30 images, batch 8: 3 global batches, 6 left over
    run_ranks(_rank_main, cfg, str(tmp / "run"), str(tmp / "read"))
    assert load_checkpoint(tmp / "run" / "last.pt")["state"]["step"] == 6
    read = [torch.load(tmp / f"read.{r}.pt") for r in range(WORLD)]
    reference = make_loader(load_data(cfg, with_test=False).train, cfg, True, CPU)
    for epoch in range(2):
        shares = [[i for e, i in read[r] if e == epoch] for r in range(WORLD)]
        assert all(len(s) == len(set(s)) == 12 for s in shares)  # 3 batches of 4 per rank, none twice
        assert not set(shares[0]) & set(shares[1])
        # together: the first 24 images of the epoch's shard sequence, each once; the 6 last wait
        assert sorted(shares[0] + shares[1]) == sorted(reference.sequence(epoch)[:24].tolist())


@pytest.mark.parametrize("size", [0, -3, True, 2.5, "7"])
def test_a_shard_size_that_is_not_a_positive_whole_number_is_refused(tmp_path, size):
    base = tmp_path / "set"
    _photos(base / "train", per_class=1)
    with pytest.raises(ReslabError) as e:
        write_shards(f"imagefolder:{base}", tmp_path / "shards", shard_size=size)
    assert str(e.value) == f"shard_size must be a positive number of images, got {size!r}"
    assert not (tmp_path / "shards").exists()
