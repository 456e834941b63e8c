"""Run outputs: metrics.jsonl, progress display, and the paper-style plots.

metrics.jsonl has one JSON object per line with a "kind":
- "step":  step, epoch, loss, acc, lr, img_s   (every `log_every` steps; train batch figures)
- "epoch": step, epoch, train_loss, train_acc, val_loss, val_acc, val_top5, img_s, seconds
           (test_loss/test_acc/test_top5 instead of val_* for runs without a validation split)
- "test":  step, loss, acc, top5 (once, on the chosen checkpoint)
- "event": step, message (resume, interrupt, non-finite loss)
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import ReslabError
from ..launch import JobRecord
from ..outputs import save_figure
from ..rundir import RunDir


class MetricsLog:
    """Appends JSON lines to `path`, and hands each record to the run's trackers (TensorBoard,
    MLflow: reslab.train.tracking); a no-op when `enabled` is False (ranks > 0)."""

    def __init__(self, path: Path, enabled: bool = True, trackers: Sequence[Any] = ()) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.trackers = list(trackers)
        self._checked_end = False

    def finish(self, weights: Path | None = None) -> None:
        """Closes the trackers (MLflow keeps `weights` as an artifact); later calls do nothing."""
        trackers, self.trackers = self.trackers, []
        for t in trackers:
            t.finish(weights)

    def write(self, kind: str, **values: Any) -> None:
        if not self.enabled:
            return
        for t in self.trackers:
            t.write(kind, values)
        line = json.dumps({"kind": kind, **values, "time": round(time.time(), 3)}) + "\n"
        if not self._checked_end:  # a run killed mid-line (power loss) left a partial line: start a new one
            self._checked_end = True
            if self.path.exists() and self.path.stat().st_size:
                with open(self.path, "rb") as f:
                    f.seek(-1, 2)
                    if f.read(1) != b"\n":
                        line = "\n" + line
        with open(self.path, "a") as f:
            f.write(line)
            f.flush()


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run's metrics.jsonl; a resumed run's replayed steps keep the last record."""
    path = RunDir(run_dir).metrics
    if not path.exists():
        raise ReslabError(f"no {path.name} in {run_dir}: not a reslab run directory")
    records, bad = [], []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # a line cut short when the run was killed
                record = None
            if isinstance(record, dict) and isinstance(record.get("kind"), str):
                records.append(record)
            else:  # cut short, or not a record reslab wrote
                bad.append(number)
    if bad:
        warnings.warn(f"{path}: skipped {len(bad)} unreadable line(s) ({', '.join(map(str, bad[:5]))})",
                      stacklevel=2)
    return records


