"""A run directory and its files: the checkpoint's contents (the only code that knows its
keys), which file a path means, a model rebuilt from what a checkpoint records, and the rules
for writing into a run directory.

    ckpt = Checkpoint.read("runs/r20/best.pt")   # verified; .step, .classes, .build()
    trained = load_trained("runs/r20")           # best.pt, else last.pt: the chosen model

The checkpoint's bytes (atomic write, digest, RNG) are `checkpoint`'s; weights files of any
origin are `reslab.weights`'. A run trained by a cluster's scheduler also holds job.json, the
job's id and log (`reslab.launch.JobRecord`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data.streaming import eval_resize
from ..errors import ReslabError
from ..launch import JOB
from ..models import create_model
from ..models.flops import check_input_size
from .checkpoint import export_safetensors, load_checkpoint, save_checkpoint
from .config import TrainConfig, recipe_differences


def resolve(path: str | Path, purpose: str) -> Path:
    """The file a path means: a run directory gives its chosen checkpoint (best.pt, else
    last.pt) for purpose "model", its exported weights (model.safetensors, else last.pt) for
    purpose "weights"; a file is itself."""
    path = Path(path)
    if not path.is_dir():
        return path
    first = {"model": "best.pt", "weights": "model.safetensors"}[purpose]
    return path / first if (path / first).is_file() else path / "last.pt"


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
        return save_checkpoint(payload, path, keep_previous=path.name == "last.pt")

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


# --- writing into a run directory --------------------------------------------------
def check_new(out: Path, cfg: TrainConfig) -> None:
    """A new run goes into a new or empty directory, or one where the same recipe died before
    its first checkpoint (it starts over); anything else is refused, never mixed or overwritten.
    The record of the job submitted to train it (job.json) does not count."""
    if out.exists() and not out.is_dir():
        raise ReslabError(f"{out} is a file; --out takes a directory for the run")
    if (out / "last.pt").exists():
        raise ReslabError(f"{out} already holds a run; resume it with --resume {out} or pick another --out")
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != JOB) \
        if out.is_dir() else []
    if not files:
        return
    if set(files) <= {"config.json", "metrics.jsonl"} and "config.json" in files:
        try:
            saved = json.loads((out / "config.json").read_text())
        except (OSError, ValueError):
            saved = None
        if saved is not None and not recipe_differences(saved, cfg):
            (out / "metrics.jsonl").unlink(missing_ok=True)  # the same run, killed before its first checkpoint
            return
        raise ReslabError(f"{out} holds the start of another run (its config.json, no checkpoint yet); "
                          "remove it or pick another --out")
    raise ReslabError(f"{out} holds files that are not a reslab run ({', '.join(files[:3])}"
                      f"{', ...' if len(files) > 3 else ''}); pick another --out or an empty directory")


@contextlib.contextmanager
def exclusive(out: Path, main: bool = True) -> Iterator[None]:
    """One process trains into a run directory at a time (a lock the kernel drops when it dies);
    only the main process of a distributed run takes it."""
    if not main:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not on Windows
        yield
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise ReslabError(f"cannot write the run directory {out}: {e.strerror or e}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ReslabError(f"another process is training into {out}; wait for it or pick another --out") \
                from None
        yield
    finally:
        os.close(fd)
