"""Bad input across the CLI: one line on stderr, exit status 2, no traceback, and nothing of
a user's run or files changed. Each case runs against a finished reference run and a folder
of the user's own files, whose checksums must come out unchanged."""

import hashlib
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from reslab.cli import main

TRAIN = ["train", "--model", "resnet20", "--data", "digits", "--iters", "4", "--quiet", "--set", "batch_size=32",
         "--set", "threads=1", "--set", "compile=off", "--set", "device=cpu", "--set", "augment=none"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A finished run, a user's folder (notes, a config.json, images of one class, a 16-bit PNG)."""
    root = tmp_path_factory.mktemp("world")
    assert main([*TRAIN, "--out", str(root / "run")]) == 0
    user = root / "user"
    user.mkdir()
    (user / "notes.txt").write_text("my notes\n")
    (user / "config.json").write_text('{"mine": true}\n')
    (user / "results.json").write_text('{"mine": true}\n')
    (user / "empty.txt").write_text("")
    one = user / "oneclass" / "cats"
    one.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(one / f"{i}.png")
    (user / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    import torch

    import reslab

    torch.save(reslab.create_model("resnet20").state_dict(), user / "bare-resnet20.pt")  # records no model
    torch.save({"epoch": 3}, user / "stub.pt")
    Image.new("L", (1, 1)).resize((1, 1)).save(user / "huge.png")
    _make_bomb(user / "huge.png")
    return root


def _make_bomb(path):
    """A PNG whose header says 14000 x 14000 pixels (over PIL's decompression-bomb limit x 2)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 14000, 14000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100))
                     + chunk(b"IEND", b""))


def _checksums(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


R, U = "{run}", "{user}"
CASES = [
    # names
    (["train", "--model", "resnet21", "--data", "digits", "--out", "{new}"], "unknown model"),
    (["train", "--data", "cifar11", "--out", "{new}"], "unknown dataset"),
    (["train", "--preset", "nope", "--out", "{new}"], "invalid choice"),
    (["summary", "resnet999"], "unknown model"),
    (["models", "--sort", "nope"], "unrecognized arguments"),
    (["bench", "--models", "resnet999"], "unknown model"),
    (["experiment", "nope"], "invalid choice"),
    (["experiment", "depth", "--nets", "resnet-9", "--depths", "8", "--out", "{new}"], "has no net"),
    # config values
    (["train", "--data", "digits", "--set", "lr=abc", "--out", "{new}"], "lr must be in"),
    (["train", "--data", "digits", "--set", "lr", "--out", "{new}"], "key=value"),
    (["train", "--data", "digits", "--set", "nosuch=1", "--out", "{new}"], "unknown config field"),
    (["train", "--data", "digits", "--set", "val_size=1.5", "--out", "{new}"], "val_size must be"),
    (["train", "--data", "digits", "--set", "batch_size=0", "--out", "{new}"], "batch_size must be"),
    (["train", "--data", "digits", "--set", "model_args=notjson", "--out", "{new}"], "model_args must be"),
    (["train", "--data", "digits", "--set", 'model_args={"shortcut":"D"}', "--iters", "1", "--out", "{new}"],
     "bad argument for model"),
    (["train", "--data", "digits", "--set", 'model_args={"num_classes":5}', "--iters", "1", "--set", "threads=1",
      "--out", "{new}"], "has 10 classes"),
    (["train", "--data", "digits", "--set", 'model_args={"num_classes":-1}', "--iters", "1", "--set", "threads=1",
      "--out", "{new}"], "num_classes"),
    (["train", "--data", "digits", "--epochs", "0", "--out", "{new}"], "positive integer"),
    (["train", "--data", "digits", "--set", "milestones=[0.9,0.5]", "--out", "{new}"], "milestones must be"),
    (["train", "--data", "digits", "--set", "amp=fp8", "--out", "{new}"], "amp must be one of"),
    (["train", "--data", "digits", "--set", "warmup_lr=0.01", "--out", "{new}"], "go together"),
    # data
    (["train", "--data", "imagefolder:/nonexistent/photos", "--out", "{new}"], "does not exist"),
    (["train", "--data", "imagefolder:" + U + "/oneclass", "--iters", "1", "--set", "threads=1", "--out", "{new}"],
     "at least 2 class"),
    (["train", "--data", "imagefolder:" + U + "/notes.txt", "--out", "{new}"], "not a directory"),
    # run directories: never overwritten, mixed or taken over
    (["train", "--data", "digits", "--out", R], "already holds a run"),
    (["train", "--data", "digits", "--out", R + "/config.json"], "is a file"),
    (["train", "--data", "digits", "--out", U], "not a reslab run"),
    (["train", "--resume", "/nonexistent/run"], "no checkpoint"),
    (["train", "--resume", U], "no checkpoint"),
    (["train", "--resume", R, "--set", "lr=0.5"], "own config"),
    # checkpoints and weights
    (["eval", "/nonexistent/run"], "no checkpoint"),
    (["eval", U + "/notes.txt"], "corrupt or truncated"),
    (["eval", R, "--split", "nosuch"], "invalid choice"),
    (["eval", R, "--data", "cifar11"], "unknown dataset"),
    (["predict", R, "/nonexistent/cat.jpg"], "no such image file"),
    (["predict", R, U + "/corrupt.png"], "cannot read"),
    (["predict", U + "/notes.txt", U + "/corrupt.png"], "corrupt or truncated"),
    (["export", U + "/notes.txt", "--out", "{new}.onnx"], "corrupt or truncated"),
    (["export", "--model", "resnet999", "--out", "{new}.onnx"], "unknown model"),
    # outputs that hold a user's or a run's file
    (["export", R, "--format", "onnx", "--out", R + "/best.pt"], "belongs to the run"),
    (["export", R, "--format", "onnx", "--out", U + "/notes.txt"], "reslab does not replace it"),
    (["export", R, "--format", "safetensors", "--out", R + "/model.safetensors"], "belongs to the run"),
    (["export", R, "--format", "onnx", "--out", U], "is a directory"),
    (["bench", "--models", "resnet20", "--json", R + "/prev.pt", "--repeats", "1"], "belongs to the run"),
    (["bench", "--models", "resnet20", "--json", U + "/notes.txt", "--repeats", "1"], "reslab does not replace"),
    (["eval", R, "--confusion", R + "/last.pt"], "belongs to the run"),
    (["eval", R, "--confusion", U + "/notes.txt"], "reslab does not replace it"),
    (["eval", R, "--data", "cifar11", "--confusion", "{new}.pt"], "give a name ending in one"),  # before evaluating
    (["eval", U + "/bare-resnet20.pt", "--data", "digits"], "fit several 20-layer models"),
    (["eval", U + "/bare-resnet20.pt", "--data", "digits", "--split", "val"], "fit several 20-layer models"),
    (["predict", U + "/stub.pt", U + "/corrupt.png"], "no model state_dict"),
    (["plot", R, "--out", R + "/summary.json"], "belongs to the run"),
    (["plot", R, "--out", U + "/results.json"], "reslab does not replace it"),
    (["plot", U], "not a reslab run"),
    (["runs", "/nonexistent"], "no reslab runs"),
    (["bench", "--models", ","], "names no model"),
    (["bench", "--models", "resnet20", "--dtype", ","], "names no configuration"),
    (["bench", "--models", "resnet20", "--device", "tpu"], "not available here"),
    (["predict", R, U + "/huge.png"], "cannot read image"),
    (["experiment", "depth", "--depths", "8", "--collect", "--out", "{new}"], "no finished run"),
    # report: every path a run or an experiment, the page never over a user's or a run's file
    (["report", "{new}", "--out", "{new}.html"], "no such run or experiment directory"),
    (["report", R, U, "--out", "{new}.html"], "neither a run directory"),
    (["report", R, "--out", U + "/notes.txt"], "reslab does not replace it"),
    (["report", R, "--out", R + "/summary.json"], "belongs to the run"),
    (["report", R, "--out", U], "is a directory"),
]


@pytest.mark.parametrize("argv, message", CASES, ids=[" ".join(a[:2]) + f"-{i}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(world, argv, message, capsys, tmp_path):
    before = _checksums(world)
    args = [a.replace(R, str(world / "run")).replace(U, str(world / "user")).replace("{new}", str(tmp_path / "new"))
            for a in argv]
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as e:  # argparse's own errors (unknown choice, bad number) exit from parse_args
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert message in err, err
    assert _checksums(world) == before


def test_resume_of_a_finished_run_changes_nothing(world, capsys):
    run = world / "run"
    before = _checksums(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run)]) == 0
    assert "is finished (4 steps)" in capsys.readouterr().out
    assert _checksums(run) == before


def test_a_second_process_on_the_same_run_is_refused(tmp_path, capsys):
    """The lock is held while a run trains, and released when its process dies."""
    import subprocess
    import sys

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; os.makedirs(sys.argv[1], exist_ok=True); "
        "fd = os.open(os.path.join(sys.argv[1], '.lock'), os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"), str(out)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main([*TRAIN, "--out", str(out)]) == 2
        assert "another process is training into" in capsys.readouterr().err
    finally:
        holder.kill()
        holder.wait()
    assert main([*TRAIN, "--out", str(out)]) == 0  # the killed holder left no stuck lock


def test_a_run_killed_before_its_first_checkpoint(tmp_path, capsys):
    """Started again with the same recipe it starts over; with another recipe it is refused."""
    out = tmp_path / "run"
    train = [*TRAIN, "--set", "log_every=1"]
    assert main([*train, "--out", str(out)]) == 0
    for name in ("last.pt", "prev.pt", "best.pt", "model.safetensors", "summary.json", "curves.png"):
        (out / name).unlink(missing_ok=True)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n")  # as if killed at step 2
    assert main([*train, "--set", "lr=0.05", "--out", str(out)]) == 2
    assert "the start of another run" in capsys.readouterr().err
    assert main([*train, "--out", str(out)]) == 0
    steps = [json.loads(ln)["step"] for ln in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(ln)["kind"] == "step"]
    assert steps == [1, 2, 3, 4]  # one run's records, not two mixed


def test_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, capsys, monkeypatch):
    """ENOSPC while an export is written: one line naming the path; the old file stays, no temp file."""
    import reslab.atomic as atomic

    target = tmp_path / "model.safetensors"
    target.write_bytes(b"old")
    real_replace = os.replace

    def full(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(atomic.os, "replace", full)
    assert main(["export", "--model", "resnet20", "--format", "safetensors", "--out", str(target)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"reslab: error: cannot write {target}: No space left on device"
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    monkeypatch.setattr(atomic.os, "replace", real_replace)


def test_a_read_only_folder_is_one_line(tmp_path, capsys):
    if os.geteuid() == 0:  # root writes into read-only folders: simulate with a file where a folder should be
        (tmp_path / "ro").write_text("")
        out = tmp_path / "ro" / "m.onnx"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        out = tmp_path / "ro" / "m.onnx"
    assert main(["export", "--model", "resnet20", "--format", "safetensors", "--out",
                 str(out.with_suffix(".safetensors"))]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and "ro" in err


@pytest.mark.parametrize("call, message", [
    (lambda: __import__("reslab").create_model(123), "a model name is a string"),
    (lambda: __import__("reslab").load_weights(__import__("reslab").create_model("resnet20"), 12345),
     "weights must be a file path or a state dict"),
    (lambda: __import__("reslab.train", fromlist=["train"]).train(None, "/tmp/none"), "train needs a TrainConfig"),
    (lambda: __import__("reslab.data", fromlist=["load"]).load(42), "a data name is a string"),
    (lambda: __import__("reslab").create_model("resnet20", num_classes=-1), "num_classes must be"),
])
def test_public_functions_check_their_arguments(call, message):
    from reslab.errors import ReslabError

    with pytest.raises(ReslabError, match=message):
        call()


def test_odd_files_in_an_image_folder(tmp_path):
    """A file name that is not UTF-8 and a 16-bit PNG: read, not a traceback or a white image."""
    from reslab.data import load

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    os.rename(tmp_path / "imgs" / "a" / "0.png", os.fsencode(tmp_path / "imgs" / "a") + b"/\xff\xfe.png")
    deep = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000)  # 0 .. 63000 of 65535
    Image.fromarray(deep).save(tmp_path / "imgs" / "b" / "deep.png")
    ds = load(f"imagefolder:{tmp_path / 'imgs'}", root=tmp_path / "cache")
    assert len(ds) == 7
    b = ds.images[ds.labels == 1]
    gray = next(img for img in b if (img[0] == img[1]).all() and (img[1] == img[2]).all())
    want = torch.from_numpy((deep.astype(np.float64) * 255 / 65535).round().astype(np.uint8))
    assert torch.equal(gray[0], want)


def test_a_metrics_line_without_kind_is_skipped(world, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(world / "run", run)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss": 1.0}\n[1, 2]\n')
    assert main(["plot", str(run), "--out", str(tmp_path / "c.png")]) == 0
    assert main(["runs", str(run)]) == 0
