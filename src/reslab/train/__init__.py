"""Training: config and presets, LR schedules, the loop, checkpoints, run outputs.

>>> from reslab.train import preset, train
>>> run = train(preset("fast-cifar", model="resnet20", epochs=1), "runs/try")
"""

from .checkpoint import export_safetensors, load_checkpoint, save_checkpoint
from .config import PRESETS, TrainConfig, preset
from .logging import find_runs, format_runs, plot_confusion, plot_runs, read_metrics, run_summary
from .loop import (
    EvalResult,
    NonFiniteLoss,
    RunState,
    TrainingInterrupted,
    TrainResult,
    evaluate,
    train,
)
from .schedule import lr_at, lr_curve

__all__ = [
    "EvalResult", "NonFiniteLoss", "PRESETS", "RunState", "TrainConfig", "TrainResult",
    "TrainingInterrupted", "evaluate", "export_safetensors", "find_runs", "format_runs", "load_checkpoint",
    "lr_at", "lr_curve", "plot_confusion", "plot_runs", "preset", "read_metrics", "run_summary",
    "save_checkpoint", "train",
]
