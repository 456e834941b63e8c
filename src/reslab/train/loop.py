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

What a run is made of (`setup`), its data (`splits`), its step (`step`) and its
record (`record`) live beside this module, its files in `reslab.rundir`; here is the
order they run in.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import ReslabError
from ..evaluate import EvalResult, evaluate
from ..rundir import BEST, LAST, RunDir, Summary
from ..runtime import dist_from_env
from .config import TrainConfig, recipe_differences
from .logging import Progress, plot_runs
from .record import Checkpoint
from .setup import Run, place, setup
from .splits import Splits, make_loader
from .step import RunState, step_lr, teacher_targets, train_step


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


def train(cfg: TrainConfig | None, out: str | Path, resume: bool = False, progress: bool = True,
          data: Splits | None = None, on_step: Callable[[int], None] | None = None) -> TrainResult:
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
    run_dir = RunDir(out)
    dist = dist_from_env()
    if resume and (done := finished_result(out)) is not None:
        if progress and dist.main:
            print(f"{out} is finished ({done.steps} steps); nothing to do")
        return done
    if resume and not run_dir.has_checkpoint():
        raise ReslabError(f"no checkpoint {run_dir.last} to resume: {out} holds no reslab run")
    if not resume and cfg is not None:
        run_dir.check_new(recipe_differences(cfg))
    with run_dir.exclusive(dist.main):
        run = setup(cfg, out, resume, data, dist)
        try:
            return _run(run, progress, on_step)
        finally:
            run.log.finish()  # trackers closed however the run ends


def train_or_resume(cfg: TrainConfig | None, out: str | Path, progress: bool = False) -> TrainResult:
    """train(cfg, out), or its resumption where out holds a checkpoint: the call a cluster's job
    makes (reslab.launch), the same again after the job is requeued."""
    return train(cfg, out, resume=RunDir(out).has_checkpoint(), progress=progress)


def finished_result(out: Path) -> TrainResult | None:
    """The outcome of a finished run in `out` (its summary.json), or None if it is not finished.

    The summary keeps no confusion matrix (K x K numbers); the result's is empty."""
    run_dir = RunDir(out)
    summary = run_dir.summary()  # None: no summary, or one this version does not write
    try:
        if summary is None or summary.steps != Checkpoint.read(run_dir.last).step:
            return None  # the run is resumed (a finished run extended and stopped again) and finished again
        t = summary.test
        test = None if t is None else EvalResult(t["n"], t["loss"], t["top1"], t["top5"], t["per_class"],
                                                 torch.zeros(0, 0, dtype=torch.int64))
    except (KeyError, TypeError):
        return None
    return TrainResult(out, summary.steps, summary.best_val_acc, test, summary.train_seconds, summary.train_img_s)


def _run(run: Run, progress: bool, on_step: Callable[[int], None] | None) -> TrainResult:
    bar = Progress(run.total_steps, run.state.step, desc=run.out.name, enabled=progress and run.dist.main,
                   every=run.cfg.log_every)
    flag = {"stop": False}
    t_start = time.perf_counter()
    images = 0
    try:
        with _sigint_to_flag(flag):
            images = _loop(run, bar, flag, on_step)
    except KeyboardInterrupt:
        flag["stop"] = True
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    if flag["stop"]:
        path = run.save(LAST)
        run.log.write("event", step=run.state.step, message="interrupted; checkpoint saved")
        raise TrainingInterrupted(f"interrupted at step {run.state.step}; checkpoint {path}; "
                                  f"resume with: reslab train --resume {run.out}")
    return _finish(run, seconds, images, progress)


@contextlib.contextmanager
def _sigint_to_flag(flag: dict[str, bool]):
    """First Ctrl-C sets flag["stop"] (the loop saves at the next step boundary); a second one kills."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    old = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _loop(run: Run, bar: Progress, flag: dict[str, bool], on_step: Callable[[int], None] | None) -> int:
    """Steps until the run's length (or a stop), an epoch at a time; returns the images seen."""
    cfg, state = run.cfg, run.state
    loader = make_loader(run.data.train, cfg, True, run.device, dist=run.dist)  # this rank's share of each batch
    run.model.train()
    images_total = 0
    while state.step < run.total_steps:
        t0, seen, loss_sum, correct_sum = time.perf_counter(), 0, 0.0, 0
        for x, y in _batches(loader, state):
            lr = step_lr(cfg, state, run.total_steps)
            for g in run.opt.param_groups:
                g["lr"] = lr
            soft = teacher_targets(run.teacher, x, cfg, run.amp) if run.teacher is not None else None
            loss_value, correct = train_step(run.model, run.opt, x, y, cfg, run.amp, run.scaler, soft)
            if not math.isfinite(loss_value):
                run.log.write("event", step=state.step, message=f"non-finite loss {loss_value}")
                raise NonFiniteLoss(f"loss became {loss_value} at step {state.step} (lr {lr:.4g}); stopped; "
                                    f"{_save_if_finite(run)}; lower lr or set grad_clip")
            if run.ema is not None:
                run.ema.update(run.unwrapped, state.step)
            acc = correct.item() / len(y)
            _advance(state, cfg, acc)
            seen += len(y) * run.dist.world
            loss_sum += loss_value * len(y)
            correct_sum += correct.item()
            if state.step % cfg.log_every == 0:
                run.log.write("step", step=state.step, epoch=state.epoch, loss=loss_value, acc=acc, lr=lr,
                              img_s=seen / (time.perf_counter() - t0))
            bar.update(1, loss=loss_value, lr=lr, epoch=state.epoch)
            if cfg.ckpt_every and state.step % cfg.ckpt_every == 0:
                run.save(LAST)
            if on_step is not None:
                on_step(state.step)
            if flag["stop"] or state.step >= run.total_steps:
                break
        images_total += seen
        if flag["stop"]:
            break
        epoch_done = state.batch >= len(loader)
        if epoch_done or state.step >= run.total_steps:
            _end_epoch(run, bar, seen, loss_sum, correct_sum, time.perf_counter() - t0,
                       final=state.step >= run.total_steps)
    return images_total


