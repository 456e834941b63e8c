"""A run directory and its checkpoints, read: which file a path means, the weights to
evaluate, a model rebuilt from what a checkpoint records, and weights of any origin.

    trained = load_trained("runs/r20")          # best.pt, else last.pt: the chosen model
    path, state, name, args, size = read_weights("runs/r20")   # model.safetensors, else last.pt

The checkpoint itself (bytes, digest, RNG) is written and read by `checkpoint`;
what goes into it, by the loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
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
                   int(payload["state"]["step"]))


def _read_state(path: Path) -> tuple[dict[str, Tensor], str | None, dict, tuple[int, int, int] | None]:
    """(state_dict, model name, model args, image size) from a weights or checkpoint file.

    Name, args and size are what the file records (None / {} when it records nothing).
    """
    if path.suffix == ".safetensors":
        state, meta = read_safetensors(path)
        size = json.loads(meta["image_size"]) if "image_size" in meta else None
        args = json.loads(meta["model_args"]) if "model_args" in meta else {}
        return state, meta.get("model_name"), args, tuple(size) if size else None
    obj = torch_load(path, "weights file")
    if not isinstance(obj, dict):
        raise ReslabError(f"{path} holds a {type(obj).__name__}, not a state_dict or checkpoint")
    if "model_name" in obj and "model" in obj:
        # A reslab training checkpoint: verify its digest, deploy the EMA weights if it kept them.
        obj = load_checkpoint(path)
        size = obj.get("image_size")
        return eval_weights(obj), obj["model_name"], dict(obj.get("model_args") or {}), tuple(size) if size else None
    obj = unwrap(obj)  # e.g. akamaster's {"state_dict": ..., "best_prec1": ...}
    if not all(isinstance(v, Tensor) for v in obj.values()):
        raise ReslabError(f"{path} has no model state_dict (expected a dict of tensors or a reslab checkpoint)")
    return obj, None, {}, None


def read_weights(source: str | Path) -> tuple[Path, dict[str, Tensor], str | None, dict, tuple[int, int, int] | None]:
    """(file, state_dict with reslab's key names, model name, model args, image size) of a weights source.

    source: a .safetensors file, a state_dict file (torchvision, timm or reslab), a reslab
    training checkpoint (its EMA weights if it kept them) or a run directory (its
    model.safetensors, else last.pt). Name, args and size are None / {} where the file
    records nothing.
    """
    path = resolve(source, "weights")
    if not path.is_file():
        raise ReslabError(f"no such checkpoint file: {path}")
    state, name, args, size = _read_state(path)
    return path, convert_state_dict(state), name, args, size


