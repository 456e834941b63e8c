"""Weights files as they are in the wild, read by one reader for every path that takes them
(`load_weights`, `--set init=`, a distillation teacher, `reslab predict/eval/export`).

    model = load_weights("resnet20-12fca82f.th")           # built as the file says or its keys show
    model = load_weights(create_model("resnet50"), path)   # into a model you built
    weights = read_weights("runs/r20")                     # model.safetensors, else last.pt

A reslab checkpoint is verified (its digest) and gives its EMA weights when the run kept them;
a .safetensors file gives the record `reslab export` writes beside the tensors; any other
torch file is a state dict, bare or inside {"state_dict": ...} / {"model": ...}, with or
without `module.`/`_orig_mod.` prefixes and, from before PyTorch 0.4.1, without BatchNorm's
`num_batches_tracked`. Another project's file records no model: the model is recognised from
its keys and shapes (`reslab.models.recognise`), and the project's published classes and
normalization are attached where its family is known.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .data.datasets import CIFAR10_CLASSES
from .data.streaming import IMAGENET_MEAN, IMAGENET_STD
from .errors import ReslabError, torch_load
from .models import create_model, fit_weights, recognise
from .models.convert import convert_state_dict, unwrap
from .train.config import TrainConfig
from .train.record import Checkpoint, ModelRecord, Trained, resolve


@dataclass(frozen=True)
class Weights:
    """A state_dict (reslab's key names) and what its file records about it (None / {} when nothing)."""

    path: Path
    state: dict[str, Tensor]
    record: ModelRecord = field(default_factory=ModelRecord)
    config: TrainConfig | None = None  # only a reslab checkpoint has its run's recipe
    step: int | None = None
    family: str = "reslab"  # who publishes files of this layout


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The tensors and the metadata of a .safetensors file; a bad file is one ReslabError line."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(str(path)), meta
    except Exception as e:  # corrupt, truncated or not safetensors at all
        raise ReslabError(f"cannot read weights from {path}: {type(e).__name__}: {e}".splitlines()[0]) from None


def read_weights(source: str | Path, purpose: str = "weights") -> Weights:
    """The weights of `source` with reslab's key names, and what its file records.

    source: a .safetensors file, a state_dict file (torchvision, timm, akamaster, chenyaofo or
    reslab), a reslab training checkpoint (its EMA weights if it kept them) or a run directory:
    its model.safetensors, else last.pt (purpose "weights"), or its chosen checkpoint, best.pt
    else last.pt (purpose "model").
    """
    path = resolve(source, purpose)
    if not path.is_file():
        raise ReslabError(f"no checkpoint, weights file or run directory at {path}")
    if path.suffix == ".safetensors":
        state, meta = read_safetensors(path)
        return Weights(path, convert_state_dict(state), ModelRecord.from_metadata(meta))
    obj = torch_load(path, "weights file")
    if not isinstance(obj, dict):
        raise ReslabError(f"{path} holds a {type(obj).__name__}, not a state_dict or checkpoint")
    if "model_name" in obj and "model" in obj:
        ckpt = Checkpoint.read(path)
        return Weights(path, convert_state_dict(ckpt.eval_weights()), ckpt.record, TrainConfig.from_dict(ckpt.config),
                       ckpt.step)
    obj = unwrap(obj)  # e.g. akamaster's {"state_dict": ..., "best_prec1": ...}
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ReslabError(f"{path} has no model state_dict (expected a dict of tensors or a reslab checkpoint)")
    return Weights(path, convert_state_dict(obj), family="")


# --- what other projects publish with their files -------------------------------------
def _published(family: str, num_classes: int) -> dict[str, Any]:
    """The classes, normalization and input their publisher trained files of `family` with."""
    if family == "akamaster/pytorch_resnet_cifar10" and num_classes == 10:
        # trainer.py: transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        return dict(classes=CIFAR10_CLASSES, mean=IMAGENET_MEAN, std=IMAGENET_STD, image_size=(3, 32, 32))
    if family == "chenyaofo/pytorch-cifar-models" and num_classes in (10, 100):
        # chenyaofo/image-classification-codebase, conf/cifar10.conf and conf/cifar100.conf
        if num_classes == 10:
            return dict(classes=CIFAR10_CLASSES, mean=(0.4914, 0.4822, 0.4465), std=(0.2023, 0.1994, 0.2010),
                        image_size=(3, 32, 32))
        return dict(mean=(0.5070, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2761), image_size=(3, 32, 32))
    if family in ("torchvision or timm", "timm (resnetv2)") and num_classes == 1000:
        from torchvision.models import ResNet50_Weights

        # ImageNet-1k in torchvision's class order (timm's in1k heads share it): resize 256, center 224
        return dict(classes=list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"]), mean=IMAGENET_MEAN,
                    std=IMAGENET_STD, image_size=(3, 224, 224), loader="stream")
    return {}


def model_from(weights: Weights, name: str | None = None) -> tuple[nn.Module, Weights]:
    """The model `weights` are for, built and loaded, and the weights with their record
    completed (model name, args, published classes and normalization where known).

    name: the registered model to build instead of the recorded or recognised one.
    """
    args = dict(weights.record.args)
    if name is None and weights.record.name is None:
        found = recognise(weights.state)
        name, args = found.name, found.args
        published = _published(found.family, weights.state["fc.weight"].shape[0])
        weights = dataclasses.replace(weights, family=found.family, record=dataclasses.replace(weights.record,
                                                                                               **published))
    elif not args:  # a name without a record: the head as the weights have it
        if "fc.weight" in weights.state:
            args["num_classes"] = weights.state["fc.weight"].shape[0]
        if "conv1.weight" in weights.state:
            args["in_chans"] = weights.state["conv1.weight"].shape[1]
    name = name or weights.record.name
    model = create_model(name, **args)
    try:
        fit_weights(model, weights.state)
    except ReslabError as e:
        raise ReslabError(f"{weights.path} does not fit model {name!r}: {e}") from None
    return model, dataclasses.replace(weights, record=dataclasses.replace(weights.record, name=name, args=args))


def load_any(source: str | Path | None = None, name: str | None = None, purpose: str = "weights",
             device: str | torch.device = "cpu") -> Trained:
    """A model in eval mode from a weights/checkpoint file or run directory, and/or a name.

    source: see `read_weights` (purpose "model" takes a run directory's chosen checkpoint);
    None builds `name` with fresh weights. `name` overrides the recorded or recognised model;
    without a record the classifier size and input channels follow the stored weights.
    """
    if source is None:
        if name is None:
            raise ReslabError("give a checkpoint file or --model NAME")
        return Trained(create_model(name).eval(), ModelRecord(name), random=True)
    model, w = model_from(read_weights(source, purpose), name)
    return Trained(model.to(device).eval(), w.record, w.config, w.step)


def load_ready(source: str | Path, device: str | torch.device = "cpu", need_classes: bool = True) -> Trained:
    """The model `source` means (a run directory: its chosen checkpoint) with what it needs to
    see images as it was trained: its input size and normalization, and class names when
    `need_classes`; one line naming what a file of no known family lacks."""
    trained = load_any(source, purpose="model", device=device)
    if lacks := trained.record.lacks(need_classes):
        raise ReslabError(f"{source} records no {' or '.join(lacks)} and is of no family reslab knows; give a "
                          "reslab run or checkpoint, or load it in Python with load_weights(model, path)")
    return trained


def load_weights(model: nn.Module | str | Path, weights: Mapping[str, Tensor] | str | Path | None = None,
                 strict: bool = True) -> nn.Module:
    """Weights of any known origin into a model.

    `load_weights(model, weights)`: `weights` (a file, see `read_weights`, or a state dict) into
    the model you built; every key and shape must fit (strict), BatchNorm counters aside.
    `load_weights(path)`: the model the file records (a reslab file) or its keys recognise
    (torchvision, timm, akamaster, chenyaofo), built and loaded; files that fit several models
    are refused with the choices. Returns the model (in train mode, as `create_model` builds it).
    """
    if weights is None:
        if isinstance(model, nn.Module):
            raise ReslabError("load_weights(model) needs the weights too: load_weights(model, path)")
        if not isinstance(model, str | Path):
            raise ReslabError(f"load_weights takes a model or a weights file first, got {type(model).__name__}")
        return model_from(read_weights(model))[0]
    if not isinstance(model, nn.Module):
        raise ReslabError(f"load_weights takes a model (an nn.Module) first, got {type(model).__name__}")
    if isinstance(weights, str | Path):
        weights = read_weights(weights).state
    return fit_weights(model, weights, strict)
