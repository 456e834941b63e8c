"""`reslab train` on streamed image folders: the loader choice, exact resume, DDP shares,
refused class mismatches, and eval/predict of a streamed run.

Folders of a few dozen random JPEGs of 40-60 px, ResNet-20 at 32x32, one thread, no
decode worker processes: each test takes seconds, but the two-process one (slow).
"""

import json
import warnings

import pytest
import torch

from helpers import WORLD, interrupt_at, photos, run_ranks
from reslab import cli
from reslab.data import DataWarning, ImageFiles, Loader, StreamingLoader, folder_files, streaming
from reslab.data.streaming import IMAGENET_MEAN, IMAGENET_STD
from reslab.errors import ReslabError
from reslab.train import TrainConfig, load_checkpoint, preset, train
from reslab.train.splits import load_data, make_loader

CPU = torch.device("cpu")


def _photos(root, classes=("a", "b"), per_class=12, seed=0):
    """root/<class>/NN.jpg: random RGB JPEGs of 40-60 px a side, each of its own size."""
    return photos(root, classes, per_class, seed)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RESLAB_DATA", str(tmp_path / "cache"))


def tiny(data, **changes) -> TrainConfig:
    base = dict(model="resnet20", data=f"imagefolder:{data}", iters=6, batch_size=8, val_size=4, lr=0.05,
                schedule="cosine", log_every=1, compile="off", seed=0, threads=1, device="cpu", amp="none",
                loader="stream", workers=0, test=False)
    return TrainConfig(**{**base, **changes})


def test_auto_streams_over_the_memory_budget_and_memory_forces_the_cache(tmp_path, monkeypatch):
    base = tmp_path / "set"
    _photos(base / "train")
    _photos(base / "test", per_class=3, seed=1)
    monkeypatch.setattr(streaming, "memory_budget", lambda device=None: 1000)
    cfg = tiny(base, loader="auto")
    with pytest.warns(DataWarning) as record:
        data = load_data(cfg)
    said = [str(w.message) for w in record if "memory budget" in str(w.message)]
    assert len(said) == 1 and "\n" not in said[0]
    assert "30 images at 32x32" in said[0] and "streaming" in said[0]  # 24 train + 6 test, 3 x 32 x 32 bytes each
    assert data.loader == "stream" and data.image_size == (3, 32, 32)
    assert (data.mean, data.std) == (IMAGENET_MEAN, IMAGENET_STD)
    assert isinstance(data.train, ImageFiles) and len(data.train) == 20 and len(data.val) == 4
    assert len(data.test) == 6
    loader = make_loader(data.train, cfg, True, CPU)
    assert isinstance(loader, StreamingLoader) and loader.dataset.image_size == 32
    x, y = next(iter(loader))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        forced = load_data(cfg.replace(loader="memory"))
    assert not any("memory budget" in str(w.message) for w in record)
    assert forced.loader == "memory" and isinstance(make_loader(forced.train, cfg, True, CPU), Loader)
    # the same stratified, seeded hold-out on either path
    assert sorted(forced.val.labels.tolist()) == sorted(data.val.labels.tolist())

    monkeypatch.setattr(streaming, "memory_budget", lambda device=None: 10**12)
    assert load_data(cfg).loader == "memory"


def test_a_batch_larger_than_the_streamed_images_is_refused_in_one_line(tmp_path):
    _photos(tmp_path / "imgs")  # 24 images, 4 held out
    with pytest.raises(ReslabError, match=r"^batch_size 21 exceeds the 20 training images$"):
        train(tiny(tmp_path / "imgs", batch_size=21), tmp_path / "run", progress=False)
    with warnings.catch_warnings():  # test=False: the folder's missing test split goes unmentioned
        warnings.simplefilter("error", DataWarning)
        train(tiny(tmp_path / "imgs", batch_size=20, iters=1), tmp_path / "run", progress=False)  # one batch an epoch


