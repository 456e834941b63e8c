"""TrainConfig: everything a training run needs, validated; named presets.

A run is fully described by its config (plus the code's git SHA), so
config.json in a run directory is enough to repeat it. Presets hold the
published recipes; `--set key=value` overrides any field.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from ..errors import ReslabError, is_whole
from .tracking import parse_trackers

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("multistep", "cosine", "onecycle", "constant")
AMP = ("bf16", "fp16", "none")
COMPILE = ("auto", "on", "off")
LOADERS = ("auto", "memory", "stream")

# torch.compile takes tens of seconds to compile a ResNet on 2 CPU cores; "auto"
# compiles only runs long enough (in optimizer steps) to win that back.
COMPILE_AUTO_MIN_STEPS = 2000


@dataclass
class TrainConfig:
    """One training run. Steps are optimizer iterations; lr is per batch of `batch_size`.

    Exactly one of `epochs` and `iters` sets the length; `iters` wins when both are set.
    `replace`, `with_overrides` (--set) and `preset` clear one when the other is given.
    """

    model: str = "resnet20"  # a registered model name (`reslab models`)
    data: str = "cifar10"  # digits, cifar10, cifar100, cifar100_coarse, mnist, fashion_mnist, imagefolder:PATH, shards:DIR
    data_dir: str | None = None  # data cache/download directory; None: $RESLAB_DATA, else ~/.cache/reslab
    model_args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of create_model, e.g. {"shortcut":"B"}
    # weights to start from (fine-tuning): a weights file (.safetensors or torch; torchvision,
    # timm or reslab) or a reslab run directory or checkpoint; a classifier of another size starts fresh
    init: str | None = None
    # length and batch
    epochs: int | None = None  # run length in passes over the training split
    iters: int | None = 64000  # run length in optimizer steps (the paper: 64k)
    batch_size: int = 128  # images per optimizer step, over all ranks together
    # images held out of train for model choice: a count, a fraction < 1, 0 for none; None fits the
    # data (10%, at most 5,000, none for tiny sets: reslab.data.holdout). An image folder with
    # train/ and val/ validates on val/ instead.
    val_size: float | None = None
    # optimizer
    optimizer: str = "sgd"  # "sgd" or "adamw"
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = False  # Nesterov momentum (SGD only)
    weight_decay: float = 1e-4  # L2 penalty (SGD) or decoupled decay (AdamW)
    decay_norm_and_bias: bool = True  # the paper decays every parameter; False spares BN and biases
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW only
    # schedule, by iteration (see schedule.py)
    schedule: str = "multistep"  # "multistep" (x gamma at milestones), "cosine", "onecycle" or "constant"
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the run; paper: 32k and 48k of 64k
    gamma: float = 0.1  # lr factor at each milestone
    warmup_iters: int = 0  # steps of linear warm-up from warmup_start x lr
    warmup_start: float = 0.0  # lr factor at step 0 of a linear warm-up
    warmup_lr: float | None = None  # constant lr until training error < warmup_until_error (paper, resnet110)
    warmup_until_error: float | None = None  # training error (a fraction) that ends the warmup_lr phase, e.g. 0.8
    # regularisation
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    grad_clip: float | None = None  # max global L2 norm of the gradients
    ema_decay: float | None = None  # e.g. 0.999; evaluated and saved next to the raw weights
    sam_rho: float | None = None  # sharpness-aware minimization radius, e.g. 0.05; two passes a step
    # knowledge distillation (Hinton et al. 2015): a trained run directory or checkpoint to learn from
    teacher: str | None = None
    distill_alpha: float = 0.5  # weight of the teacher's soft targets; 1 - alpha on the labels
    distill_temperature: float = 4.0  # softmax temperature of the soft targets
    # data pipeline
    augment: str | None = "cifar"  # data held in memory; streamed data: RandomResizedCrop + flip
    resize: int | None = None  # input side S; None: the model's default
    # "memory": decode once into the uint8 cache, batches augmented on the device; "stream": decode
    # image folders as they are read (train: RandomResizedCrop S + flip; eval: resize S/0.875, center
    # crop S; ImageNet mean/std); "auto": stream where the decoded images (N x 3 x S x S bytes)
    # would take over half the memory (reslab.data.streaming.memory_budget). Tar shards (shards:DIR)
    # are always streamed.
    loader: str = "auto"
    workers: int | None = None  # decode processes per rank when streaming; None: cores / local ranks, <= 8
    # speed
    device: str = "auto"  # "auto" (cuda when available, else cpu), "cpu" or "cuda"
    channels_last: bool = True  # NHWC memory format (oneDNN's and cuDNN's fast layout)
    amp: str = "bf16"  # autocast: "bf16" (fp32 on a CPU without native bf16), "fp16" (CUDA only) or "none"
    compile: str = "auto"  # torch.compile: "on", "off", or "auto" (runs of COMPILE_AUTO_MIN_STEPS steps or more)
    foreach: bool = True  # the optimizer's multi-tensor (foreach) implementation
    threads: int | None = None  # intra-op CPU threads; None: torch's default
    # bookkeeping
    seed: int = 0  # seeds the weights, the data order, the augmentation and the split
    log_every: int = 50  # steps between metrics.jsonl step lines
    eval_every: int = 1  # epochs between validation passes
    ckpt_every: int | None = None  # steps between checkpoints, besides each epoch end
    test: bool = True  # evaluate the best checkpoint on the test split once, at the end
    log: str = "none"  # also track in "tensorboard", "mlflow" or both ("tensorboard,mlflow")
    mlflow_uri: str | None = None  # MLflow tracking URI; default a local store beside the run directory

    def __post_init__(self) -> None:
        self.milestones = _convert("milestones", self.milestones, lambda v: tuple(float(m) for m in v),
                                   "a list of numbers, e.g. [0.5,0.75]")
        self.betas = _convert("betas", self.betas, lambda v: tuple(float(b) for b in v), "two numbers, e.g. [0.9,0.999]")
        self.model_args = _convert("model_args", self.model_args, lambda v: dict(v.items()),
                                   'a JSON object, e.g. {"num_classes":100}')
        # --set amp=none parses to None and compile=true to True: accept both spellings
        self.amp = "none" if self.amp is None else self.amp
        if isinstance(self.compile, bool):
            self.compile = "on" if self.compile else "off"
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        _choice("schedule", self.schedule, SCHEDULES)
        # imported here, not at the top: `reslab --help` reads this module without importing torch
        from ..data.datasets import imagefolder_path, shards_path
        from ..data.loader import AUGMENTS

        _choice("augment", self.augment, AUGMENTS)
        _choice("loader", self.loader, LOADERS)
        if self.loader == "stream" and imagefolder_path(self.data) is None and shards_path(self.data) is None:
            raise ReslabError(f"loader=stream reads image folders (imagefolder:PATH) and tar shards (shards:DIR); "
                              f"{self.data} is held in memory: set loader=auto or memory")
        if self.loader == "memory" and shards_path(self.data) is not None:
            raise ReslabError(f"{self.data}: tar shards are streamed, not decoded into memory: set loader=auto or "
                              "stream (or train from the image folder they were written from)")
        if self.workers is not None and not is_whole(self.workers):
            raise ReslabError(f"workers must be a whole number >= 0 or None, got {self.workers!r}")
        _choice("amp", self.amp, AMP)
        parse_trackers(self.log)
        _choice("compile", self.compile, COMPILE)
        if self.epochs is None and self.iters is None:
            raise ReslabError("set the run length: epochs or iters (both are None)")
        _positive("epochs", self.epochs, allow_none=True)
        _positive("iters", self.iters, allow_none=True)
        _positive("batch_size", self.batch_size)
        _positive("log_every", self.log_every)
        _positive("eval_every", self.eval_every)
        _positive("ckpt_every", self.ckpt_every, allow_none=True)
        _positive("threads", self.threads, allow_none=True)
        _positive("resize", self.resize, allow_none=True)
        _range("lr", self.lr, 0.0, 10.0, low_open=True)
        _range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _range("weight_decay", self.weight_decay, 0.0, 1.0)
        _range("gamma", self.gamma, 0.0, 1.0, low_open=True)
        _range("warmup_start", self.warmup_start, 0.0, 1.0)
        _range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        if self.val_size is not None:
            _range("val_size", self.val_size, 0.0, float("inf"))
            if self.val_size >= 1 and self.val_size != int(self.val_size):
                raise ReslabError(f"val_size must be an image count, a fraction in (0, 1) or 0, got {self.val_size}")
        if self.warmup_iters < 0:
            raise ReslabError(f"warmup_iters must be >= 0, got {self.warmup_iters}")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ReslabError("nesterov needs optimizer=sgd and momentum > 0")
        if any(not 0.0 < m < 1.0 for m in self.milestones) or list(self.milestones) != sorted(self.milestones):
            raise ReslabError(f"milestones must be increasing fractions of the run in (0, 1), got {self.milestones}")
        if self.grad_clip is not None:
            _range("grad_clip", self.grad_clip, 0.0, float("inf"), low_open=True)
        if self.ema_decay is not None:
            _range("ema_decay", self.ema_decay, 0.0, 1.0, low_open=True, high_open=True)
        if self.sam_rho is not None:
            _range("sam_rho", self.sam_rho, 0.0, 1.0, low_open=True)
        _range("distill_alpha", self.distill_alpha, 0.0, 1.0)
        _range("distill_temperature", self.distill_temperature, 0.0, 100.0, low_open=True)
        if (self.warmup_lr is None) != (self.warmup_until_error is None):
            raise ReslabError("warmup_lr and warmup_until_error go together: set both or neither")
        if self.warmup_until_error is not None:
            _range("warmup_until_error", self.warmup_until_error, 0.0, 1.0, low_open=True)
            _range("warmup_lr", self.warmup_lr, 0.0, 10.0, low_open=True)

    # --- conversions ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ReslabError(f"unknown config field(s) {', '.join(unknown)}; see `reslab train --help`")
        return cls(**d)

    def replace(self, **changes: Any) -> TrainConfig:
        return TrainConfig.from_dict({**self.to_dict(), **_set_length(changes)})

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """Applies `key=value` strings (the CLI's --set); values parse as JSON, else as strings.

        >>> TrainConfig().with_overrides(["lr=0.05", "milestones=[0.3,0.6]", "amp=none"]).lr
        0.05
        """
        changes: dict[str, Any] = {}
        for a in assignments:
            key, sep, text = a.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise ReslabError(f"--set expects key=value, got {a!r}")
            changes[key] = parse_value(text.strip())
        return self.replace(**changes)


# Fields that change how fast a run goes, where its data is cached or where it is tracked,
# not what it computes.
SPEED_ONLY = ("threads", "device", "compile", "log_every", "ckpt_every", "data_dir", "log", "mlflow_uri",
              "workers")


def recipe_differences(cfg: TrainConfig) -> Callable[[dict[str, Any]], list[str]]:
    """differences(saved): the fields in which a saved config.json (a dict) computes something
    other than `cfg`, speed settings aside; fields newer than the saved file count at their
    defaults. What RunDir.check_new and RunDir.check_recipe ask."""
    want = {k: v for k, v in json.loads(cfg.to_json()).items() if k not in SPEED_ONLY}
    defaults = json.loads(TrainConfig(model=cfg.model).to_json())
    return lambda saved: [k for k, v in want.items() if saved.get(k, defaults[k]) != v]


def parse_value(text: str) -> Any:
    """'0.1' -> 0.1, 'true' -> True, 'none'/'null' -> None, '[1,2]' -> [1, 2], 'abc' -> 'abc'."""
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _set_length(changes: dict[str, Any]) -> dict[str, Any]:
    """Setting one of epochs and iters clears the other, as --epochs and --iters do."""
    for given, other in (("epochs", "iters"), ("iters", "epochs")):
        if changes.get(given) is not None and other not in changes:
            return {**changes, other: None}
    return changes


def _convert(name: str, value: Any, fn: Callable[[Any], Any], expected: str) -> Any:
    try:
        return fn(value)
    except (TypeError, ValueError, AttributeError):
        raise ReslabError(f"{name} must be {expected}; got {value!r}") from None


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ReslabError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")


def _positive(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if not is_whole(value, 1):
        raise ReslabError(f"{name} must be a positive integer, got {value!r}")


def _range(name: str, value: Any, low: float, high: float, low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
    if not ok:
        lo, hi = "(" if low_open else "[", ")" if high_open else "]"
        raise ReslabError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")


# --- presets -------------------------------------------------------------------
PRESETS: dict[str, dict[str, Any]] = {
    # He et al. 2015, section 4.2: batch 128, lr 0.1 /10 at 32k and 48k, stop at 64k,
    # wd 1e-4, momentum 0.9, 45k/5k split, pad-4 crop + flip.
    "paper-cifar": dict(
        data="cifar10", iters=64000, epochs=None, batch_size=128, val_size=5000,
        optimizer="sgd", lr=0.1, momentum=0.9, nesterov=False, weight_decay=1e-4,
        schedule="multistep", milestones=(0.5, 0.75), gamma=0.1, augment="cifar",
    ),
    # A short schedule: one-cycle (linear warm-up to a high peak, linear decay to zero), nesterov,
    # label smoothing, weight decay on weights only, EMA, pad-4 crops with a mirrored border.
    # How each choice was measured, and what lost: benchmarks/RESULTS_train.md ("Real-data acceptance").
    "fast-cifar": dict(
        data="cifar10", epochs=40, iters=None, batch_size=128, val_size=5000,
        optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
        decay_norm_and_bias=False, schedule="onecycle", warmup_iters=700, warmup_start=0.1,
        label_smoothing=0.1, ema_decay=0.999, augment="cifar-reflect",
    ),
    # Dive into Deep Learning, chapter 8.6: ResNet-18 on Fashion-MNIST at 96x96.
    "d2l-fashion": dict(
        model="resnet18", model_args={"num_classes": 10, "in_chans": 1}, data="fashion_mnist",
        epochs=10, iters=None, batch_size=256, val_size=0, optimizer="sgd", lr=0.05,
        momentum=0.0, weight_decay=0.0, schedule="constant", augment=None, resize=96,
    ),
    # torchvision's classification reference: 90 epochs, lr 0.1 /10 every 30, batch 256, streamed
    # from PATH/train (RandomResizedCrop 224 + flip) and validated on PATH/val (resize 256, center
    # crop 224), ImageNet mean/std. augment applies only where loader=memory is forced.
    "imagenet": dict(
        model="resnet50", data="imagefolder:imagenet", epochs=90, iters=None, batch_size=256,
        val_size=0, optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4,
        schedule="multistep", milestones=(1 / 3, 2 / 3), gamma=0.1, augment="flip", resize=224,
        loader="stream",
    ),
}

def paper_warmup(model: str, model_args: dict[str, Any], lr: float, schedule: str) -> dict[str, Any]:
    """The paper's warm-up (section 4.2): with its schedule (lr 0.1, steps), CIFAR nets of 110
    layers and more start at lr 0.01 until the training error is under 80% (about 400
    iterations), then go back to 0.1. The fields to set ({} where it does not apply)."""
    import re

    from ..models.registry import default_input_size

    found = re.search(r"(\d+)$", model)
    depth = model_args.get("depth") or (int(found.group(1)) if found else 0)
    if depth >= 110 and lr == 0.1 and schedule == "multistep" and default_input_size(model)[-1] == 32:
        return {"warmup_lr": 0.01, "warmup_until_error": 0.8}
    return {}


def preset(name: str, **overrides: Any) -> TrainConfig:
    """A named recipe with `overrides` applied on top.

    >>> preset("paper-cifar", model="resnet110").warmup_lr
    0.01
    """
    if name not in PRESETS:
        raise ReslabError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    values = {**PRESETS[name], **_set_length(overrides)}
    if name == "paper-cifar" and values.get("warmup_lr") is None:
        values.update(paper_warmup(values.get("model", "resnet20"), values.get("model_args", {}), values["lr"],
                                   values["schedule"]))
    return TrainConfig(**values)
