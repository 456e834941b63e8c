"""The record of a trained model: the checkpoint's contents (the only code that knows its
keys), which file a path means, and a model rebuilt from what a checkpoint records.

    ckpt = Checkpoint.read("runs/r20/best.pt")   # verified; .step, .classes, .build()
    trained = load_trained("runs/r20")           # best.pt, else last.pt: the chosen model

The checkpoint's bytes (atomic write, digest, RNG) are `checkpoint`'s; the run directory's
files are `reslab.rundir`'s; weights files of any origin are `reslab.weights`'.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.streaming import eval_resize
from ..errors import ReslabError
from ..models import create_model
from ..models.flops import check_input_size
from ..rundir import LAST, RunDir
from .checkpoint import export_safetensors, load_checkpoint, save_checkpoint
from .config import TrainConfig


def resolve(path: str | Path, purpose: str) -> Path:
    """The file a path means: a run directory the file it chose for `purpose` (RunDir.chosen);
    a file is itself."""
    path = Path(path)
    return RunDir(path).chosen(purpose) if path.is_dir() else path


def build_model(name: str, model_args: dict[str, Any], image_size: tuple[int, int, int]) -> nn.Module:
    model = create_model(name, **model_args)
    check_input_size(model, (1, *image_size))
    return model


# --- the checkpoint's contents ---------------------------------------------------
@dataclass
class Checkpoint:
    """Everything needed to resume a run exactly, and to predict with nothing else at hand."""

    config: dict[str, Any]  # TrainConfig.to_dict()
    model_name: str
    model_args: dict[str, Any]
    classes: list[str]
    mean: list[float]
    std: list[float]
    image_size: list[int]  # (C, H, W) the model sees
    model: dict[str, Tensor]
    state: dict[str, Any]  # RunState as a dict: step, epoch, batch, best_acc, ...
    ema: dict[str, Tensor] | None = None
    optimizer: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None
    schedule: dict[str, Any] = field(default_factory=dict)
    rng: dict[str, Any] | None = None
    env: dict[str, Any] = field(default_factory=dict)  # machine, amp, world size, loader, ...

    @classmethod
    def read(cls, path: str | Path) -> Checkpoint:
        """The verified checkpoint at `path` (a run directory: its last.pt); one line if it is not one."""
        payload = load_checkpoint(path)
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in payload.items() if k in names})
        except TypeError:
            missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in payload)
            raise ReslabError(f"{path} is a checkpoint without a run's record (missing {', '.join(missing)})") \
                from None

    def write(self, path: Path) -> Path:
        """Atomically; last.pt keeps its predecessor as prev.pt."""
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return save_checkpoint(payload, path, keep_previous=path.name == LAST)

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def loader(self) -> str:
        """How the run read its data ("memory" or "stream"); runs older than the choice were in memory."""
        return self.env.get("loader", "memory")

    def eval_weights(self) -> dict[str, Tensor]:
        """The weights to evaluate and deploy: the EMA when the run kept one."""
        return self.ema if self.ema else self.model

    def build(self) -> nn.Module:
        """The model with its evaluation weights (on the CPU, in train mode)."""
        model = build_model(self.model_name, self.model_args, tuple(self.image_size))
        model.load_state_dict(self.eval_weights())
        return model

    def metadata(self) -> dict[str, str]:
        """What the exported weights record (safetensors metadata: strings)."""
        return {"config": json.dumps(self.config), "model_name": self.model_name, "loader": self.loader,
                **{k: json.dumps(getattr(self, k)) for k in ("model_args", "classes", "mean", "std", "image_size")}}

    def export(self, state: dict[str, Tensor], path: Path) -> Path:
        """Writes `state` (this checkpoint's model) as safetensors with this record."""
        return export_safetensors(state, path, self.metadata())


# --- models rebuilt from files ----------------------------------------------------
def preprocess(loader: str, side: int) -> str:
    """How an image becomes the model's input, as the run evaluated (in words, for deployers)."""
    if loader == "stream":
        return f"shorter side resized to {eval_resize(side)} px, then the center {side}x{side}"
    return f"shorter side resized to {side} px, then the center {side}x{side}"


@dataclass
class Trained:
    """A model rebuilt from a file or a name, in eval mode, and what the file records about it.

    A checkpoint records everything; a weights file may record nothing (None); a model
    built from a name alone has fresh weights (`random`).
    """

    model: nn.Module
    name: str
    image_size: tuple[int, int, int] | None  # (C, H, W) the model was trained at
    classes: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    config: TrainConfig | None = None  # only from a checkpoint
    step: int | None = None
    loader: str = "memory"  # how the run read its data: "stream" evaluates at resize S/0.875 + center crop S
    random: bool = False
    args: dict[str, Any] = field(default_factory=dict)  # create_model's keyword arguments, as recorded

    def metadata(self, input_size: tuple[int, int, int]) -> dict[str, str]:
        """What a deployer needs beside the graph, as strings (ONNX metadata_props, OpenVINO rt_info)."""
        side = input_size[-1]
        meta = {"model_name": self.name, "model_args": json.dumps(self.args), "input_size": json.dumps(list(input_size)),
                "input_layout": "NCHW, RGB (L for 1 channel), float32: (pixel / 255 - mean) / std",
                "loader": self.loader, "preprocess": preprocess(self.loader, side)}
        for key in ("classes", "mean", "std"):
            if getattr(self, key) is not None:
                meta[key] = json.dumps(list(getattr(self, key)))
        return meta


def load_trained(path: str | Path, device: str | torch.device = "cpu") -> Trained:
    """Restores the evaluation weights (EMA if kept) of a checkpoint or run directory.

    A run directory resolves to best.pt when it exists (the chosen model), else last.pt.
    """
    path = resolve(path, "model")
    if path.suffix == ".safetensors":
        raise ReslabError(f"{path} holds weights only (no class names or input normalization); give the run's "
                          "checkpoint (best.pt or last.pt) or its run directory")
    ckpt = Checkpoint.read(path)
    model = ckpt.build().to(device).eval()
    return Trained(model, ckpt.model_name, tuple(ckpt.image_size), list(ckpt.classes), tuple(ckpt.mean),
                   tuple(ckpt.std), TrainConfig.from_dict(ckpt.config), ckpt.step, ckpt.loader,
                   args=dict(ckpt.model_args))
