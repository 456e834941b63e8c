"""train(): a training run as a few short functions.

    run = train(preset("fast-cifar", model="resnet20"), "runs/r20")
    print(run.test_acc)

The run directory receives config.json, metrics.jsonl, last.pt / prev.pt /
best.pt, model.safetensors and curves.png. Resuming (`resume=True` on an
existing directory) restores weights, optimizer, scaler, EMA, RNG states, the
step and the position inside the epoch; the data order is a pure function of
(seed, epoch, batch), so N + N steps give the same parameters as 2N steps,
whether the data is held in memory or streamed from an image folder.
Rank-aware: under torchrun (WORLD_SIZE > 1) each rank's loader reads only its
slice of every global batch, gradients are averaged by DDP, and only rank 0
logs and saves.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ReslabError
from ..evaluate import EvalResult, evaluate
from ..models import compiled_batchnorm, list_models, load_weights, model_info
from ..runtime import Dist, amp_dtype, dist_from_env, environment, resolve_device, tune_allocator
from .checkpoint import (
    export_safetensors,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import COMPILE_AUTO_MIN_STEPS, TrainConfig, recipe_differences
from .logging import MetricsLog, Progress, plot_runs
from .rundir import build_model, eval_weights, load_trained, read_weights
from .step import EMA, RunState, build_optimizer, step_lr, teacher_targets, train_step
from .tracking import make_trackers


class NonFiniteLoss(ReslabError):
    """The loss became NaN or infinite; the last good step was checkpointed."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the run was checkpointed at a step boundary and can be resumed."""



@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    best_val_acc: float | None
    test: EvalResult | None
    seconds: float
    images_per_s: float


# --- data -----------------------------------------------------------------------
@dataclass
class Data:
    train: Any  # a Dataset held in memory, the ImageFiles of a streamed folder, or a ShardSplit
    val: Any | None
    test: Any | None
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    image_size: tuple[int, int, int]  # (C, H, W) the model sees, after resize
    loader: str = "memory"  # how the splits are read: "memory" or "stream"


def input_side(cfg: TrainConfig) -> int | None:
    """The side S of the run's square inputs: resize, else the model's default input."""
    return cfg.resize or (model_info(cfg.model).input_size[-1] if cfg.model in list_models() else None)


def load_data(cfg: TrainConfig, with_test: bool = True, loader: str | None = None,
              device: torch.device | None = None) -> Data:
    """Train/val/test splits of `cfg.data`: an image folder's val/ when it has train/ and val/, else
    val held out of train (stratified, seeded); tar shards' val shards (none without). loader:
    "memory" or "stream" (default cfg.loader; "auto" chooses by `choose_loader`, for the memory of
    `device`); shards are always streamed."""
    from ..data import (
        DataWarning,
        MissingSplitError,
        has_val_folder,
        holdout,
        load,
        shards_path,
        streamed_split,
    )

    side = input_side(cfg)
    listed: dict[str, Any] = {}
    sharded = shards_path(cfg.data) is not None

    def files(split: str) -> Any:  # each split folder is walked (or manifest read) once
        if split not in listed:
            listed[split] = streamed_split(cfg.data, split)
        return listed[split]

    kind = "stream" if sharded else loader or cfg.loader
    if kind == "auto":
        kind = choose_loader(cfg, side, files, device)
    if kind == "stream":
        read = files
    else:  # photos of different sizes are fitted to the run's input side
        def read(split: str) -> Any:
            return load(cfg.data, split=split, root=cfg.data_dir, fallback_size=side)

    full = read("train")
    if len(full.classes) < 2:
        raise ReslabError(f"{cfg.data} has {len(full.classes)} class ({', '.join(full.classes)}); a classifier needs "
                          "at least 2 class folders")
    if sharded:
        train, val = full, _val_shards(cfg, read)
    else:
        train, val = (full, read("val")) if has_val_folder(cfg.data) else holdout(full, cfg.val_size, cfg.seed)
    test = None
    if with_test:
        try:
            test = read("test")
        except MissingSplitError:  # e.g. one folder of class folders: train and validate on it
            warnings.warn(f"{cfg.data} has no test split (no test/ sub-folder): this run ends without a test "
                          "evaluation; the validation split still picks the model", DataWarning, stacklevel=2)
    if kind == "stream":
        return Data(train, val, test, list(full.classes), tuple(full.mean), tuple(full.std), (3, side, side),
                    "stream")
    c, h, w = full.images.shape[1:]
    if cfg.resize:
        h = w = cfg.resize
    return Data(train, val, test, list(full.classes), tuple(full.mean), tuple(full.std), (c, h, w))