class Progress:
    """A tqdm bar on a terminal; plain periodic lines otherwise (logs, CI, pipes)."""

    def __init__(self, total: int, initial: int = 0, desc: str = "train", enabled: bool = True,
                 every: int = 50, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.every = every
        self.total = total
        self.n = initial
        self.desc = desc
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, desc=desc, file=self.stream, dynamic_ncols=True)

    def update(self, n: int, **postfix: Any) -> None:
        self.n += n
        if not self.enabled:
            return
        text = "  ".join(f"{k} {_fmt(v)}" for k, v in postfix.items())
        if self.bar is not None:
            self.bar.update(n)
            if postfix:
                self.bar.set_postfix_str(text, refresh=False)
        elif self.n % self.every == 0 or self.n == self.total:
            print(f"{self.desc} {self.n}/{self.total}  {text}", file=self.stream, flush=True)

    def write(self, line: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


# --- plots ---------------------------------------------------------------------
def curve_series(records: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Per-step series; later records of the same step (after a resume) replace earlier ones."""
    out: dict[str, dict[int, float]] = {"train_loss": {}, "train_err": {}, "val_loss": {}, "val_err": {}}
    for r in records:
        if r["kind"] == "step":
            out["train_loss"][r["step"]] = r["loss"]
            out["train_err"][r["step"]] = 100.0 * (1.0 - r["acc"])
        elif r["kind"] == "epoch":
            # runs without a validation split monitor the test split instead
            split = "val" if r.get("val_acc") is not None else "test"
            if r.get(f"{split}_acc") is not None:
                out["val_loss"][r["step"]] = r[f"{split}_loss"]
                out["val_err"][r["step"]] = 100.0 * (1.0 - r[f"{split}_acc"])
    return {k: sorted(v.items()) for k, v in out.items()}


def plot_runs(run_dirs: Sequence[str | Path], out: str | Path, labels: Sequence[str] | None = None,
              title: str | None = None, smooth: int = 5) -> Path:
    """Error and loss vs iterations for one or more runs, as the paper's Figure 6.

    Training error thin (dashed), validation error bold (test error for runs
    without a validation split), one colour per run.
    Writes a PNG with two panels (error %, loss) and returns its path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(labels) if labels else [Path(d).name for d in run_dirs]
    fig, (ax_err, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (run, label) in enumerate(zip(run_dirs, labels, strict=True)):
        c = curve_series(read_metrics(run))
        draw_curves(ax_err, c, "err", colors[i % len(colors)], label, smooth)
        draw_curves(ax_loss, c, "loss", colors[i % len(colors)], label, smooth)
    ax_err.set(xlabel="iterations", ylabel="error (%)", title="error: train dashed, validation bold")
    ax_loss.set(xlabel="iterations", ylabel="loss", title="loss", yscale="log")
    for ax in (ax_err, ax_loss):
        ax.grid(alpha=0.3)
    if ax_err.get_legend_handles_labels()[0]:
        ax_err.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out)


def draw_curves(ax: Any, c: dict[str, list[tuple[int, float]]], kind: str, color: str, label: str,
                smooth: int = 5) -> list[float]:
    """One run's curves of `kind` ("err" or "loss") on `ax`: training thin, dashed and smoothed,
    held-out bold; returns the held-out values."""
    train, held = c[f"train_{kind}"], c[f"val_{kind}"]
    if train:
        xs, ys = zip(*train, strict=True)
        ax.plot(xs, _smooth(ys, smooth), color=color, lw=0.8, ls="--", alpha=0.8,
                label=None if held else label)  # a run without validation: name its train curve
    if held:
        xs, ys = zip(*held, strict=True)
        ax.plot(xs, ys, color=color, lw=2.2, label=label)
    return [y for _, y in held]


def _smooth(ys: Sequence[float], k: int) -> list[float]:
    """Trailing moving average over k points: step losses of single batches are noisy."""
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= k:
            acc -= ys[i - k]
        out.append(acc / min(i + 1, k))
    return out


def plot_confusion(matrix: Any, classes: Sequence[str], out: str | Path, title: str = "confusion matrix") -> Path:
    """matrix: (K, K) counts, rows = true class, columns = predicted class."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    m = np.asarray(matrix, dtype=np.float64)
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.55 * k, 0.8 + 0.5 * k))
    rows = m / np.maximum(m.sum(1, keepdims=True), 1)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if rows[i, j] > 0.5 else "black")
        ax.set_xticks(range(k), classes, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    return save_figure(fig, out)


# --- many runs at a glance ----------------------------------------------------------
RUN_COLUMNS = ("run", "model", "data", "seed", "status", "steps", "best_val_acc", "test_acc", "img_s", "minutes")


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """Run directories (holding config.json, or job.json for a run still queued on a cluster):
    each path itself, or the runs directly inside it."""
    runs: list[Path] = []
    for p in map(Path, paths):
        if RunDir(p).is_listed():
            runs.append(p)
            continue
        inside = sorted(d for d in p.iterdir() if RunDir(d).is_listed()) if p.is_dir() else []
        if not inside:
            raise ReslabError(f"no reslab runs in {p} (a run directory holds config.json)")
        runs += inside
    return runs


def run_summary(run_dir: str | Path) -> dict[str, Any]:
    """One run's outcome from its files: finished runs from summary.json, others from metrics.jsonl.

    status is "done", or "stopped" for a run that was interrupted or is still going (resume it
    with `reslab train --resume DIR`); `reslab.launch.with_job_states` tells the state of a run a
    cluster trains (job, log: its job's id and log, None for runs trained here). Accuracies are
    fractions; None where the run has none.
    """
    run = RunDir(run_dir)
    cfg = run.config() or {}
    summary = run.summary()  # None for one this version does not write: the run is resumed and finished again
    env = cfg.get("env", {})
    job = JobRecord.read(run_dir)
    total = cfg.get("iters") or (cfg.get("epochs") or 0) * env.get("steps_per_epoch", 0) or None
    records = read_metrics(run_dir) if run.has_log() else []
    epochs = {r["step"]: r for r in records if r["kind"] == "epoch"}.values()  # a resumed epoch counts once
    steps = max((r["step"] for r in records if "step" in r), default=0)
    vals = [r["val_acc"] for r in epochs if r.get("val_acc") is not None]
    seconds = summary.train_seconds if summary else sum(r.get("seconds", 0.0) for r in epochs)
    rates = [r["img_s"] for r in epochs if r.get("img_s")]
    return {
        "run": str(run_dir), "model": cfg.get("model"), "data": cfg.get("data"), "seed": cfg.get("seed"),
        "status": "done" if summary else "stopped", "steps": summary.steps if summary else steps,
        "total_steps": total, "best_val_acc": max(vals, default=None),
        "test_acc": summary.test_acc if summary else None,
        "img_s": summary.train_img_s if summary else (sum(rates) / len(rates) if rates else None),
        "minutes": round(seconds / 60, 1) if seconds else None,
        "job": job.id if job else None, "log": job.log if job else None,
    }


def format_runs(rows: Sequence[dict[str, Any]]) -> str:
    """An aligned text table of run_summary() rows, accuracies in %; then each failed job's log."""
    def cell(row: dict[str, Any], key: str) -> str:
        v = row[key]
        if key == "steps":
            return f"{v}/{row['total_steps']}" if row["total_steps"] else str(v)
        if v is None:
            return "-"
        if key.endswith("_acc"):
            return f"{100 * v:.2f}"
        if key == "img_s":
            return f"{v:.0f}"
        return str(v)

    table = [list(RUN_COLUMNS)] + [[cell(r, k) for k in RUN_COLUMNS] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(RUN_COLUMNS))]
    numeric = {"seed", "steps", "best_val_acc", "test_acc", "img_s", "minutes"}
    lines = ["  ".join(c.rjust(w) if k in numeric else c.ljust(w) for c, w, k in zip(line, widths, RUN_COLUMNS,
                                                                                       strict=True)).rstrip()
             for line in table]
    failed = [f"{r['run']}: job {r['job']} failed; its log: {r['log']}" for r in rows if r["status"] == "failed"]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths), *lines[1:], *failed])
