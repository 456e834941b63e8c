"""torchvision and timm weights into reslab models."""

import pytest
import torch
import torchvision
from safetensors.torch import save_file

import reslab
from reslab.weights import load_weights


def test_timm_resnetv2_maps_onto_preact_resnet50():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    theirs = timm.create_model("resnetv2_50", pretrained=False).eval()
    ours = load_weights(reslab.create_model("preact_resnet50"), theirs.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_torchvision_weights_from_files(tmp_path):
    theirs = torchvision.models.resnet18(weights=None).eval()
    torch.save(theirs.state_dict(), tmp_path / "r18.pth")
    save_file(theirs.state_dict(), str(tmp_path / "r18.safetensors"))
    x = torch.randn(1, 3, 64, 64)
    for name in ("r18.pth", "r18.safetensors"):
        ours = load_weights(reslab.create_model("resnet18"), tmp_path / name).eval()
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x))


def test_mismatches_are_one_clear_line(tmp_path):
    sd = torchvision.models.resnet18(weights=None).state_dict()
    with pytest.raises(reslab.ReslabError, match="shape mismatches, first fc.weight") as e:
        load_weights(reslab.create_model("resnet18", num_classes=10), sd)
    assert "\n" not in str(e.value)
    with pytest.raises(reslab.ReslabError, match="missing keys"):
        load_weights(reslab.create_model("resnet34"), sd)
    (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(reslab.ReslabError, match="bad.pth is corrupt or truncated, or not a file torch.save wrote"):
        load_weights(reslab.create_model("resnet18"), tmp_path / "bad.pth")
    with pytest.raises(reslab.ReslabError, match="no checkpoint, weights file or run directory at"):
        load_weights(reslab.create_model("resnet18"), tmp_path / "absent.pth")
