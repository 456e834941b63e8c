"""The record of a trained model: what every model file reslab writes says about its model
(`ModelRecord`, the one pair of functions that writes and reads it as file metadata), the
checkpoint's contents (the only code that knows its keys), which file a path means, and a
model rebuilt from what a checkpoint records.

    ckpt = Checkpoint.read("runs/r20/best.pt")   # verified; .step, .record, .build()
    trained = load_trained("runs/r20")           # best.pt, else last.pt: the chosen model
    trained.record.classes, trained.record.mean  # what the model needs to see images

The checkpoint's bytes (atomic write, digest, RNG) are `checkpoint`'s; the run directory's
files are `reslab.rundir`'s; weights files of any origin are `reslab.weights`'.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import MISSING, dataclass, field
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


# --- the model record -------------------------------------------------------------
INPUT_LAYOUT = "NCHW, RGB (L for 1 channel), float32: (pixel / 255 - mean) / std"
# Every key ModelRecord.metadata may write, and "image_size", which older files have.
METADATA_KEYS = ("model_name", "model_args", "loader", "input_layout", "input_size", "image_size", "preprocess",
                 "classes", "mean", "std")


@dataclass(frozen=True)
class ModelRecord:
    """What a model file records about its model: enough to build it and to feed it images as it
    was trained. A checkpoint records everything; a weights file of another origin may record
    nothing (None, {})."""

    name: str | None = None  # the registered model
    args: dict[str, Any] = field(default_factory=dict)  # create_model's keyword arguments
    classes: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_size: tuple[int, int, int] | None = None  # (C, H, W) the model sees
    loader: str = "memory"  # how the run read its data: "stream" evaluates at resize S/0.875 + center crop S

    def __post_init__(self) -> None:  # one type per field, whatever the source (JSON lists, tuples)
        for key, kind in (("classes", list), ("mean", tuple), ("std", tuple), ("image_size", tuple)):
            value = getattr(self, key)
            object.__setattr__(self, key, kind(value) if value else None)
        object.__setattr__(self, "args", dict(self.args or {}))
        object.__setattr__(self, "loader", self.loader or "memory")

    def metadata(self) -> dict[str, str]:
        """The record as strings, for safetensors metadata, ONNX metadata_props and OpenVINO
        rt_info; with how an image becomes the input, in words, for deployers."""
        meta = {**({"model_name": self.name} if self.name else {}), "model_args": json.dumps(self.args),
                "loader": self.loader, "input_layout": INPUT_LAYOUT}
        if self.image_size is not None:
            meta["input_size"] = json.dumps(list(self.image_size))
            meta["preprocess"] = preprocess(self.loader, self.image_size[-1])
        for key in ("classes", "mean", "std"):
            if getattr(self, key) is not None:
                meta[key] = json.dumps(list(getattr(self, key)))
        return meta

    def lacks(self, need_classes: bool = True) -> list[str]:
        """What the model needs to see images as it was trained that the record lacks (in words)."""
        keys = (*(("classes",) if need_classes else ()), "mean", "std", "image_size")
        return [k.replace("_", " ") for k in keys if getattr(self, k) is None]

    @classmethod
    def from_metadata(cls, meta: dict[str, str]) -> ModelRecord:
        """The record `metadata` wrote. Files of reslab 0.x before one record name the input size
        "image_size" in safetensors (read too)."""
        def value(key: str) -> Any:
            return json.loads(meta[key]) if meta.get(key) else None

        return cls(meta.get("model_name") or None, value("model_args") or {}, value("classes"), value("mean"),
                   value("std"), value("input_size") or value("image_size"), meta.get("loader") or "memory")


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
        fields = dataclasses.fields(cls)
        missing = [f.name for f in fields if f.name not in payload and f.default is f.default_factory is MISSING]
        missing += [] if "loader" in (payload.get("env") or {}) else ["env.loader"]  # always there since version 2
        if missing:
            raise ReslabError(f"{path} is a checkpoint without a run's record (missing {', '.join(missing)})")
        return cls(**{f.name: payload[f.name] for f in fields if f.name in payload})

    def write(self, path: Path) -> Path:
        """Atomically; last.pt keeps its predecessor as prev.pt."""
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return save_checkpoint(payload, path, keep_previous=path.name == LAST)

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def loader(self) -> str:
        """How the run read its data ("memory" or "stream")."""
        return self.env["loader"]

    def eval_weights(self) -> dict[str, Tensor]:
        """The weights to evaluate and deploy: the EMA when the run kept one."""
        return self.ema if self.ema else self.model

    def build(self) -> nn.Module:
        """The model with its evaluation weights (on the CPU, in train mode)."""
        model = build_model(self.model_name, self.model_args, tuple(self.image_size))
        model.load_state_dict(self.eval_weights())
        return model

    @property
    def record(self) -> ModelRecord:
        return ModelRecord(self.model_name, self.model_args, self.classes, self.mean, self.std, self.image_size,
                           self.loader)

    def metadata(self) -> dict[str, str]:
        """What the exported weights record (safetensors metadata: strings): the model record and the recipe."""
        return {"config": json.dumps(self.config), **self.record.metadata()}

    def export(self, state: dict[str, Tensor], path: Path) -> Path:
        """Writes `state` (this checkpoint's model) as safetensors with this record."""
        return export_safetensors(state, path, self.metadata())


# --- models rebuilt from files ----------------------------------------------------
def preprocess(loader: str, side: int) -> str:
    """How an image becomes the model's input, as the run evaluated (in words, for deployers)."""
    if loader == "stream":
        return f"shorter side resized to {eval_resize(side)} px, then the center {side}x{side}"
    return f"shorter side resized to {side} px, then the center {side}x{side}"


@dataclass(frozen=True)
class Trained:
    """A model rebuilt from a file or a name, in eval mode, and what the file records about it.

    A model built from a name alone has fresh weights (`random`) and a record of its name only.
    """

    model: nn.Module
    record: ModelRecord
    config: TrainConfig | None = None  # only from a checkpoint
    step: int | None = None
    random: bool = False

    def metadata(self, input_size: tuple[int, int, int]) -> dict[str, str]:
        """What a deployer needs beside the graph exported at `input_size`, as strings."""
        return dataclasses.replace(self.record, image_size=input_size).metadata()


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
    return Trained(model, ckpt.record, TrainConfig.from_dict(ckpt.config), ckpt.step)
