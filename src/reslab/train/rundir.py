"""A run directory and its checkpoints, read: which file a path means, the weights to
evaluate, a model rebuilt from what a checkpoint records, and weights of any origin.

    trained = load_trained("runs/r20")          # best.pt, else last.pt: the chosen model
    weights = read_weights("runs/r20")          # model.safetensors, else last.pt

The checkpoint itself (bytes, digest, RNG) is written and read by `checkpoint`;
what goes into it, by the loop.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ReslabError, torch_load
from ..models import create_model
from ..models.convert import convert_state_dict, read_safetensors, unwrap
from ..models.flops import check_input_size
from .checkpoint import load_checkpoint
from .config import TrainConfig


def resolve(path: str | Path, purpose: str) -> Path:
    """The file a path means: a run directory gives its chosen checkpoint (best.pt, else
    last.pt) for purpose "model", its exported weights (model.safetensors, else last.pt) for
    purpose "weights"; a file is itself."""
    path = Path(path)
    if not path.is_dir():
        return path
    first = {"model": "best.pt", "weights": "model.safetensors"}[purpose]
    return path / first if (path / first).is_file() else path / "last.pt"


def eval_weights(payload: dict[str, Any]) -> dict[str, Tensor]:
    """The weights to evaluate and deploy: the EMA when the run kept one."""
    return payload["ema"] if payload.get("ema") else payload["model"]


def build_model(name: str, model_args: dict[str, Any], image_size: tuple[int, int, int]) -> nn.Module:
    model = create_model(name, **model_args)
    check_input_size(model, (1, *image_size))
    return model


@dataclass
class Trained:
    """A model restored from a checkpoint, in eval mode, with what it needs to read images."""

    model: nn.Module
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int, int]  # (C, H, W) the model expects
    config: TrainConfig
    step: int
    loader: str = "memory"  # how the run read its data: "stream" evaluates at resize S/0.875 + center crop S


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> Trained:
    """Restores the evaluation weights (EMA if kept) of a checkpoint or run directory.

    A run directory resolves to best.pt when it exists (the chosen model), else last.pt.
    """
    path = resolve(path, "model")
    if path.suffix == ".safetensors":
        raise ReslabError(f"{path} holds weights only (no class names or input normalization); give the run's "
                          "checkpoint (best.pt or last.pt) or its run directory")
    payload = load_checkpoint(path)
    model = build_model(payload["model_name"], payload["model_args"], tuple(payload["image_size"]))
    model.load_state_dict(eval_weights(payload))
    model.to(device).eval()
    return Trained(model, list(payload["classes"]), tuple(payload["mean"]), tuple(payload["std"]),
                   tuple(payload["image_size"]), TrainConfig.from_dict(payload["config"]),
                   int(payload["state"]["step"]), payload.get("env", {}).get("loader", "memory"))


@dataclass(frozen=True)
class Weights:
    """A state_dict (reslab's key names) and what its file records about it (None / {} when nothing)."""

    path: Path
    state: dict[str, Tensor]
    name: str | None = None
    args: dict = field(default_factory=dict)
    image_size: tuple[int, int, int] | None = None
    classes: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def _read_state(path: Path) -> Weights:
    """The state_dict of a weights or checkpoint file and what the file records."""
    if path.suffix == ".safetensors":
        state, meta = read_safetensors(path)
        record = {k: json.loads(meta[k]) for k in ("model_args", "image_size", "classes", "mean", "std") if k in meta}
        return _weights(path, state, meta.get("model_name"), record)
    obj = torch_load(path, "weights file")
    if not isinstance(obj, dict):
        raise ReslabError(f"{path} holds a {type(obj).__name__}, not a state_dict or checkpoint")
    if "model_name" in obj and "model" in obj:
        # A reslab training checkpoint: verify its digest, deploy the EMA weights if it kept them.
        obj = load_checkpoint(path)
        return _weights(path, eval_weights(obj), obj["model_name"], obj)
    obj = unwrap(obj)  # e.g. akamaster's {"state_dict": ..., "best_prec1": ...}
    if not all(isinstance(v, Tensor) for v in obj.values()):
        raise ReslabError(f"{path} has no model state_dict (expected a dict of tensors or a reslab checkpoint)")
    return Weights(path, obj)


def _weights(path: Path, state: dict[str, Tensor], name: str | None, record: dict[str, Any]) -> Weights:
    def get(key: str, kind: type) -> Any:
        value = record.get(key)
        return kind(value) if value else None

    return Weights(path, state, name, dict(record.get("model_args") or {}), get("image_size", tuple),
                   get("classes", list), get("mean", tuple), get("std", tuple))


def read_weights(source: str | Path) -> Weights:
    """The weights of `source` with reslab's key names, and what its file records.

    source: a .safetensors file, a state_dict file (torchvision, timm or reslab), a reslab
    training checkpoint (its EMA weights if it kept them) or a run directory (its
    model.safetensors, else last.pt). A reslab file records the model name and args, the
    image size, the class names and the normalization.
    """
    path = resolve(source, "weights")
    if not path.is_file():
        raise ReslabError(f"no such checkpoint file: {path}")
    weights = _read_state(path)
    return dataclasses.replace(weights, state=convert_state_dict(weights.state))


