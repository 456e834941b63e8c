"""The CIFAR checkpoints people download: akamaster/pytorch_resnet_cifar10 and
chenyaofo/pytorch-cifar-models. Each project's layout is rebuilt here from its published
description (module names, shortcut, head), saved the way the project saves it, loaded into
reslab, and must give the same outputs."""

import pytest
import torch

import reslab
from helpers import PeerCifarNet, randomize_bn
from reslab.errors import ReslabError


@pytest.mark.parametrize("depth", [20, 32])
def test_akamaster_checkpoints_load_and_agree(tmp_path, depth):
    torch.manual_seed(depth)
    theirs = randomize_bn(PeerCifarNet((depth - 2) // 6, "zeros both sides", "linear"))
    path = tmp_path / f"resnet{depth}-12fca82f.th"
    # as their trainer saves it: a DataParallel model inside {"state_dict": ..., "best_prec1": ...}
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}, "best_prec1": 91.7}, path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = theirs(x)
    ours = reslab.load_weights(reslab.create_model(f"resnet{depth}", shortcut_pad="both"), path).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), want, rtol=1e-4, atol=1e-5)
    # reslab's default option A appends the channels: same shapes, other outputs, so it is refused
    with pytest.raises(ReslabError, match="shortcut_pad='both'"):
        reslab.load_weights(reslab.create_model(f"resnet{depth}"), path)
    # the padding is what differs: with it appended the outputs are far off
    appended = reslab.create_model(f"resnet{depth}")
    appended.load_state_dict(ours.state_dict())
    with torch.no_grad():
        assert (appended.eval()(x) - want).abs().max() > 1e-2


def test_chenyaofo_checkpoints_load_and_agree(tmp_path):
    torch.manual_seed(1)
    theirs = randomize_bn(PeerCifarNet(3, "projection", "fc", classes=100))
    path = tmp_path / "cifar100_resnet20-23dac2f1.pt"
    torch.save(theirs.state_dict(), path)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = theirs(x)
    ours = reslab.load_weights(reslab.create_model("resnet20", shortcut="B", num_classes=100), path).eval()
    with torch.no_grad():
        torch.testing.assert_close(ours(x), want, rtol=1e-4, atol=1e-5)
    with pytest.raises(ReslabError, match="shortcut='B'"):
        reslab.load_weights(reslab.create_model("resnet20", num_classes=100), path)


def test_shortcut_pad_places_the_zero_channels():
    from reslab.models.blocks import ShortcutA

    x = torch.arange(2 * 4 * 2 * 2, dtype=torch.float32).view(2, 4, 2, 2)
    both, append = ShortcutA(4, 8, 2, pad="both")(x), ShortcutA(4, 8, 2)(x)
    assert torch.equal(both[:, 2:6], x[:, :, ::2, ::2]) and both[:, :2].abs().sum() == both[:, 6:].abs().sum() == 0
    assert torch.equal(append[:, :4], x[:, :, ::2, ::2]) and append[:, 4:].abs().sum() == 0
    with pytest.raises(ReslabError, match="shortcut_pad"):
        reslab.create_model("resnet20", shortcut_pad="middle")


def test_fine_tune_from_an_akamaster_checkpoint(tmp_path, noise_folder, capsys):
    """--set init= takes their file; the option-A padding must be asked for, as in Python."""
    import json

    from reslab.cli import main

    theirs = randomize_bn(PeerCifarNet(3, "zeros both sides", "linear"))
    path = tmp_path / "resnet20-12fca82f.th"
    torch.save({"state_dict": {f"module.{k}": v for k, v in theirs.state_dict().items()}}, path)
    imgs = noise_folder(per_class=6, side=32)
    argv = ["train", "--model", "resnet20", "--data", f"imagefolder:{imgs}", "--iters", "1", "--quiet",
            "--set", "batch_size=4", "--set", "val_size=4", "--set", "threads=1", "--set", "compile=off",
            "--set", "device=cpu", "--set", f"init={path}"]
    assert main([*argv, "--out", str(tmp_path / "wrong")]) == 2
    assert "shortcut_pad='both'" in capsys.readouterr().err
    assert main([*argv, "--set", 'model_args={"shortcut_pad":"both"}', "--out", str(tmp_path / "run")]) == 0
    events = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"event"' in ln]
    assert "new classifier (10 -> 2 classes)" in events[0]["message"]
