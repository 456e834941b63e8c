"""A run's live objects: built from its config, or restored from its last checkpoint, and
checkpointed back.

    run = setup(cfg, out, resume=False, splits=None, dist=dist_from_env())
    run.save(LAST)

`setup` decides the device, the autocast dtype and the splits once, builds the
model (initialized from other weights if `cfg.init` asks), the optimizer, the
EMA and the scaler, restores them from `out/last.pt` when resuming, then
wraps the model (DDP, torch.compile) and loads a distillation teacher.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ReslabError
from ..models import compiled_batchnorm, fit_weights, model_info
from ..rundir import RunDir
from ..runtime import Dist, amp_dtype, environment, resolve_device, tune_allocator
from ..weights import load_ready, read_weights
from .checkpoint import rng_state, set_rng_state
from .config import COMPILE_AUTO_MIN_STEPS, TrainConfig
from .logging import MetricsLog
from .record import Checkpoint, build_model
from .splits import Splits, load_data, make_loader, model_args_for
from .step import EMA, RunState, build_optimizer
from .tracking import make_trackers


@dataclass
class Run:
    """The live objects of a run (what a checkpoint stores) and where it writes."""

    cfg: TrainConfig
    data: Splits
    model: nn.Module  # wrapped (DDP, torch.compile) once set up; `unwrapped` is the module itself
    opt: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    ema: EMA | None
    state: RunState
    total_steps: int
    env: dict[str, Any]
    device: torch.device  # decided once, in setup
    amp: torch.dtype | None  # the autocast dtype actually used (None: fp32)
    out: Path
    dist: Dist
    log: MetricsLog
    teacher: nn.Module | None = None  # frozen; rebuilt from cfg.teacher, not checkpointed

    @property
    def unwrapped(self) -> nn.Module:
        model = getattr(self.model, "_orig_mod", self.model)  # torch.compile
        return getattr(model, "module", model)  # DDP

    def checkpoint(self) -> Checkpoint:
        return Checkpoint(
            config=self.cfg.to_dict(), model_name=self.cfg.model, model_args=model_args_for(self.cfg, self.data),
            classes=self.data.classes, mean=list(self.data.mean), std=list(self.data.std),
            image_size=list(self.data.image_size), model=self.unwrapped.state_dict(),
            state=asdict(self.state), ema=self.ema.module.state_dict() if self.ema else None,
            optimizer=self.opt.state_dict(), scaler=self.scaler.state_dict() if self.scaler else None,
            schedule={"name": self.cfg.schedule, "step": self.state.step, "total_steps": self.total_steps},
            rng=rng_state(), env=self.env)

    def restore(self, ckpt: Checkpoint) -> None:
        self.unwrapped.load_state_dict(ckpt.model)
        self.opt.load_state_dict(ckpt.optimizer)
        if self.scaler is not None and ckpt.scaler:
            self.scaler.load_state_dict(ckpt.scaler)
        if self.ema is not None:  # the config, and so the EMA, is the checkpoint's own
            self.ema.module.load_state_dict(ckpt.ema)
        self.state = RunState(**ckpt.state)
        set_rng_state(ckpt.rng)

    def save(self, name: str) -> Path | None:
        """Checkpoints into the run directory (rank 0 only; None elsewhere)."""
        return self.checkpoint().write(self.out / name) if self.dist.main else None


def setup(cfg: TrainConfig | None, out: Path, resume: bool, splits: Splits | None, dist: Dist) -> Run:
    ckpt = Checkpoint.read(RunDir(out).last) if resume else None
    if ckpt is not None:
        cfg = TrainConfig.from_dict(ckpt.config)
    model_info(cfg.model)  # an unknown model name fails here, before any data is read
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, dist)
    if device.type == "cpu":
        tune_allocator()  # every step frees and reallocates its activations: keep them in the process
    torch.manual_seed(cfg.seed)
    # a resumed run reads its data as it began (loader=auto decided then)
    splits = splits or load_data(cfg, with_test=cfg.test, loader=ckpt.loader if ckpt else None, device=device)
    model = build_model(cfg.model, model_args_for(cfg, splits), splits.image_size)
    init_note = init_weights(model, cfg.init) if cfg.init and ckpt is None else None
    model = place(model, cfg, device)
    ema = EMA(model, cfg.ema_decay) if cfg.ema_decay else None
    amp, scaler = precision(cfg, device)
    steps_per_epoch = len(make_loader(splits.train, cfg, True, device))
    if steps_per_epoch < 1:
        raise ReslabError(f"batch_size {cfg.batch_size} exceeds the {len(splits.train)} training images")
    total = cfg.iters or cfg.epochs * steps_per_epoch
    env = environment(device) | {"amp": str(amp), "world_size": dist.world, "steps_per_epoch": steps_per_epoch,
                                 "loader": splits.loader}
    log = MetricsLog(RunDir(out).metrics, enabled=dist.main)
    run = Run(cfg, splits, model, build_optimizer(model, cfg), scaler, ema, RunState(), total, env, device, amp,
              out, dist, log)
    if ckpt is not None:
        run.restore(ckpt)
    steps_left = total - run.state.step
    run.model = wrap(model, cfg, steps_left, dist, device)
    if cfg.teacher:
        run.teacher = load_teacher(cfg, splits, device, compile_wanted(cfg, steps_left))
        env["teacher"] = {"model": cfg.teacher, "arch": type(getattr(run.teacher, "_orig_mod", run.teacher)).__name__}
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        RunDir(out).write_config({**cfg.to_dict(), "env": env})
        log.trackers = make_trackers(cfg.log, out, {**cfg.to_dict(), "env": env}, cfg.mlflow_uri)
        if ckpt is not None:
            log.write("event", step=run.state.step, message="resumed")
        if init_note:
            log.write("event", step=0, message=init_note)
    return run


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
        fit_weights(model, state)
    except ReslabError as e:
        raise ReslabError(f"init {path}: {e}") from None
    return note


def load_teacher(cfg: TrainConfig, splits: Splits, device: torch.device, compiled: bool) -> nn.Module:
    """The frozen eval-mode model of cfg.teacher (a run directory or checkpoint), checked against the data."""
    try:
        trained = load_ready(cfg.teacher, device)
    except ReslabError as e:
        raise ReslabError(f"teacher: {e}") from None
    t = trained.record
    if t.classes != splits.classes:
        raise ReslabError(f"teacher {cfg.teacher} was trained on other classes ({len(t.classes)}: "
                          f"{', '.join(t.classes[:5])}...); distill from a run on the same data")
    if (t.mean, t.std, t.image_size) != (tuple(splits.mean), tuple(splits.std), tuple(splits.image_size)):
        raise ReslabError(f"teacher {cfg.teacher} expects other inputs (size {t.image_size}, mean {t.mean}, "
                          f"std {t.std}) than this run; distill from a run on the same data and resize")
    model = place(trained.model.requires_grad_(False), cfg, device)
    return torch.compile(model) if compiled else model


# --- the parts of a training step, as `reslab train` and `reslab bench train` take it --------
def place(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """`model` on `device`, in the recipe's memory format."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if cfg.channels_last else model


def precision(cfg: TrainConfig, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """The recipe's autocast dtype on `device`, and the loss scaler float16 needs."""
    amp = amp_dtype(cfg, device)
    return amp, torch.amp.GradScaler(device.type) if amp == torch.float16 else None


def wrap(model: nn.Module, cfg: TrainConfig, steps_left: int, dist: Dist, device: torch.device) -> nn.Module:
    """The module a step calls: DDP across ranks, compiled when `compile_wanted` (on a CPU with
    reslab's compiled BatchNorm2d)."""
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
