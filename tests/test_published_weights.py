"""Published weights files as they really are, rebuilt from the manifests in tests/manifests/
(each names where its key convention comes from): the container, the serialization (the legacy
pre-zip format of files from before PyTorch 1.6, pickle protocol 2), the key order, shapes and
dtypes, and the BatchNorm counters that files from before PyTorch 0.4.1 lack. Each is loaded
through every path that reads weights and must predict as its own project's model does."""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import reslab
from helpers import PeerCifarNet
from reslab.cli import main
from reslab.errors import ReslabError

MANIFESTS = Path(__file__).parent / "manifests"


def _torchvision(arch: str):
    import torchvision

    return getattr(torchvision.models, arch)()


def _timm(arch: str):
    timm = pytest.importorskip("timm")
    return timm.create_model(arch)


# manifest -> (the model reslab recognises, its arguments, the publisher's own model, input side)
FAMILIES = {
    "akamaster_resnet20": ("resnet20", {"shortcut_pad": "both"}, lambda: PeerCifarNet(3, "zeros both sides", "linear"), 32),
    "akamaster_resnet56": ("resnet56", {"shortcut_pad": "both"}, lambda: PeerCifarNet(9, "zeros both sides", "linear"), 32),
    "chenyaofo_cifar10_resnet20": ("resnet20", {"shortcut": "B"}, lambda: PeerCifarNet(3, "projection", "fc"), 32),
    "chenyaofo_cifar100_resnet56": ("resnet56", {"shortcut": "B", "num_classes": 100},
                                    lambda: PeerCifarNet(9, "projection", "fc", classes=100), 32),
    "torchvision_v1_resnet18": ("resnet18", {}, lambda: _torchvision("resnet18"), 64),
    "torchvision_v1_resnet50": ("resnet50", {}, lambda: _torchvision("resnet50"), 64),
    "torchvision_v2_resnet50": ("resnet50", {}, lambda: _torchvision("resnet50"), 64),
    "timm_resnet50": ("resnet50", {}, lambda: _timm("resnet50"), 64),
    "timm_resnetv2_50": ("preact_resnet50", {}, lambda: _timm("resnetv2_50"), 64),
}


def test_every_manifest_is_tested():
    assert sorted(p.stem for p in MANIFESTS.glob("*.json")) == sorted(FAMILIES)


def _tensor(key: str, shape: list[int], dtype: str, g: torch.Generator) -> torch.Tensor:
    if dtype == "int64":  # num_batches_tracked
        return torch.tensor(1000, dtype=torch.int64).reshape(shape)
    if key.endswith("running_var"):
        return torch.rand(shape, generator=g) + 0.5
    if key.endswith("running_mean") or key.endswith("bias"):
        return torch.randn(shape, generator=g) * 0.1
    if len(shape) == 1:  # a BatchNorm scale
        return torch.rand(shape, generator=g) + 0.5
    fan_in = max(1, torch.Size(shape[1:]).numel())
    return torch.randn(shape, generator=g) * (2 / fan_in) ** 0.5


def write_published(name: str, folder: Path, seed: int = 0) -> Path:
    """A file laid out exactly as its manifest says, with seeded random weights."""
    m = json.loads((MANIFESTS / f"{name}.json").read_text())
    g = torch.Generator().manual_seed(seed)
    state = OrderedDict((k, _tensor(k, shape, dtype, g)) for k, shape, dtype in m["tensors"])
    path = folder / Path(m["file"]).name
    if m["serialization"] == "safetensors":
        save_file(dict(state), str(path))
        return path
    obj = {m["container"]: state, **m["extra"]} if m["container"] else (state if m["dict"] == "OrderedDict"
                                                                        else dict(state))
    torch.save(obj, path, _use_new_zipfile_serialization=m["serialization"] == "zip",
               pickle_protocol=m["pickle_protocol"])
    return path


