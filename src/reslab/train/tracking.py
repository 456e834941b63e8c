"""The run's scalars, also in TensorBoard and MLflow (`--set log=tensorboard,mlflow`).

metrics.jsonl stays the record; a tracker receives every record written there (step lines:
loss, accuracy, lr, images/s; epoch lines: training and validation figures; the test line),
the config once, and the final weights (MLflow: as an artifact). Only rank 0 tracks.

- tensorboard: event files in RUN/tensorboard (`tensorboard --logdir runs/`), through
  `torch.utils.tensorboard`; the config as text.
- mlflow: a run in the tracking store `mlflow_uri` (default: a local store beside the run
  directory, `mlflow.db` and `mlartifacts/`: `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`),
  experiment "reslab", named after the run directory; the config as parameters; the final weights
  as an artifact. A resumed run continues the same MLflow run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ReslabError

TRACKERS = ("tensorboard", "mlflow")
_SCALARS = {"step": ("loss", "acc", "lr", "img_s"),
            "epoch": ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5", "test_loss", "test_acc",
                      "img_s"),
            "test": ("loss", "acc", "top5")}


def parse_trackers(value: str | None) -> tuple[str, ...]:
    """'tensorboard,mlflow' -> ('tensorboard', 'mlflow'); 'none' or None -> ()."""
    names = tuple(n.strip() for n in (value or "none").split(",") if n.strip() and n.strip() != "none")
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ReslabError(f"log must be none or a comma-separated list of {', '.join(TRACKERS)}; got {value!r}")
    return names


def _flat(config: dict[str, Any]) -> dict[str, str]:
    return {k: json.dumps(v)[:500] if not isinstance(v, str) else v[:500] for k, v in config.items() if k != "env"}


class TensorBoardTracker:
    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ReslabError("log=tensorboard needs the tensorboard package: pip install 'reslab[tensorboard]'") \
                from None
        self.writer = SummaryWriter(log_dir=str(out / "tensorboard"))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)

    def write(self, kind: str, values: dict[str, Any]) -> None:
        for key in _SCALARS.get(kind, ()):
            if isinstance(values.get(key), int | float):
                self.writer.add_scalar(f"{kind}/{key}", values[key], values.get("step", 0))

    def finish(self, weights: Path | None) -> None:
        self.writer.close()


class MLflowTracker:
    def __init__(self, out: Path, config: dict[str, Any], uri: str | None) -> None:
        try:
            import mlflow
        except ImportError:
            raise ReslabError("log=mlflow needs the mlflow package: pip install 'reslab[mlflow]'") from None
        self.mlflow = mlflow
        if uri is None:  # a local store beside the run directory: a SQLite file and a folder of artifacts
            home = out.resolve().parent
            mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
            if mlflow.get_experiment_by_name("reslab") is None:
                mlflow.create_experiment("reslab", artifact_location=(home / "mlartifacts").as_uri())
        else:
            mlflow.set_tracking_uri(uri)
        mlflow.set_experiment("reslab")
        id_file = out / "mlflow_run_id"
        run_id = id_file.read_text().strip() if id_file.is_file() else None
        self.run = mlflow.start_run(run_id=run_id, run_name=None if run_id else out.name)
        if run_id is None:
            id_file.write_text(self.run.info.run_id + "\n")
            mlflow.log_params(_flat(config))

    def write(self, kind: str, values: dict[str, Any]) -> None:
        scalars = {f"{kind}/{k}": float(values[k]) for k in _SCALARS.get(kind, ())
                   if isinstance(values.get(k), int | float)}
        if scalars:
            self.mlflow.log_metrics(scalars, step=int(values.get("step", 0)))

    def finish(self, weights: Path | None) -> None:
        if weights is not None and weights.is_file():
            self.mlflow.log_artifact(str(weights))
        self.mlflow.end_run()


def make_trackers(log: str | None, out: Path, config: dict[str, Any], mlflow_uri: str | None) -> list:
    trackers: list = []
    for name in parse_trackers(log):
        trackers.append(TensorBoardTracker(out, config) if name == "tensorboard"
                        else MLflowTracker(out, config, mlflow_uri))
    return trackers
