"""`reslab train / eval / predict / plot` end to end on digits, through cli.main()."""

import json

import pytest
import torch
from PIL import Image

from reslab.cli import main
from reslab.data import load

# device=cpu: `reslab eval` runs on the CPU by default, and bf16 on a GPU rounds differently
TRAIN = ["train", "--model", "resnet20", "--data", "digits", "--iters", "30", "--quiet",
         "--set", "batch_size=32", "--set", "val_size=120", "--set", "augment=none", "--set", "threads=1",
         "--set", "log_every=5", "--set", "compile=off", "--set", "device=cpu"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main([*TRAIN, "--out", str(out)]) == 0
    return out


def test_train_writes_a_run_and_eval_agrees_with_it(run_dir, capsys):
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 30 and summary["chosen"] == "best.pt"
    capsys.readouterr()
    assert main(["eval", str(run_dir), "--json", "--confusion", str(run_dir / "confusion.png")]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["n"] == 360
    # the run's own test figure, recomputed from the checkpoint alone
    assert r["top1"] == pytest.approx(summary["test"]["top1"])
    assert r["top1"] > 0.5
    conf = torch.tensor(r["confusion"])
    assert conf.sum() == 360 and conf.diag().sum() == round(r["top1"] * 360)
    assert (run_dir / "confusion.png").stat().st_size > 1000


def test_predict_from_the_checkpoint_alone(run_dir, tmp_path, capsys):
    test = load("digits", split="test")
    for i in range(8):
        Image.fromarray(test.images[i, 0].numpy()).save(tmp_path / f"{i}_{int(test.labels[i])}.png")
    capsys.readouterr()
    assert main(["predict", str(run_dir / "best.pt"), str(tmp_path), "--topk", "3", "--json"]) == 0
    preds = json.loads(capsys.readouterr().out)
    assert len(preds) == 8 and all(len(p["top"]) == 3 for p in preds)
    for p in preds:
        probs = [t["prob"] for t in p["top"]]
        assert probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-5
    hits = sum(p["top"][0]["class"] == p["file"].rsplit("_", 1)[1][0] for p in preds)
    assert hits >= 4  # the trained model (>50% test accuracy) beats chance (10%) on PNG files


def test_resume_continues_a_finished_run_without_training(run_dir, capsys):
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 30


def test_runs_table_of_finished_and_stopped_runs(run_dir, tmp_path, capsys):
    import shutil

    stopped = tmp_path / "runs" / "stopped"
    shutil.copytree(run_dir, stopped)
    (stopped / "summary.json").unlink()  # what an interrupted run lacks
    shutil.copytree(run_dir, tmp_path / "runs" / "done")
    summary = json.loads((run_dir / "summary.json").read_text())
    capsys.readouterr()
    assert main(["runs", str(tmp_path / "runs"), "--json", "--sort", "status"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["run"], r["status"], r["steps"], r["total_steps"]) for r in rows] == [
        (str(tmp_path / "runs" / "done"), "done", 30, 30), (str(stopped), "stopped", 30, 30)]
    assert rows[0]["test_acc"] == summary["test"]["top1"] and rows[1]["test_acc"] is None
    assert rows[0]["best_val_acc"] == rows[1]["best_val_acc"] == summary["best_val_acc"]
    assert main(["runs", str(stopped), str(run_dir)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:6] == ["run", "model", "data", "seed", "status", "steps"] and len(table) == 4
    assert f"{100 * summary['test']['top1']:.2f}" in table[3] and " stopped " in table[2]
    (stopped / "config.json").write_text("{not json")
    assert main(["runs", str(stopped)]) == 2
    assert capsys.readouterr().err.startswith(f"reslab: error: cannot read run {stopped}")


def test_plot_overlays_runs(run_dir, tmp_path):
    out = tmp_path / "both.png"
    assert main(["plot", str(run_dir), str(run_dir), "--labels", "a", "b", "--out", str(out)]) == 0
    assert out.stat().st_size > 5000


@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "digits", "--set", "learning_rate=1"], "unknown config field"),
    (["train", "--data", "digits", "--set", "lr=-1"], "lr must be in"),
    (["train", "--model", "resnet21", "--data", "digits", "--iters", "1"], "unknown model"),
    (["eval", "/nonexistent/run"], "no checkpoint"),
    (["predict", "/nonexistent/best.pt", "x.png"], "no checkpoint"),
])
def test_bad_input_is_one_line_exit_2(argv, message, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path / "r")] if argv[0] == "train" else [])) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("name, content, argv, message", [
    ("bad.safetensors", b"garbage", ["export", "{f}", "--format", "onnx", "--out", "{o}"], "cannot read weights from"),
    ("notes.pt", b"some text", ["export", "{f}", "--format", "onnx", "--out", "{o}"],
     "notes.pt is corrupt or truncated, or not a file torch.save wrote"),
    ("notes.pt", b"some text", ["predict", "{f}", "x.png"], "notes.pt is corrupt or truncated"),
    ("model.safetensors", b"garbage", ["predict", "{f}", "x.png"], "cannot read weights from"),
])
def test_unreadable_files_are_one_line_exit_2(name, content, argv, message, capsys, tmp_path):
    f = tmp_path / name
    f.write_bytes(content)
    assert main([a.format(f=f, o=tmp_path / "out.onnx") for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert f.read_bytes() == content and not (tmp_path / "out.onnx").exists()


def test_a_folder_without_test_split_trains_and_says_so_in_one_line(tmp_path, capsys, noise_folder):
    imgs = noise_folder(per_class=12, side=16)
    argv = ["train", "--model", "resnet20", "--data", f"imagefolder:{imgs}", "--iters", "2", "--quiet",
            "--set", "batch_size=8", "--set", "val_size=6", "--set", "threads=1", "--set", "compile=off",
            "--set", "device=cpu", "--out", str(tmp_path / "run")]
    capsys.readouterr()
    assert main(argv) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "warning" in ln]
    assert warned == [f"reslab: warning: imagefolder:{imgs} has no test split (no test/ sub-folder): "
                      "this run ends without a test evaluation; the validation split still picks the model"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["test"] is None and summary["steps"] == 2


def test_first_command_on_digits_holds_out_a_split_that_fits(tmp_path, capsys):
    """`reslab train --model resnet20 --data digits --epochs N`: the default validation split is
    10% of the 1,437 training digits (stratified), not CIFAR's 5,000."""
    out = tmp_path / "run"
    argv = ["train", "--model", "resnet20", "--data", "digits", "--epochs", "1", "--quiet", "--set", "threads=1",
            "--set", "device=cpu", "--out", str(out)]
    assert main(argv) == 0
    val = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines() if '"val_acc"' in ln]
    assert val and json.loads((out / "summary.json").read_text())["chosen"] == "best.pt"
    from reslab.data import holdout

    train, held = holdout(load("digits"), None, seed=0)
    assert (len(train), len(held)) == (1293, 144)
    share = load("digits").class_counts().double() * 144 / 1437  # stratified: each class gives its share
    assert ((held.class_counts() - share).abs() < 1).all()


def test_tiny_folder_trains_without_validation_and_says_so(tmp_path, capsys, noise_folder):
    imgs = noise_folder(per_class=5, side=16)
    argv = ["train", "--model", "resnet20", "--data", f"imagefolder:{imgs}", "--iters", "2", "--quiet",
            "--set", "batch_size=4", "--set", "threads=1", "--set", "compile=off", "--set", "device=cpu",
            "--out", str(tmp_path / "run")]
    capsys.readouterr()
    assert main(argv) == 0
    warned = [ln for ln in capsys.readouterr().err.splitlines() if "too few" in ln]
    assert len(warned) == 1 and "10 training images are too few" in warned[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["chosen"] == "last.pt"


@pytest.mark.parametrize("resize, side", [(None, 32), (24, 24)])
def test_photos_of_different_sizes_train_from_the_cli(resize, side, tmp_path, capsys, noise_folder):
    """Real photos differ in size: they are fitted (shorter side, center crop) on the way into
    the cache, to --set resize or else the model's default input (32 for resnet20)."""
    imgs = noise_folder(per_class=6, side=40)
    rng = torch.Generator().manual_seed(0)
    for i, (w, h) in enumerate([(64, 48), (30, 90), (50, 50)]):  # landscape, portrait, square
        pixels = torch.randint(0, 256, (h, w, 3), generator=rng, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(imgs / "a" / f"photo{i}.jpg")
    argv = ["train", "--model", "resnet20", "--data", f"imagefolder:{imgs}", "--iters", "2", "--quiet",
            "--set", "batch_size=4", "--set", "val_size=4", "--set", "threads=1", "--set", "compile=off",
            "--set", "device=cpu", "--out", str(tmp_path / "run")]
    capsys.readouterr()
    assert main(argv + (["--set", f"resize={resize}"] if resize else [])) == 0
    err = capsys.readouterr().err
    assert f"resized to {side} px on its shorter side" in err
    ds = load(f"imagefolder:{imgs}", fallback_size=side)
    assert tuple(ds.images.shape) == (15, 3, side, side)
    payload = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert payload["image_size"] == [3, side, side]
    # predict reads a photo of any size into that input
    assert main(["predict", str(tmp_path / "run"), str(imgs / "a" / "photo0.jpg"), "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 1


def test_val_size_must_be_a_count_or_a_fraction():
    from reslab.errors import ReslabError
    from reslab.train import TrainConfig

    with pytest.raises(ReslabError, match="val_size must be an image count"):
        TrainConfig(val_size=1.5)
    assert TrainConfig(val_size=0.2).val_size == 0.2 and TrainConfig(val_size=3000).val_size == 3000
