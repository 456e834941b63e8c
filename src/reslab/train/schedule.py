"""Learning-rate schedules as pure functions of the iteration: lr(step) -> float.

A schedule has no state besides the step, so resuming needs only the step,
and any schedule can be plotted: `[lr_at(cfg, s, total) for s in range(total)]`.
"""

from __future__ import annotations

import math

from .config import TrainConfig


def lr_at(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate of optimizer step `step` (0-based) in a run of `total_steps`.

    A linear warm-up from `warmup_start * lr` to `lr` over `warmup_iters` steps
    comes first; then the named schedule:
    - multistep: lr * gamma^k after the k-th milestone (fractions of the run);
    - cosine: half a cosine from lr to 0 at the end;
    - onecycle: straight line from lr to 0 at the end;
    - constant: lr.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    step = min(max(step, 0), total_steps)
    warm = min(cfg.warmup_iters, total_steps - 1)
    if step < warm:
        return cfg.lr * (cfg.warmup_start + (1.0 - cfg.warmup_start) * step / warm)
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "multistep":
        passed = sum(step >= round(m * total_steps) for m in cfg.milestones)
        return cfg.lr * cfg.gamma**passed
    progress = (step - warm) / max(total_steps - warm, 1)  # 0 after warm-up, 1 at the end
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "onecycle":
        return cfg.lr * (1.0 - progress)
    raise ValueError(f"unknown schedule {cfg.schedule!r}")


def lr_curve(cfg: TrainConfig, total_steps: int) -> list[float]:
    """lr of every step of the run, e.g. to plot or to check a recipe before running it."""
    return [lr_at(cfg, s, total_steps) for s in range(total_steps)]