def _state(ckpt):
    return {**ckpt["model"], **{f"opt.{k}": v["momentum_buffer"] for k, v in ckpt["optimizer"]["state"].items()}}


@pytest.mark.filterwarnings("ignore::reslab.data.DataWarning")  # over the budget; photos of mixed sizes
def test_streamed_resume_is_bit_exact(tmp_path, monkeypatch):
    """3 steps, interrupt (mid-epoch), resume for 3 more == 6 steps straight, to the bit.

    loader=auto streams these images while they exceed the memory budget; the resumed run streams
    them as its first part did, even where the budget would now hold them.
    """
    _photos(tmp_path / "imgs")
    monkeypatch.setattr(streaming, "memory_budget", lambda device=None: 1000)
    cfg = tiny(tmp_path / "imgs", loader="auto")  # 24 images, 4 held out: 2 batches of 8 per epoch, 4 left over
    train(cfg, tmp_path / "full", progress=False)
    interrupt_at(cfg, tmp_path / "split", 3)
    mid = load_checkpoint(tmp_path / "split" / "last.pt")
    assert (mid["state"]["step"], mid["state"]["epoch"], mid["state"]["batch"]) == (3, 1, 1)
    assert mid["env"]["loader"] == "stream"
    monkeypatch.setattr(streaming, "memory_budget", lambda device=None: 10**12)
    assert load_data(cfg).loader == "memory"
    train(None, tmp_path / "split", resume=True, progress=False)
    assert json.loads((tmp_path / "split" / "config.json").read_text())["env"]["loader"] == "stream"
    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 6
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert not torch.equal(a["model"]["fc.weight"], mid["model"]["fc.weight"])


