"""Classification metrics over a whole split: top-1/top-5 accuracy, mean loss, per-class
accuracy and the confusion matrix (`evaluate`), for training runs, predict and reports alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import ReslabError
from .runtime import autocast


@dataclass
class EvalResult:
    """Classification metrics over a whole split. confusion: (K, K) int64, rows = true class."""

    n: int
    loss: float
    top1: float
    top5: float
    per_class: list[float]
    confusion: Tensor
    logits: Tensor | None = None  # (N, K) float32 on the CPU, in the loader's order, when asked for
    labels: Tensor | None = None  # (N,) int64 on the CPU: the true classes of those rows, with the logits

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "loss": self.loss, "top1": self.top1, "top5": self.top5,
                "per_class": self.per_class, "confusion": self.confusion.tolist()}


def evaluate(model: nn.Module, loader: Any, num_classes: int, amp: torch.dtype | None = None,
             flip_tta: bool = False, keep_logits: bool = False) -> EvalResult:
    """Top-1/top-5 accuracy (fractions), mean loss, per-class accuracy and confusion matrix.

    flip_tta: average the logits of each image and its horizontal mirror. keep_logits: also
    return every image's logits and true class (for per-image views: the mistakes, their top
    classes), in the order the loader yields them.
    """
    was_training = model.training
    model.eval()
    n, loss_sum, top1, top5 = 0, 0.0, 0, 0
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    kept: list[Tensor] = []
    truth: list[Tensor] = []
    with torch.no_grad():  # not a decorator: `make mutants` (mutmut) skips decorated functions
        for x, y in loader:
            with autocast(x.device, amp):
                logits = model(x)
                if flip_tta:
                    logits = logits + model(x.flip(3))
            logits = logits.float() / (2 if flip_tta else 1)
            if keep_logits:
                kept.append(logits.cpu())
                truth.append(y.cpu())
            loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
            k = min(5, num_classes)
            topk = logits.topk(k, dim=1).indices
            hit = topk == y[:, None]
            top1 += hit[:, 0].sum().item()
            top5 += hit.any(1).sum().item()
            confusion += torch.bincount((y * num_classes + topk[:, 0]).cpu(),
                                        minlength=num_classes * num_classes).view(num_classes, num_classes)
            n += len(y)
    model.train(was_training)
    if n == 0:
        raise ReslabError("nothing to evaluate: the split is empty")
    per_class = (confusion.diag().double() / confusion.sum(1).clamp(min=1)).tolist()
    return EvalResult(n, loss_sum / n, top1 / n, top5 / n, per_class, confusion,
                      torch.cat(kept) if keep_logits else None, torch.cat(truth) if keep_logits else None)
