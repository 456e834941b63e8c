"""One training step: the optimizer and its parameter groups, the EMA of the weights, the loss
(with a teacher's soft targets when distilling), forward and backward, SAM's second pass, the
update, and the step's learning rate. `train` (loop.py) takes its steps with `train_step`;
`reslab bench --mode train` times the same function.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..runtime import autocast
from .config import TrainConfig
from .schedule import lr_at


@dataclass
class RunState:
    """Where a run stands; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # current epoch (0-based)
    batch: int = 0  # batches of `epoch` already consumed
    best_acc: float = -1.0  # best validation accuracy so far (selection metric)
    best_step: int = -1
    err_avg: float = 1.0  # running training error, gates the paper's warm-up
    warmup_done: bool = False


# --- optimizer and EMA -----------------------------------------------------------
def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Weight decay on conv/linear weights; BN and biases (1-d tensors) spared if asked."""
    if cfg.decay_norm_and_bias:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               foreach=cfg.foreach)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, foreach=cfg.foreach)


class EMA:
    """Exponential moving average of the weights and the BN statistics: the weights evaluated when enabled.

    The decay warms up as min(decay, (1 + step) / (10 + step)) (TensorFlow's
    ExponentialMovingAverage with num_updates, timm's ModelEmaV3), so the
    average follows the fast early changes instead of holding the initial
    weights for thousands of steps.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        # averaged: parameters and float buffers (BN statistics); copied: integer buffers (batch counts)
        self._averaged = [*self.module.parameters(), *(b for b in self.module.buffers() if b.is_floating_point())]
        self._copied = [b for b in self.module.buffers() if not b.is_floating_point()]

    def decay_at(self, step: int) -> float:
        return min(self.decay, (1 + step) / (10 + step))

    def update(self, model: nn.Module, step: int) -> None:
        buffers = list(model.buffers())
        live = [*(p.detach() for p in model.parameters()), *(b for b in buffers if b.is_floating_point())]
        with torch.no_grad():
            torch._foreach_lerp_(self._averaged, live, 1.0 - self.decay_at(step))
            torch._foreach_copy_(self._copied, [b for b in buffers if not b.is_floating_point()])


# --- one step ---------------------------------------------------------------------
@dataclass
class SoftTargets:
    """A teacher's logits for the batch, mixed into the loss (knowledge distillation, Hinton et al. 2015)."""

    logits: Tensor
    alpha: float  # weight of the soft targets; the labels get 1 - alpha
    temperature: float


def batch_loss(logits: Tensor, y: Tensor, label_smoothing: float, soft: SoftTargets | None = None) -> Tensor:
    """Cross-entropy with the labels; when distilling, mixed with T^2 * KL(teacher || student) at temperature T.

    The T^2 keeps the soft targets' gradients at the scale of the hard ones (Hinton et al., section 2).
    """
    loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
    if soft is None:
        return loss
    t = soft.temperature
    kd = F.kl_div(F.log_softmax(logits / t, dim=1), F.log_softmax(soft.logits / t, dim=1),
                  reduction="batchmean", log_target=True) * (t * t)
    return (1.0 - soft.alpha) * loss + soft.alpha * kd


def forward_backward(model: nn.Module, x: Tensor, y: Tensor, label_smoothing: float,
                     amp: torch.dtype | None, scaler: torch.amp.GradScaler | None,
                     soft: SoftTargets | None = None) -> tuple[Tensor, Tensor]:
    """x: (N, C, H, W) float, y: (N,) int64 -> (mean loss, number correct); gradients accumulated.

    The loss is computed in fp32 from fp32 logits even under autocast.
    """
    with autocast(x.device, amp):
        logits = model(x)
    loss = batch_loss(logits.float(), y, label_smoothing, soft)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return loss.detach(), (logits.detach().argmax(1) == y).sum()


def teacher_targets(teacher: nn.Module, x: Tensor, cfg: TrainConfig, amp: torch.dtype | None) -> SoftTargets:
    with torch.no_grad(), autocast(x.device, amp):
        logits = teacher(x)
    return SoftTargets(logits.float(), cfg.distill_alpha, cfg.distill_temperature)


def sharpness_aware_pass(model: nn.Module, x: Tensor, y: Tensor, rho: float, label_smoothing: float,
                         amp: torch.dtype | None, scaler: torch.amp.GradScaler | None,
                         soft: SoftTargets | None = None) -> None:
    """Sharpness-aware minimization (Foret et al., ICLR 2021), after a forward_backward at the weights w.

    Moves to w + rho * g / ||g|| (g: the gradient just computed, over all parameters), takes
    the gradient there, and comes back to w: `.grad` then holds the gradient SAM steps with.
    BN running statistics keep the values of the pass at w.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    stats = list(model.buffers())
    with torch.no_grad():
        kept = [t.clone() for t in (*params, *stats)]  # restored as they were, to the bit
        grads = [p.grad for p in params]
        norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        torch._foreach_add_(params, torch._foreach_mul(grads, rho / (norm + 1e-12)))
    for p in params:
        p.grad = None
    forward_backward(model, x, y, label_smoothing, amp, scaler, soft)
    with torch.no_grad():
        torch._foreach_copy_([*params, *stats], kept)


def optimizer_step(opt: torch.optim.Optimizer, model: nn.Module, cfg: TrainConfig,
                   scaler: torch.amp.GradScaler | None) -> None:
    if scaler is not None:
        scaler.unscale_(opt)
    if cfg.grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=cfg.foreach)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, y: Tensor, cfg: TrainConfig,
               amp: torch.dtype | None, scaler: torch.amp.GradScaler | None,
               soft: SoftTargets | None = None) -> tuple[float, Tensor]:
    """One optimizer step as `train` takes it (and `reslab bench --mode train` times it): forward
    and backward, SAM's second pass if asked, clipping, the update. Returns (loss, number
    correct); a non-finite loss takes no step and leaves no gradient."""
    loss, correct = forward_backward(model, x, y, cfg.label_smoothing, amp, scaler, soft)
    if not math.isfinite(loss_value := loss.item()):
        opt.zero_grad(set_to_none=True)
        return loss_value, correct
    if cfg.sam_rho is not None:
        sharpness_aware_pass(model, x, y, cfg.sam_rho, cfg.label_smoothing, amp, scaler, soft)
    optimizer_step(opt, model, cfg, scaler)
    return loss_value, correct


def step_lr(cfg: TrainConfig, state: RunState, total_steps: int) -> float:
    """The schedule's lr, or the paper's constant warm-up lr until training error drops below the gate."""
    if cfg.warmup_until_error is not None and not state.warmup_done:
        return cfg.warmup_lr
    return lr_at(cfg, state.step, total_steps)
