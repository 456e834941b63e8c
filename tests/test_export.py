"""BN folding, ONNX and torch.export files, safetensors, and model loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import reslab
from helpers import randomize_bn
from reslab.errors import ReslabError
from reslab.export import (
    export_onnx,
    export_pt2,
    onnx_max_abs_diff,
    save_safetensors,
)
from reslab.quantize import fold_bn
from reslab.weights import load_any


def load_model(source, name=None) -> nn.Module:
    return load_any(source, name).model


@pytest.mark.parametrize(
    "name, size, bn_left",
    [
        ("resnet20", 32, 0),
        ("resnet18", 64, 0),
        ("resnet50", 64, 0),
        # A pre-activation block's first BN normalises the block input (a sum), not a conv.
        ("preact_resnet18", 64, 9),
    ],
)
def test_fold_bn_is_exact(name: str, size: int, bn_left: int) -> None:
    torch.manual_seed(0)
    model = randomize_bn(reslab.create_model(name))
    folded = fold_bn(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == bn_left
    assert type(folded) is type(model)
    # The original is untouched.
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > bn_left
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        want, got = model(x), folded(x)
    assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_fold_bn_leaves_shared_conv_output_alone() -> None:
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y  # y is used twice: folding would change the second use

    model = randomize_bn(Branchy())
    folded = fold_bn(model)
    assert isinstance(folded.bn, nn.BatchNorm2d)
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x))


@pytest.mark.parametrize("name, size", [("resnet20", 32), ("resnet18", 64), ("resnet50", 32)])
def test_onnx_matches_torch_with_dynamic_batch(tmp_path, name: str, size: int) -> None:
    torch.manual_seed(0)
    model = randomize_bn(reslab.create_model(name, num_classes=10))
    path = export_onnx(model, tmp_path / f"{name}.onnx", input_size=(3, size, size))
    # Exported at batch 2; batches 1 and 5 must run too (dynamic axis).
    for batch in (1, 5):
        x = torch.randn(batch, 3, size, size)
        with torch.no_grad():
            scale = max(1.0, model(x).abs().max().item())
        # 1e-4 absolute on logits of order 1; random deep nets reach ~100 (resnet50: 116),
        # where fp32 rounding alone is ~1e-5, so the bound scales with the logits.
        assert onnx_max_abs_diff(path, model, x) < 1e-4 * scale


def test_onnx_rejects_too_small_input(tmp_path) -> None:
    with pytest.raises(ReslabError, match="too small"):
        export_onnx(reslab.create_model("resnet18"), tmp_path / "x.onnx", input_size=(3, 16, 16))


def test_exported_program_round_trip(tmp_path) -> None:
    torch.manual_seed(0)
    model = randomize_bn(reslab.create_model("resnet20"))
    path = export_pt2(model, tmp_path / "r20.pt2", aoti=False)
    loaded = torch.export.load(str(path)).module()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max() < 1e-4


@pytest.mark.slow
def test_aoti_package_round_trip(tmp_path) -> None:
    # AOTInductor compiles C++ for the whole net: about 2 minutes on 2 cores.
    torch.manual_seed(0)
    model = randomize_bn(reslab.create_model("resnet20"))
    path = export_pt2(model, tmp_path / "r20.pt2", aoti=True)
    package = torch._inductor.aoti_load_package(str(path))
    for batch in (1, 7):
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            assert (package(x) - model(x)).abs().max() < 1e-4


def test_load_model_from_safetensors_and_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    model = randomize_bn(reslab.create_model("resnet20", num_classes=7))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    st = save_safetensors(model, tmp_path / "w.safetensors")
    with pytest.raises(ReslabError, match="--model"):
        load_model(st)
    with torch.no_grad():
        torch.testing.assert_close(load_model(st, "resnet20")(x), want)
    # A training checkpoint names its model; keys of a compiled model carry _orig_mod.
    ckpt = tmp_path / "ckpt.pt"
    state = {f"_orig_mod.{k}": v for k, v in model.state_dict().items()}
    torch.save(state, ckpt)
    with torch.no_grad():
        torch.testing.assert_close(load_model(ckpt, "resnet20")(x), want)
    with pytest.raises(ReslabError, match="does not fit"):
        load_model(st, "resnet32")
    with pytest.raises(ReslabError, match="no checkpoint, weights file or run directory at"):
        load_model(tmp_path / "missing.pt", "resnet20")


def test_load_reslab_training_checkpoint(tmp_path) -> None:
    from reslab.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = randomize_bn(reslab.create_model("resnet20", num_classes=4))
    ema = randomize_bn(reslab.create_model("resnet20", num_classes=4))
    payload = {"model_name": "resnet20", "model_args": {"num_classes": 4, "in_chans": 3},
               "image_size": [3, 32, 32], "model": model.state_dict(), "ema": ema.state_dict(),
               "classes": list("abcd"), "mean": [0.5] * 3, "std": [0.25] * 3, "config": {}, "state": {"step": 7},
               "env": {"loader": "memory"}}
    path = save_checkpoint(payload, tmp_path / "run" / "last.pt")
    loaded = load_any(tmp_path / "run")  # a run directory means its last.pt
    assert loaded.record.name == "resnet20" and loaded.record.image_size == (3, 32, 32)
    assert loaded.record.classes == list("abcd") and loaded.record.mean == (0.5,) * 3 and loaded.record.std == (0.25,) * 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the EMA weights are the ones deployed
        torch.testing.assert_close(loaded.model(x), ema.eval()(x))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ReslabError):
        load_any(path)


def test_exported_safetensors_record_the_model_and_its_inputs(tmp_path, noise_folder, capsys) -> None:
    # `reslab export --format safetensors` writes what a run's own model.safetensors records: the
    # file alone rebuilds the model (no --model) with its classes, normalization and input size
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from reslab.cli import main

    imgs = noise_folder(classes=("cat", "dog", "eel"), per_class=4, side=16)
    run = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--data", f"imagefolder:{imgs}", "--iters", "1", "--quiet",
                 "--set", "batch_size=4", "--set", "val_size=3", "--set", "threads=1", "--set", "compile=off",
                 "--set", "device=cpu", "--set", "test=false", "--out", str(run)]) == 0
    st = tmp_path / "w.safetensors"
    assert main(["export", str(run), "--format", "safetensors", "--out", str(st)]) == 0
    capsys.readouterr()
    with safe_open(str(st), "pt") as f:
        meta = f.metadata()
    assert meta["model_name"] == "resnet20" and meta["input_size"] == "[3, 16, 16]" and meta["loader"] == "memory"
    again, own = load_any(st), load_any(run / "model.safetensors")
    with safe_open(str(run / "model.safetensors"), "pt") as f:  # the run's own: the same record, and its recipe
        own_meta = f.metadata()
    assert {k: own_meta[k] for k in meta} == meta and json.loads(own_meta["config"])["model"] == "resnet20"
    older = tmp_path / "older.safetensors"  # files of earlier versions name the input size "image_size"
    save_file(load_file(str(st)), str(older), {**{k: v for k, v in meta.items() if k != "input_size"},
                                               "image_size": meta["input_size"]})
    for got in (again, own, load_any(older)):
        r = got.record
        assert (r.name, r.classes, r.image_size, r.loader) == ("resnet20", ["cat", "dog", "eel"], (3, 16, 16), "memory")
        assert r.args == {"num_classes": 3, "in_chans": 3} and r.mean == own.record.mean and r.std == own.record.std
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), own.model(x))