def test_train_refuses_val_classes_other_than_train(tmp_path, capsys):
    base = tmp_path / "set"
    _photos(base / "train", per_class=2)
    _photos(base / "val", classes=("a", "c"), per_class=2)
    code = cli.main(["train", "--data", f"imagefolder:{base}", "--model", "resnet20", "--iters", "1",
                     "--out", str(tmp_path / "run"), "--set", "loader=stream", "--set", "device=cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "different class folders (b, c in one only)" in err
    _photos(base / "test", classes=("a", "b", "d"), per_class=1)
    with pytest.raises(ReslabError, match="different class folders"):
        folder_files(f"imagefolder:{base}", "test")


def test_eval_and_predict_of_a_streamed_run(tmp_path, capsys):
    """`reslab eval` gives the run's own validation and test figures (same transform: resize
    S/0.875, center crop S; ImageNet statistics); `reslab predict` agrees with it per image."""
    base = tmp_path / "set"
    _photos(base / "train")
    _photos(base / "val", per_class=4, seed=1)
    _photos(base / "test", per_class=3, seed=2)
    run = tmp_path / "run"
    result = train(tiny(base, iters=None, epochs=1, test=True), run, progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = next(r for r in records if r["kind"] == "epoch")
    assert result.test.n == 6 and json.loads((run / "config.json").read_text())["env"]["loader"] == "stream"

    assert cli.main(["eval", str(run), "--json"]) == 0
    test = json.loads(capsys.readouterr().out)
    assert test["n"] == 6 and test["top1"] == result.test.top1
    # the HTML report of a streamed run: its metrics, per-class table, confusion matrix and the image
    # views, read from the files (tests/test_report_html.py checks them pixel for pixel)
    page = tmp_path / "report.html"
    assert cli.main(["report", str(run), "--out", str(page), "--gradcam", "2"]) == 0
    capsys.readouterr()
    html = page.read_text()
    assert f"top-1 {100 * result.test.top1:.2f}%" in html and "Per-class accuracy" in html
    wrong = round(6 * (1 - result.test.top1))
    assert f"Misclassified: {wrong} of {wrong}" in html and html.count('<figure class="thumb">') == wrong
    assert html.count('alt="Grad-CAM of test image') == 2
    assert test["loss"] == pytest.approx(result.test.loss, rel=1e-6)
    assert cli.main(["eval", str(run), "--split", "val", "--json"]) == 0
    on_val = json.loads(capsys.readouterr().out)
    assert on_val["n"] == 8 and on_val["loss"] == pytest.approx(val["val_loss"], rel=1e-6)

    from reslab.evaluate import evaluate
    from reslab.predict import split_loader
    from reslab.train.record import load_trained

    trained = load_trained(run)
    assert trained.record.loader == "stream" and (trained.record.mean, trained.record.std) == (IMAGENET_MEAN, IMAGENET_STD)
    logits = evaluate(trained.model, split_loader(trained), 2, keep_logits=True).logits
    image = base / "test" / "b" / "01.jpg"  # item 4 of the test split
    assert cli.main(["predict", str(run), str(image), "--json", "--topk", "2"]) == 0
    (predicted,) = json.loads(capsys.readouterr().out)
    probs = torch.softmax(logits[4], 0)
    for top in predicted["top"]:
        assert top["prob"] == pytest.approx(probs[trained.record.classes.index(top["class"])].item(), abs=1e-5)


def test_imagenet_preset_streams_train_and_validates_on_val(tmp_path):
    assert TrainConfig().loader == "auto" and preset("imagenet").loader == "stream"
    base = tmp_path / "imagenet"
    _photos(base / "train", per_class=3)
    _photos(base / "val", per_class=2, seed=1)
    cfg = preset("imagenet", data=f"imagefolder:{base}")
    with pytest.warns(DataWarning, match="no test split"):
        data = load_data(cfg, device=CPU)
    assert data.loader == "stream" and data.image_size == (3, 224, 224)
    assert len(data.train) == 6 and data.val.split == "val" and len(data.val) == 4
    evaluation = make_loader(data.val, cfg, False, CPU)
    assert (evaluation.dataset.image_size, evaluation.dataset.resize_size) == (224, 256)
    training = make_loader(data.train, cfg.replace(batch_size=2, workers=0), True, CPU)
    assert training.dataset.train and training.dataset.image_size == 224  # RandomResizedCrop(224) + flip
    assert next(iter(training))[0].shape == (2, 3, 224, 224)


# --- two ranks (gloo, CPU) ---------------------------------------------------------------
def _rank_main(rank: int, cfg: TrainConfig, out: str, record: str) -> None:
    import torch.distributed as dist

    import reslab.data.streaming as s

    read = []
    getitem = s.StreamingImageFolder.__getitem__

    def recorded(self, i):  # the training images this rank decodes
        if self.train:
            read.append((self.epoch, i))
        return getitem(self, i)

    s.StreamingImageFolder.__getitem__ = recorded
    train(cfg, out, progress=False)
    torch.save(read, f"{record}.{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.slow  # two processes start torch: about 15 s on 2 busy cores
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built in")
def test_two_ranks_read_disjoint_shares_of_each_epoch(tmp_path):
    _photos(tmp_path / "imgs", per_class=11)  # 22 images, batch 8: 2 global batches, 6 left over
    cfg = tiny(tmp_path / "imgs", iters=None, epochs=2, val_size=0)
    run_ranks(_rank_main, cfg, str(tmp_path / "run"), str(tmp_path / "read"))
    assert load_checkpoint(tmp_path / "run" / "last.pt")["state"]["step"] == 4
    read = [torch.load(tmp_path / f"read.{r}.pt") for r in range(WORLD)]
    reference = make_loader(load_data(cfg, with_test=False).train, cfg, True, CPU)
    for epoch in range(2):
        shares = [[i for e, i in read[r] if e == epoch] for r in range(WORLD)]
        assert all(len(s) == len(set(s)) == 8 for s in shares)  # no image read twice
        assert not set(shares[0]) & set(shares[1])
        # together: the epoch's 16 first images of its seeded order; the last 6 are the remainder
        assert set(shares[0]) | set(shares[1]) == set(reference.order(epoch)[:16].tolist())