def _val_shards(cfg: TrainConfig, read: Callable[[str], Any]) -> Any:
    """The val shards of a shard directory; without them (nothing is held out of train shards)
    no validation split, said in one line unless val_size=0 asked for none."""
    from ..data import DataWarning, MissingSplitError

    try:
        return read("val")
    except MissingSplitError:
        if cfg.val_size != 0:
            warnings.warn(f"{cfg.data} has no val shards (nothing is held out of the train shards): the run keeps "
                          "its last weights; shard a folder with a val/ sub-folder to validate", DataWarning,
                          stacklevel=3)
        return None


def choose_loader(cfg: TrainConfig, side: int, files: Callable[[str], Any],
                  device: torch.device | None = None) -> str:
    """loader=auto: "stream" for an image folder whose decoded images, N x 3 x S x S bytes over
    all its splits (`files(split)`), exceed `memory_budget(device)`, said in one line; else "memory"."""
    from ..data import DataWarning, MissingSplitError, imagefolder_path, streaming

    if imagefolder_path(cfg.data) is None:
        return "memory"
    n = 0
    for split in ("train", "val", "test"):
        try:
            n += len(files(split))
        except MissingSplitError:
            pass
    need, budget = n * 3 * side * side, streaming.memory_budget(device)
    if need <= budget:
        return "memory"
    warnings.warn(f"{cfg.data}: {n:,} images at {side}x{side} take {_size(need)} decoded, over the memory budget "
                  f"of {_size(budget)} (half the memory): streaming them from the files (--set loader=memory "
                  "decodes them into memory anyway)", DataWarning, stacklevel=3)
    return "stream"


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def make_loader(ds: Any, cfg: TrainConfig, train: bool, device: torch.device, batch_size: int | None = None,
                dist: Dist | None = None):
    """The loader of a split: `Loader` for a Dataset in memory, `StreamingLoader` for streamed
    ImageFiles, `ShardLoader` for tar shards; with `dist`, batches are this rank's share of every
    global batch."""
    from ..data import ImageFiles, Loader, ShardLoader, ShardSplit, StreamingLoader

    rank, world = (dist.rank, dist.world) if dist is not None else (0, 1)
    batch_size = batch_size or cfg.batch_size
    if isinstance(ds, ImageFiles | ShardSplit):
        stream = StreamingLoader if isinstance(ds, ImageFiles) else ShardLoader
        return stream(ds, batch_size=batch_size, train=train, image_size=input_side(cfg),
                      num_workers=_workers(cfg, world), dtype=torch.float32,
                      channels_last=cfg.channels_last, drop_last=train, seed=cfg.seed, device=device,
                      rank=rank, world=world)
    return Loader(ds, batch_size=batch_size, train=train,
                  augment=cfg.augment if train else None, resize=cfg.resize, dtype=torch.float32,
                  channels_last=cfg.channels_last, drop_last=train, seed=cfg.seed, device=device,
                  rank=rank, world=world)