def reference(name: str, path: Path) -> torch.nn.Module:
    """The publisher's own model with the file's tensors (BatchNorm counters the file lacks aside)."""
    from safetensors.torch import load_file

    theirs = FAMILIES[name][2]()
    if path.suffix == ".safetensors":
        state = load_file(str(path))
    else:
        state = torch.load(path, weights_only=True, map_location="cpu")  # akamaster's were saved on a GPU
        state = state.get("state_dict", state)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = theirs.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing)
    return theirs.eval()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_published_files_load_as_they_are_and_predict_as_their_projects_models(tmp_path, name):
    model_name, args, _, side = FAMILIES[name]
    path = write_published(name, tmp_path)
    m = json.loads((MANIFESTS / f"{name}.json").read_text())
    if m["serialization"] == "legacy":  # the file really is in the old format, as the published one
        assert path.read_bytes()[:2] == b"\x80\x02"
    theirs = reference(name, path)
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = theirs(x)
    # the file alone: the model is recognised and built
    found = reslab.load_weights(path).eval()
    built = reslab.load_weights(reslab.create_model(model_name, **args), path).eval()
    with torch.no_grad():
        torch.testing.assert_close(found(x), want, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(built(x), want, rtol=1e-4, atol=1e-4)
    assert found.state_dict().keys() == reslab.create_model(model_name, **args).state_dict().keys()
    counters = [v.item() for k, v in found.state_dict().items() if k.endswith("num_batches_tracked")]
    has_counters = any(k.endswith("num_batches_tracked") for k, _, _ in m["tensors"])
    assert set(counters) == ({1000} if has_counters else {0})  # a file without them: the counter starts at 0


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_file_alone_says_which_model_it_is(tmp_path, name):
    from reslab.weights import load_any

    model_name, args, _, _ = FAMILIES[name]
    trained = load_any(write_published(name, tmp_path))
    assert (trained.record.name, trained.record.args) == (model_name, args)
    if name.startswith("akamaster"):  # their trainer.py normalizes with ImageNet's statistics
        assert trained.record.mean == (0.485, 0.456, 0.406) and trained.record.classes[:2] == ["airplane", "automobile"]
    elif name == "chenyaofo_cifar10_resnet20":  # chenyaofo/image-classification-codebase conf/cifar10.conf
        assert trained.record.mean == (0.4914, 0.4822, 0.4465) and trained.record.std == (0.2023, 0.1994, 0.2010)
    elif "cifar100" in name:
        assert trained.record.classes is None and trained.record.std == (0.2673, 0.2564, 0.2761)
    else:  # ImageNet-1k, torchvision's class order, evaluated at resize 256 + center 224
        assert len(trained.record.classes) == 1000 and trained.record.classes[0] == "tench"
        assert (trained.record.image_size, trained.record.loader) == ((3, 224, 224), "stream")


@pytest.mark.parametrize("name", ["akamaster_resnet20", "chenyaofo_cifar10_resnet20", "torchvision_v1_resnet18"])
def test_fine_tuning_starts_from_published_files(tmp_path, noise_folder, name):
    """--set init= reads them through the same reader: a new classifier, every other tensor as in the file."""
    model_name, args, _, _ = FAMILIES[name]
    path = write_published(name, tmp_path)
    imgs = noise_folder(per_class=6, side=32)
    argv = ["train", "--model", model_name, "--data", f"imagefolder:{imgs}", "--iters", "1", "--quiet",
            "--set", "batch_size=4", "--set", "val_size=4", "--set", "threads=1", "--set", "compile=off",
            "--set", "device=cpu", "--set", "lr=1e-9", "--set", "weight_decay=0", "--set", f"init={path}",
            "--set", f"model_args={json.dumps(args)}", "--out", str(tmp_path / "run")]
    assert main(argv) == 0
    events = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"event"' in ln]
    assert "new classifier" in events[0]["message"]
    trained = reslab.weights.load_any(tmp_path / "run")
    expected = reslab.load_weights(path).state_dict()
    conv = "layer1.0.conv1.weight"
    # one step at lr 1e-9: the file's weights, as loaded
    torch.testing.assert_close(trained.model.state_dict()[conv], expected[conv], rtol=0, atol=1e-6)
    assert not torch.equal(expected[conv], reslab.create_model(model_name, **args).state_dict()[conv])


def test_predict_and_eval_take_a_published_file(tmp_path, noise_folder, capsys):
    path = write_published("akamaster_resnet20", tmp_path)
    imgs = noise_folder(classes=("cat", "dog"), per_class=2, side=32)
    assert main(["predict", str(path), str(imgs / "cat" / "0.png"), "--topk", "2"]) == 0
    out = capsys.readouterr().out
    cifar10 = {"airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"}
    assert "0.png" in out and any(c in out for c in cifar10)
    # eval needs data with the file's classes; two classes are not CIFAR-10's ten
    assert main(["eval", str(path), "--data", f"imagefolder:{imgs}", "--split", "train"]) == 2
    assert "classes" in capsys.readouterr().err
    assert main(["eval", str(path)]) == 2
    assert "--data" in capsys.readouterr().err


def test_cifar_nets_without_projections_are_ambiguous_and_refused_with_the_choices(tmp_path, capsys):
    torch.save(reslab.create_model("resnet20").state_dict(), tmp_path / "bare.pt")  # a bare state dict
    with pytest.raises(ReslabError, match=r"resnet20\(\), plain20\(\)") as e:
        reslab.load_weights(tmp_path / "bare.pt")
    assert "shortcut_pad='both'" in str(e.value) and "\n" not in str(e.value)
    assert main(["predict", str(tmp_path / "bare.pt"), str(tmp_path)]) == 2
    assert "several 20-layer models" in capsys.readouterr().err
    # built by the user, it loads
    reslab.load_weights(reslab.create_model("plain20"), tmp_path / "bare.pt")


def test_only_the_batchnorm_counters_may_be_missing(tmp_path):
    path = write_published("torchvision_v1_resnet18", tmp_path)
    state = torch.load(path, weights_only=True)
    del state["layer1.0.bn1.running_var"]
    torch.save(state, tmp_path / "short.pth")
    with pytest.raises(ReslabError, match=r"1 missing keys \(first 'layer1.0.bn1.running_var'\)"):
        reslab.load_weights(reslab.create_model("resnet18"), tmp_path / "short.pth")
    state["layer1.0.bn1.running_var"] = torch.ones(64)
    state["extra.weight"] = torch.ones(1)
    torch.save(state, tmp_path / "long.pth")
    with pytest.raises(ReslabError, match=r"1 unexpected keys \(first 'extra.weight'\)"):
        reslab.load_weights(reslab.create_model("resnet18"), tmp_path / "long.pth")
    state.pop("extra.weight")
    state["fc.weight"] = torch.ones(10, 512)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(ReslabError, match="shape mismatches, first fc.weight"):
        reslab.load_weights(reslab.create_model("resnet18"), tmp_path / "shape.pth")
    with pytest.raises(ReslabError, match="fit no registered model"):
        reslab.load_weights(tmp_path / "shape.pth")  # fc (10, 512) with a 1000-bias: nothing fits


def test_a_teacher_from_a_published_file_goes_through_the_same_reader(tmp_path, noise_folder, capsys):
    path = write_published("akamaster_resnet20", tmp_path)
    imgs = noise_folder(per_class=6, side=32)
    argv = ["train", "--model", "resnet20", "--data", f"imagefolder:{imgs}", "--iters", "1", "--quiet",
            "--set", "batch_size=4", "--set", "val_size=4", "--set", "threads=1", "--set", "compile=off",
            "--set", f"teacher={path}", "--out", str(tmp_path / "run")]
    assert main(argv) == 2  # read and recognised, then refused for what it is: CIFAR-10's ten classes
    assert "teacher" in (err := capsys.readouterr().err) and "other classes" in err


REAL = os.environ.get("RESLAB_PEER_WEIGHTS")  # a folder of published files, e.g. akamaster's pretrained_models/


@pytest.mark.skipif(not REAL, reason="set RESLAB_PEER_WEIGHTS to a folder holding published weights files "
                                     "(e.g. akamaster's resnet20-12fca82f.th) to check them against the manifests")
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_real_published_file_matches_its_manifest_and_predicts_as_its_project(name):
    m = json.loads((MANIFESTS / f"{name}.json").read_text())
    path = Path(REAL) / Path(m["file"]).name
    if not path.is_file():
        pytest.skip(f"{path.name} is not in {REAL}")
    if m["serialization"] == "safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        obj = torch.load(path, weights_only=True, map_location="cpu")
        state = obj[m["container"]] if m["container"] else obj
    assert [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()] == m["tensors"]
    x = torch.randn(2, 3, FAMILIES[name][3], FAMILIES[name][3], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(reslab.load_weights(path).eval()(x), reference(name, path)(x), rtol=1e-4, atol=1e-4)
