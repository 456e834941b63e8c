"""Writes the weights-file manifests in this folder: each published file's container, serialization,
key order, shapes and dtypes, without its weights (tests/test_published_weights.py rebuilds files
from them). Run by hand where the sources are at hand:

    python tests/manifests/make_manifests.py --akamaster DIR --chenyaofo REPO

--akamaster: a folder with akamaster/pytorch_resnet_cifar10's pretrained_models/*.th (read as they are);
--chenyaofo: a checkout of chenyaofo/pytorch-cifar-models (its model code gives the key set of the
release files, which its hub entry loads with strict=True into those models).
torchvision's and timm's files are described from the installed packages' model definitions.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import torch

HERE = Path(__file__).parent


def tensors(state: dict) -> list:
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()]


def write(name: str, manifest: dict) -> None:
    head = json.dumps({k: v for k, v in manifest.items() if k != "tensors"}, indent=1)[:-2]
    rows = ",\n  ".join(json.dumps(t) for t in manifest["tensors"])
    (HERE / f"{name}.json").write_text(f'{head},\n "tensors": [\n  {rows}\n ]\n}}\n')
    print(f"wrote {name}.json ({len(manifest['tensors'])} tensors)")


def akamaster(folder: Path) -> None:
    for file in ("resnet20-12fca82f.th", "resnet56-4bfd9763.th"):
        path = folder / file
        with open(path, "rb") as f:
            protocol = f.read(2)[1] if not zipfile.is_zipfile(path) else None
        saved_on = set()  # the devices the tensors were saved from
        obj = torch.load(path, map_location=lambda storage, loc, seen=saved_on: seen.add(loc) or storage, weights_only=True)
        extra = {k: float(v) for k, v in obj.items() if k != "state_dict"}
        sd = obj["state_dict"]
        write(f"akamaster_{file.split('-')[0]}", {
            "file": file, "family": "akamaster/pytorch_resnet_cifar10",
            "source": f"read from the published file pretrained_models/{file} (PyTorch before 0.4.1: no "
                      "num_batches_tracked; tensors saved on a GPU; DataParallel's module. prefix; head named linear)",
            "serialization": "legacy" if protocol else "zip", "pickle_protocol": protocol,
            "container": "state_dict", "extra": extra, "dict": type(sd).__name__, "saved_on": sorted(saved_on),
            "tensors": tensors(sd)})


def chenyaofo(repo: Path) -> None:
    spec = importlib.util.spec_from_file_location("cifar_resnet", repo / "pytorch_cifar_models" / "resnet.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # the file looks itself up there
    spec.loader.exec_module(module)
    for dataset, depth in (("cifar10", 20), ("cifar100", 56)):
        model = getattr(module, f"{dataset}_resnet{depth}")()
        write(f"chenyaofo_{dataset}_resnet{depth}", {
            "file": f"{dataset}_resnet{depth}.pt", "family": "chenyaofo/pytorch-cifar-models",
            "source": "the key set of pytorch_cifar_models/resnet.py's CifarResNet, which the hub entry loads the "
                      "release file into with strict=True (saved by PyTorch 1.x: zip, num_batches_tracked kept)",
            "serialization": "zip", "pickle_protocol": 2, "container": None, "extra": {},
            "dict": "OrderedDict", "tensors": tensors(model.state_dict())})


def torchvision_files() -> None:
    import torchvision

    for arch, file in (("resnet18", "resnet18-5c106cde.pth"), ("resnet50", "resnet50-19c8e357.pth")):
        sd = getattr(torchvision.models, arch)().state_dict()
        sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
        write(f"torchvision_v1_{arch}", {
            "file": file, "family": "torchvision IMAGENET1K_V1 (2017)",
            "source": "torchvision's model definition; the 2017 files were written by PyTorch 0.2/0.3: the legacy "
                      "(non-zip) format, pickle protocol 2, no num_batches_tracked",
            "serialization": "legacy", "pickle_protocol": 2, "container": None, "extra": {}, "dict": "OrderedDict",
            "tensors": tensors(sd)})
    sd = torchvision.models.resnet50().state_dict()
    write("torchvision_v2_resnet50", {
        "file": "resnet50-11ad3fa6.pth", "family": "torchvision IMAGENET1K_V2 (2021)",
        "source": "torchvision's model definition, every key of its state_dict (a PyTorch 1.10 save: zip format)",
        "serialization": "zip", "pickle_protocol": 2, "container": None, "extra": {}, "dict": "OrderedDict",
        "tensors": tensors(sd)})


def timm_files() -> None:
    import timm

    for arch, file in (("resnet50", "resnet50.a1_in1k/model.safetensors"),
                       ("resnetv2_50", "resnetv2_50.a1h_in1k/model.safetensors")):
        sd = timm.create_model(arch).state_dict()
        write(f"timm_{arch}", {
            "file": file, "family": "timm (Hugging Face hub)",
            "source": "timm's model definition: the hub's model.safetensors holds its state_dict as it is",
            "serialization": "safetensors", "pickle_protocol": None, "container": None, "extra": {},
            "dict": "dict", "tensors": tensors(sd)})


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--akamaster", type=Path)
    p.add_argument("--chenyaofo", type=Path)
    a = p.parse_args()
    if a.akamaster:
        akamaster(a.akamaster)
    if a.chenyaofo:
        chenyaofo(a.chenyaofo)
    torchvision_files()
    timm_files()
