"""Grad-CAM: the heat map is where the class evidence is, and `reslab explain` writes it."""

import torch
from PIL import Image
from torch import nn

from reslab.cli import main
from reslab.explain import grad_cam


class _Probe(nn.Module):
    """Features = the input; head = spatial mean, then a linear layer that reads channel k for class k."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2, bias=False)
        self.fc.weight.data = torch.eye(2)

    def forward_features(self, x):
        return x * 1.0

    def forward_head(self, x):
        return self.fc(x.mean((2, 3)))


def test_grad_cam_finds_the_evidence():
    x = torch.zeros(2, 2, 8, 8)
    x[0, 0, :3, :3] = 5.0  # class 0's evidence, top left
    x[1, 1, 5:, 5:] = 5.0  # class 1's evidence, bottom right
    x[0, 1, 6:, :2] = 1.0  # weaker evidence for class 1 in image 0, bottom left
    cam, classes = grad_cam(_Probe(), x)
    assert classes.tolist() == [0, 1]
    assert cam.shape == (2, 8, 8) and cam.amax((1, 2)).tolist() == [1.0, 1.0]
    assert cam[0, :3, :3].min() == 1.0 and cam[0, 4:, 4:].max() == 0.0
    assert cam[1, 5:, 5:].min() == 1.0 and cam[1, :4, :4].max() == 0.0
    # asked for class 1 in image 0: the bottom-left patch, not the top-left one
    cam1, _ = grad_cam(_Probe(), x[:1], torch.tensor([1]))
    assert cam1[0, 6:, :2].min() == 1.0 and cam1[0, :3, :3].max() == 0.0


def test_explain_cli_writes_one_overlay_per_image(tmp_path, capsys, noise_folder):
    imgs = noise_folder(per_class=6, side=16)
    run = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--data", f"imagefolder:{imgs}", "--iters", "2", "--quiet",
                 "--set", "batch_size=4", "--set", "val_size=4", "--set", "threads=1", "--set", "compile=off",
                 "--set", "device=cpu", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["explain", str(run), str(imgs / "a"), "--out", str(tmp_path / "cams"), "--class", "b"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and all(": b (" in ln for ln in lines)
    pngs = sorted((tmp_path / "cams").glob("*-gradcam.png"))
    assert len(pngs) == 6 and Image.open(pngs[0]).size[0] > 300
    assert main(["explain", str(run), str(imgs / "a"), "--class", "zebra"]) == 2
    assert "unknown class 'zebra'" in capsys.readouterr().err