def _workers(cfg: TrainConfig, world: int) -> int:
    """Decode processes per rank: cfg.workers, else the machine's cores shared by its ranks, at most 8."""
    if cfg.workers is not None:
        return cfg.workers
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return max(1, min(8, (os.cpu_count() or 1) // max(local, 1)))


# --- model ---------------------------------------------------------------------------
def model_args_for(cfg: TrainConfig, data: Data) -> dict[str, Any]:
    """The model's arguments: the classifier and input channels sized from the data."""
    fitted = {"num_classes": len(data.classes), "in_chans": data.image_size[0]}
    for key, value in fitted.items():
        if key in cfg.model_args and cfg.model_args[key] != value:
            raise ReslabError(f"model_args {key}={cfg.model_args[key]!r}, but {cfg.data} has {value} "
                              f"{'classes' if key == 'num_classes' else 'channels'}; drop it (it is sized from the data)")
    return {**fitted, **cfg.model_args}


# --- checkpoint payload ----------------------------------------------------------------
@dataclass
class Run:
    """The live objects of a run (what a checkpoint stores)."""

    cfg: TrainConfig
    data: Data
    model: nn.Module
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    ema: EMA | None
    state: RunState
    total_steps: int
    env: dict[str, Any]
    device: torch.device  # decided once, in _setup
    amp: torch.dtype | None  # the autocast dtype actually used (None: fp32)
    teacher: nn.Module | None = None  # frozen; rebuilt from cfg.teacher, not checkpointed


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DDP


def checkpoint_payload(run: Run) -> dict[str, Any]:
    """Everything needed to resume exactly, and to predict with nothing else at hand."""
    model = _unwrap(run.model)
    return {
        "config": run.cfg.to_dict(),
        "model_name": run.cfg.model,
        "model_args": model_args_for(run.cfg, run.data),
        "classes": run.data.classes,
        "mean": list(run.data.mean), "std": list(run.data.std),
        "image_size": list(run.data.image_size),
        "model": model.state_dict(),
        "ema": run.ema.module.state_dict() if run.ema else None,
        "optimizer": run.opt.state_dict(),
        "scaler": run.scaler.state_dict() if run.scaler else None,
        "schedule": {"name": run.cfg.schedule, "step": run.state.step, "total_steps": run.total_steps},
        "state": asdict(run.state),
        "rng": rng_state(),
        "env": run.env,
    }


def restore(run: Run, payload: dict[str, Any]) -> None:
    _unwrap(run.model).load_state_dict(payload["model"])
    run.opt.load_state_dict(payload["optimizer"])
    if run.scaler is not None and payload.get("scaler"):
        run.scaler.load_state_dict(payload["scaler"])
    if run.ema is not None and payload.get("ema"):
        run.ema.module.load_state_dict(payload["ema"])
    run.state = RunState(**payload["state"])
    set_rng_state(payload["rng"])


def save(run: Run, out: Path, name: str, dist: Dist) -> Path | None:
    if not dist.main:
        return None
    return save_checkpoint(checkpoint_payload(run), out / name, keep_previous=(name == "last.pt"))


def _save_if_finite(run: Run, out: Path, dist: Dist) -> str:
    """Checkpoints the run if its weights and statistics are all finite; where they are not
    (they diverged before the loss did) the last checkpoint on disk stays. Says which."""
    states = [_unwrap(run.model).state_dict(), run.ema.module.state_dict() if run.ema else {}]
    if all(torch.isfinite(v).all() for sd in states for v in sd.values() if v.is_floating_point()):
        return f"last good step saved to {save(run, out, 'last.pt', dist)}"
    if (out / "last.pt").exists():
        step = load_checkpoint(out / "last.pt")["state"]["step"]
        return f"the weights had diverged: {out / 'last.pt'} keeps step {step}, the last checkpoint"
    return "the weights had diverged before the first checkpoint: nothing to resume"


# --- the loop ----------------------------------------------------------------------------
def _batches(loader: Any, state: RunState) -> Iterator[tuple[Tensor, Tensor]]:
    loader.set_epoch(state.epoch, start_batch=state.batch)
    yield from loader


@contextlib.contextmanager
def _sigint_to_flag(flag: dict[str, bool]):
    """First Ctrl-C sets flag["stop"] (the loop saves at the next step boundary); a second one kills."""
    if threading_main():
        def handler(signum, frame):
            if flag["stop"]:
                raise KeyboardInterrupt
            flag["stop"] = True

        old = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old)
    else:
        yield


def threading_main() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def train(cfg: TrainConfig | None, out: str | Path, resume: bool = False, progress: bool = True,
          data: Data | None = None, on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Trains `cfg` into run directory `out` (created); resume=True continues from out/last.pt
    with the config saved there (`cfg` may then be None).

    on_step(step) runs after each optimizer step; raising KeyboardInterrupt in
    it behaves like Ctrl-C (checkpoint, then TrainingInterrupted). data: what
    `load_data(cfg)` returns, to reuse across runs of the same data, val_size
    and seed (it is not checked against cfg).
    """
    if not resume and not isinstance(cfg, TrainConfig):
        raise ReslabError(f"train needs a TrainConfig (e.g. preset('fast-cifar')), got {type(cfg).__name__}; "
                          "only resume=True may leave it None")
    if not isinstance(out, str | os.PathLike):
        raise ReslabError(f"out must be a directory path, got {type(out).__name__}")
    out = Path(out)
    dist = dist_from_env()
    if resume and (done := finished_result(out)) is not None:
        if progress and dist.main:
            print(f"{out} is finished ({done.steps} steps); nothing to do")
        return done
    if resume and not (out / "last.pt").is_file():
        raise ReslabError(f"no checkpoint {out / 'last.pt'} to resume: {out} holds no reslab run")
    if not resume and cfg is not None:
        _check_new_run_dir(out, cfg)
    with _exclusive(out, dist):
        return _train(cfg, out, resume, progress, data, on_step, dist)


def _train(cfg: TrainConfig | None, out: Path, resume: bool, progress: bool, data: Data | None,
           on_step: Callable[[int], None] | None, dist: Dist) -> TrainResult:
    run, log = _setup(cfg, out, resume, data, dist)
    try:
        return _run(run, out, log, progress, on_step, dist)
    finally:
        log.finish()  # trackers closed however the run ends


def _run(run: Run, out: Path, log: MetricsLog, progress: bool, on_step: Callable[[int], None] | None,
         dist: Dist) -> TrainResult:
    train_loader = make_loader(run.data.train, run.cfg, True, run.device, dist=dist)
    bar = Progress(run.total_steps, run.state.step, desc=out.name, enabled=progress and dist.main,
                   every=run.cfg.log_every)
    flag = {"stop": False}
    t_start = time.perf_counter()
    images = 0
    try:
        with _sigint_to_flag(flag):
            images = _loop(run, out, log, train_loader, bar, dist, flag, on_step)
    except KeyboardInterrupt:
        flag["stop"] = True
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    if flag["stop"]:
        path = save(run, out, "last.pt", dist)
        log.write("event", step=run.state.step, message="interrupted; checkpoint saved")
        raise TrainingInterrupted(f"interrupted at step {run.state.step}; checkpoint {path}; "
                                  f"resume with: reslab train --resume {out}")
    return _finish(run, out, log, dist, seconds, images, progress)


def finished_result(out: Path) -> TrainResult | None:
    """The outcome of a finished run in `out` (its summary.json), or None if it is not finished."""
    try:
        summary = json.loads((out / "summary.json").read_text())
        if summary["steps"] != load_checkpoint(out / "last.pt")["state"]["step"]:
            return None  # a finished run extended and stopped again
    except (OSError, ValueError, KeyError):
        return None
    t = summary.get("test")
    test = None if t is None else EvalResult(t["n"], t["loss"], t["top1"], t["top5"], t["per_class"],
                                             torch.zeros(0, 0, dtype=torch.int64))
    return TrainResult(out, summary["steps"], summary.get("best_val_acc"), test, summary.get("train_seconds", 0.0),
                       summary.get("train_img_s", 0.0))


def _check_new_run_dir(out: Path, cfg: TrainConfig) -> None:
    """A new run goes into a new or empty directory, or one where the same recipe died before
    its first checkpoint (it starts over); anything else is refused, never mixed or overwritten."""
    if out.exists() and not out.is_dir():
        raise ReslabError(f"{out} is a file; --out takes a directory for the run")
    if (out / "last.pt").exists():
        raise ReslabError(f"{out} already holds a run; resume it with --resume {out} or pick another --out")
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.is_dir() else []
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
def _exclusive(out: Path, dist: Dist) -> Iterator[None]:
    """One process trains into a run directory at a time (a lock the kernel drops when it dies)."""
    if not dist.main:
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


def _setup(cfg: TrainConfig, out: Path, resume: bool, data: Data | None, dist: Dist) -> tuple[Run, MetricsLog]:
    payload = None
    if resume:
        payload = load_checkpoint(out / "last.pt")
        cfg = TrainConfig.from_dict(payload["config"])
    model_info(cfg.model)  # an unknown model name fails here, before any data is read
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, dist)
    if device.type == "cpu":
        tune_allocator()  # every step frees and reallocates its activations: keep them in the process
    torch.manual_seed(cfg.seed)
    # a resumed run reads its data as it began (loader=auto decided then); runs older than
    # the choice were all held in memory
    loader = payload.get("env", {}).get("loader", "memory") if payload is not None else None
    data = data or load_data(cfg, with_test=cfg.test, loader=loader, device=device)
    model = build_model(cfg.model, model_args_for(cfg, data), data.image_size)
    init_note = init_weights(model, cfg.init) if cfg.init and payload is None else None
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    amp = amp_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type) if amp == torch.float16 else None
    steps_per_epoch = len(make_loader(data.train, cfg, True, device))
    if steps_per_epoch < 1:
        raise ReslabError(f"batch_size {cfg.batch_size} exceeds the {len(data.train)} training images")
    total = cfg.iters or cfg.epochs * steps_per_epoch
    env = environment(device) | {"amp": str(amp), "world_size": dist.world, "steps_per_epoch": steps_per_epoch,
                                 "loader": data.loader}
    run = Run(cfg, data, model, build_optimizer(model, cfg), scaler, ema, RunState(), total, env, device, amp)
    if payload is not None:
        restore(run, payload)
    run.model = _wrap(model, cfg, total - run.state.step, dist, device)
    if cfg.teacher:
        run.teacher = load_teacher(cfg, data, device, compile_wanted(cfg, total - run.state.step))
        env["teacher"] = {"model": cfg.teacher, "arch": type(_unwrap(run.teacher)).__name__}
    log = MetricsLog(out / "metrics.jsonl", enabled=dist.main)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({**cfg.to_dict(), "env": env}, indent=2))
        log.trackers = make_trackers(cfg.log, out, {**cfg.to_dict(), "env": env}, cfg.mlflow_uri)
        if payload is not None:
            log.write("event", step=run.state.step, message="resumed")
        if init_note:
            log.write("event", step=0, message=init_note)
    return run, log


def init_weights(model: nn.Module, source: str) -> str:
    """Loads the weights of `source` (see TrainConfig.init) into a fresh model; returns what it did.

    A classifier of another size (other classes) keeps its fresh initialization; every other
    tensor must fit, so weights of another architecture are refused with one line.
    """
    try:
        weights = read_weights(source)
    except ReslabError as e:
        raise ReslabError(f"init: {e}") from None
    path, state = weights.path, weights.state
    own = model.state_dict()

    def differs(key: str) -> bool:
        return key in state and key in own and state[key].shape != own[key].shape

    if differs("conv1.weight") and state["conv1.weight"].shape[1] != own["conv1.weight"].shape[1]:
        raise ReslabError(f"init {path}: these weights take {state['conv1.weight'].shape[1]}-channel images, "
                          f"the data has {own['conv1.weight'].shape[1]} channels")
    note = f"init from {path}: {len(state)} tensors"
    if differs("fc.weight"):
        note += f", new classifier ({state['fc.weight'].shape[0]} -> {own['fc.weight'].shape[0]} classes)"
        state = state.replace({k: own[k] for k in ("fc.weight", "fc.bias") if k in own})
    try:
        load_weights(model, state)
    except ReslabError as e:
        raise ReslabError(f"init {path}: {e}") from None
    return note


def load_teacher(cfg: TrainConfig, data: Data, device: torch.device, compiled: bool) -> nn.Module:
    """The frozen eval-mode model of cfg.teacher (a run directory or checkpoint), checked against the data."""
    try:
        t = load_trained(cfg.teacher, device)
    except ReslabError as e:
        raise ReslabError(f"teacher: {e}") from None
    if t.classes != data.classes:
        raise ReslabError(f"teacher {cfg.teacher} was trained on other classes ({len(t.classes)}: "
                          f"{', '.join(t.classes[:5])}...); distill from a run on the same data")
    if (t.mean, t.std, t.image_size) != (data.mean, data.std, data.image_size):
        raise ReslabError(f"teacher {cfg.teacher} expects other inputs (size {t.image_size}, mean {t.mean}, "
                          f"std {t.std}) than this run; distill from a run on the same data and resize")
    model = t.model.requires_grad_(False)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return torch.compile(model) if compiled else model


def _wrap(model: nn.Module, cfg: TrainConfig, steps_left: int, dist: Dist, device: torch.device) -> nn.Module:
    compiled = compile_wanted(cfg, steps_left)
    if compiled and device.type == "cpu":
        compiled_batchnorm(model)  # cheaper compiled BN statistics on a CPU; same parameters and state
    if dist.world > 1:
        import torch.distributed as tdist

        if not tdist.is_initialized():
            tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return torch.compile(model) if compiled else model


def compile_wanted(cfg: TrainConfig, steps_left: int) -> bool:
    return cfg.compile == "on" or (cfg.compile == "auto" and steps_left >= COMPILE_AUTO_MIN_STEPS)


def _loop(run: Run, out: Path, log: MetricsLog, loader: Any, bar: Progress, dist: Dist,
          flag: dict[str, bool], on_step: Callable[[int], None] | None) -> int:
    cfg, state = run.cfg, run.state
    amp = run.amp
    run.model.train()
    images_total = 0
    while state.step < run.total_steps:
        t0, seen, loss_sum, correct_sum = time.perf_counter(), 0, 0.0, 0
        for x, y in _batches(loader, state):  # this rank's share of the global batch
            lr = step_lr(cfg, state, run.total_steps)
            for g in run.opt.param_groups:
                g["lr"] = lr
            soft = teacher_targets(run.teacher, x, cfg, amp) if run.teacher is not None else None
            loss_value, correct = train_step(run.model, run.opt, x, y, cfg, amp, run.scaler, soft)
            if not math.isfinite(loss_value):
                log.write("event", step=state.step, message=f"non-finite loss {loss_value}")
                raise NonFiniteLoss(f"loss became {loss_value} at step {state.step} (lr {lr:.4g}); stopped; "
                                    f"{_save_if_finite(run, out, dist)}; lower lr or set grad_clip")
            if run.ema is not None:
                run.ema.update(_unwrap(run.model), state.step)
            acc = correct.item() / len(y)
            _advance(state, cfg, acc)
            seen += len(y) * dist.world
            loss_sum += loss_value * len(y)
            correct_sum += correct.item()
            if state.step % cfg.log_every == 0:
                log.write("step", step=state.step, epoch=state.epoch, loss=loss_value, acc=acc, lr=lr,
                          img_s=seen / (time.perf_counter() - t0))
            bar.update(1, loss=loss_value, lr=lr, epoch=state.epoch)
            if cfg.ckpt_every and state.step % cfg.ckpt_every == 0:
                save(run, out, "last.pt", dist)
            if on_step is not None:
                on_step(state.step)
            if flag["stop"] or state.step >= run.total_steps:
                break
        images_total += seen
        if flag["stop"]:
            break
        epoch_done = state.batch >= len(loader)
        if epoch_done or state.step >= run.total_steps:
            _end_epoch(run, out, log, bar, dist, seen, loss_sum, correct_sum, time.perf_counter() - t0,
                       final=state.step >= run.total_steps)
    return images_total


def _advance(state: RunState, cfg: TrainConfig, acc: float) -> None:
    state.step += 1
    state.batch += 1
    # ~20-step running mean of the batch error: one lucky batch does not end the warm-up
    state.err_avg = 0.95 * state.err_avg + 0.05 * (1.0 - acc)
    if cfg.warmup_until_error is not None and state.err_avg < cfg.warmup_until_error:
        state.warmup_done = True


def _end_epoch(run: Run, out: Path, log: MetricsLog, bar: Progress, dist: Dist, seen: int,
               loss_sum: float, correct_sum: int, seconds: float, final: bool) -> None:
    """Validation, best/last checkpoints and the epoch record; then moves to the next epoch."""
    cfg, state = run.cfg, run.state
    record: dict[str, Any] = {"step": state.step, "epoch": state.epoch, "seconds": round(seconds, 2)}
    if seen:  # nothing seen: resumed exactly at the end of an epoch
        n_local = seen // dist.world
        record.update(train_loss=loss_sum / n_local, train_acc=correct_sum / n_local, img_s=seen / seconds)
    full_epoch = state.batch >= run.env["steps_per_epoch"]
    state.epoch, state.batch = (state.epoch + 1, 0) if full_epoch else (state.epoch, state.batch)
    if dist.main and (final or state.epoch % cfg.eval_every == 0):
        record.update(_validate(run))
        if record.get("val_acc") is not None and record["val_acc"] > state.best_acc:
            state.best_acc, state.best_step = record["val_acc"], state.step
            save(run, out, "best.pt", dist)
    log.write("epoch", **record)
    save(run, out, "last.pt", dist)
    val = f"  val_acc {record['val_acc']:.4f}" if record.get("val_acc") is not None else ""
    if seen:
        bar.write(f"epoch {record['epoch']}  step {state.step}  loss {record['train_loss']:.4f}  "
                  f"train_acc {record['train_acc']:.4f}{val}  {record['img_s']:.0f} img/s")


def _validate(run: Run) -> dict[str, Any]:
    """Validation split figures; without one (val_size=0) the test split is monitored, never chosen on."""
    model = run.ema.module if run.ema else _unwrap(run.model)
    split_name, ds = ("val", run.data.val) if run.data.val is not None else ("test", run.data.test)
    if ds is None:
        return {}
    r = evaluate(model, make_loader(ds, run.cfg, False, run.device, batch_size=512), len(run.data.classes),
                 run.amp)
    return {f"{split_name}_loss": r.loss, f"{split_name}_acc": r.top1, f"{split_name}_top5": r.top5}


def _finish(run: Run, out: Path, log: MetricsLog, dist: Dist, seconds: float, images: int,
            progress: bool) -> TrainResult:
    """Chooses the weights (best on validation, else last), tests them once, exports and plots."""
    chosen = out / ("best.pt" if run.data.val is not None and (out / "best.pt").exists() else "last.pt")
    result = TrainResult(out, run.state.step, run.state.best_acc if run.data.val is not None else None, None,
                         seconds, images / max(seconds, 1e-9))
    if not dist.main:
        return result
    payload = load_checkpoint(chosen)
    model = build_model(payload["model_name"], payload["model_args"], tuple(payload["image_size"]))
    model.load_state_dict(eval_weights(payload))
    model = model.to(run.device).to(memory_format=torch.channels_last if run.cfg.channels_last
                                    else torch.contiguous_format)
    if run.cfg.test and run.data.test is not None:
        loader = make_loader(run.data.test, run.cfg, False, run.device, batch_size=512)
        result.test = evaluate(model, loader, len(run.data.classes), run.amp)
        log.write("test", step=payload["state"]["step"], checkpoint=chosen.name, loss=result.test.loss,
                  acc=result.test.top1, top5=result.test.top5)
    meta = {"config": json.dumps(payload["config"]), "model_name": payload["model_name"],
            "model_args": json.dumps(payload["model_args"]), "classes": json.dumps(payload["classes"]),
            "mean": json.dumps(payload["mean"]), "std": json.dumps(payload["std"]),
            "image_size": json.dumps(payload["image_size"])}
    export_safetensors(model.state_dict(), out / "model.safetensors", meta)
    log.finish(out / "model.safetensors")
    plot_runs([out], out / "curves.png", title=f"{run.cfg.model} on {run.cfg.data}")
    summary = {"steps": result.steps, "best_val_acc": result.best_val_acc, "chosen": chosen.name,
               "test": None if result.test is None else {k: v for k, v in result.test.to_dict().items()
                                                         if k != "confusion"},
               "train_seconds": round(seconds, 1), "train_img_s": round(result.images_per_s, 1)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if progress:
        test = f", test acc {result.test.top1:.4f}" if result.test else ""
        print(f"done: {result.steps} steps in {seconds:.0f} s ({result.images_per_s:.0f} img/s){test}; "
              f"weights {out / 'model.safetensors'}")
    return result
