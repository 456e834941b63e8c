"""Training: config and presets, LR schedules, the loop, checkpoints, run outputs.

>>> from reslab.train import preset, train
>>> run = train(preset("fast-cifar", model="resnet20", epochs=1), "runs/try")
"""

from .._lazy import exports

_WHERE = {
    "EvalResult": "..evaluate",
    "NonFiniteLoss": ".loop",
    "PRESETS": ".config",
    "RunState": ".step",
    "TrainConfig": ".config",
    "TrainResult": ".loop",
    "TrainingInterrupted": ".loop",
    "evaluate": "..evaluate",
    "export_safetensors": ".checkpoint",
    "find_runs": ".logging",
    "format_runs": ".logging",
    "load_checkpoint": ".checkpoint",
    "lr_at": ".schedule",
    "lr_curve": ".schedule",
    "plot_confusion": ".logging",
    "plot_runs": ".logging",
    "preset": ".config",
    "read_metrics": ".logging",
    "run_summary": ".logging",
    "save_checkpoint": ".checkpoint",
    "train": ".loop",
    "train_or_resume": ".loop",
}
__getattr__, __dir__ = exports(__name__, _WHERE)

__all__ = [
    "EvalResult", "NonFiniteLoss", "PRESETS", "RunState", "TrainConfig", "TrainResult",
    "TrainingInterrupted", "evaluate", "export_safetensors", "find_runs", "format_runs", "load_checkpoint",
    "lr_at", "lr_curve", "plot_confusion", "plot_runs", "preset", "read_metrics", "run_summary",
    "save_checkpoint", "train", "train_or_resume",
]