def _batches(loader: Any, state: RunState) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    loader.set_epoch(state.epoch, start_batch=state.batch)
    yield from loader


def _advance(state: RunState, cfg: TrainConfig, acc: float) -> None:
    state.step += 1
    state.batch += 1
    # ~20-step running mean of the batch error: one lucky batch does not end the warm-up
    state.err_avg = 0.95 * state.err_avg + 0.05 * (1.0 - acc)
    if cfg.warmup_until_error is not None and state.err_avg < cfg.warmup_until_error:
        state.warmup_done = True


def _save_if_finite(run: Run) -> str:
    """Checkpoints the run if its weights and statistics are all finite; where they are not
    (they diverged before the loss did) the last checkpoint on disk stays. Says which."""
    states = [run.unwrapped.state_dict(), run.ema.module.state_dict() if run.ema else {}]
    if all(torch.isfinite(v).all() for sd in states for v in sd.values() if v.is_floating_point()):
        return f"last good step saved to {run.save(LAST)}"
    last = RunDir(run.out).last
    if last.exists():
        return f"the weights had diverged: {last} keeps step {Checkpoint.read(last).step}, the last checkpoint"
    return "the weights had diverged before the first checkpoint: nothing to resume"


def _end_epoch(run: Run, bar: Progress, seen: int, loss_sum: float, correct_sum: int, seconds: float,
               final: bool) -> None:
    """Validation, best/last checkpoints and the epoch record; then moves to the next epoch."""
    cfg, state, world = run.cfg, run.state, run.dist.world
    record: dict[str, Any] = {"step": state.step, "epoch": state.epoch, "seconds": round(seconds, 2)}
    if seen:  # nothing seen: resumed exactly at the end of an epoch
        n_local = seen // world
        record.update(train_loss=loss_sum / n_local, train_acc=correct_sum / n_local, img_s=seen / seconds)
    full_epoch = state.batch >= run.env["steps_per_epoch"]
    state.epoch, state.batch = (state.epoch + 1, 0) if full_epoch else (state.epoch, state.batch)
    if run.dist.main and (final or state.epoch % cfg.eval_every == 0):
        record.update(_validate(run))
        if record.get("val_acc") is not None and record["val_acc"] > state.best_acc:
            state.best_acc, state.best_step = record["val_acc"], state.step
            run.save(BEST)
    run.log.write("epoch", **record)
    run.save(LAST)
    val = f"  val_acc {record['val_acc']:.4f}" if record.get("val_acc") is not None else ""
    if seen:
        bar.write(f"epoch {record['epoch']}  step {state.step}  loss {record['train_loss']:.4f}  "
                  f"train_acc {record['train_acc']:.4f}{val}  {record['img_s']:.0f} img/s")


def _validate(run: Run) -> dict[str, Any]:
    """Validation split figures; without one (val_size=0) the test split is monitored, never chosen on."""
    model = run.ema.module if run.ema else run.unwrapped
    split_name, ds = ("val", run.data.val) if run.data.val is not None else ("test", run.data.test)
    if ds is None:
        return {}
    r = evaluate(model, make_loader(ds, run.cfg, False, run.device, batch_size=512), len(run.data.classes),
                 run.amp)
    return {f"{split_name}_loss": r.loss, f"{split_name}_acc": r.top1, f"{split_name}_top5": r.top5}


def _finish(run: Run, seconds: float, images: int, progress: bool) -> TrainResult:
    """Chooses the weights (best on validation, else last), tests them once, exports and plots."""
    out = RunDir(run.out)
    chosen = out.choose(validated=run.data.val is not None)
    result = TrainResult(run.out, run.state.step, run.state.best_acc if run.data.val is not None else None, None,
                         seconds, images / max(seconds, 1e-9))
    if not run.dist.main:
        return result
    ckpt = Checkpoint.read(chosen)
    model = place(ckpt.build(), run.cfg, run.device)
    if run.cfg.test and run.data.test is not None:
        loader = make_loader(run.data.test, run.cfg, False, run.device, batch_size=512)
        result.test = evaluate(model, loader, len(run.data.classes), run.amp)
        run.log.write("test", step=ckpt.step, checkpoint=chosen.name, loss=result.test.loss,
                      acc=result.test.top1, top5=result.test.top5)
    ckpt.export(model.state_dict(), out.weights)
    run.log.finish(out.weights)
    plot_runs([run.out], out.curves, title=f"{run.cfg.model} on {run.cfg.data}")
    out.write_summary(Summary(
        steps=result.steps, best_val_acc=result.best_val_acc, chosen=chosen.name,
        test=None if result.test is None else {k: v for k, v in result.test.to_dict().items() if k != "confusion"},
        train_seconds=round(seconds, 1), train_img_s=round(result.images_per_s, 1)))
    if progress:
        test = f", test acc {result.test.top1:.4f}" if result.test else ""
        print(f"done: {result.steps} steps in {seconds:.0f} s ({result.images_per_s:.0f} img/s){test}; "
              f"weights {out.weights}")
    return result
