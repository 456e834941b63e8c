"""A run directory: the only module that knows its files, the record that marks it finished,
which checkpoint it chose, and the rules for writing into it.

    run = RunDir("runs/r20")
    run.last, run.best, run.weights        # last.pt, best.pt, model.safetensors
    run.summary()                          # the typed summary.json, None until the run finished
    run.chosen("model")                    # best.pt if the run kept one, else last.pt

What a run directory holds:

    config.json        the recipe and the machine (written when training starts)
    metrics.jsonl      one JSON record per logged step, epoch, event and test
    last.pt, prev.pt   the resume point and its predecessor (kept while last.pt is replaced)
    best.pt            the weights of the best validation epoch (runs with a validation split)
    model.safetensors  the chosen weights with their record, for deployment
    curves.png         the run's curves
    summary.json       written last, atomically: the run is finished
    job.json           the cluster job that trains it (`reslab.launch`)
    row.json           an experiment's measurement of the finished run (`reslab.experiments`)

The checkpoint's contents are `reslab.train.record`'s; its bytes `reslab.train.checkpoint`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .errors import ReslabError, is_whole

CONFIG, METRICS, SUMMARY, CURVES = "config.json", "metrics.jsonl", "summary.json", "curves.png"
LAST, PREV, BEST, WEIGHTS = "last.pt", "prev.pt", "best.pt", "model.safetensors"
JOB, ROW = "job.json", "row.json"
# What only training writes (curves.png is a plot: plots may redraw it).
TRAINING_FILES = (CONFIG, METRICS, LAST, PREV, BEST, WEIGHTS, SUMMARY)


@dataclass(frozen=True)
class Summary:
    """summary.json: how a finished run ended. Accuracies are fractions; test is the chosen
    checkpoint's EvalResult.to_dict() without the confusion matrix (None: not tested)."""

    steps: int
    best_val_acc: float | None
    chosen: str  # the checkpoint tested and exported: best.pt or last.pt
    test: dict[str, Any] | None
    train_seconds: float
    train_img_s: float

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Summary:
        """A summary from its JSON; KeyError/TypeError/ValueError for one this version does not write."""
        summary = cls(**{f.name: d[f.name] for f in dataclasses.fields(cls)})
        if not is_whole(summary.steps) or (summary.test is not None and "top1" not in summary.test):
            raise ValueError("not a run summary")
        return summary

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def test_acc(self) -> float | None:
        return None if self.test is None else self.test["top1"]


class RunDir:
    """The files of one run directory (which need not exist yet)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    config_file = property(lambda self: self.path / CONFIG)
    metrics = property(lambda self: self.path / METRICS)
    summary_file = property(lambda self: self.path / SUMMARY)
    curves = property(lambda self: self.path / CURVES)
    last = property(lambda self: self.path / LAST)
    best = property(lambda self: self.path / BEST)
    weights = property(lambda self: self.path / WEIGHTS)
    job = property(lambda self: self.path / JOB)
    row = property(lambda self: self.path / ROW)

    # --- what it holds ---------------------------------------------------------------------
    def is_run(self) -> bool:
        """Training wrote here (its config and its log)."""
        return self.config_file.is_file() and self.metrics.is_file()

    def is_listed(self) -> bool:
        """A run to list: it started training (config.json), or a cluster holds its job."""
        return self.config_file.is_file() or self.job.is_file()

    def has_checkpoint(self) -> bool:
        return self.last.is_file()

    def is_finished(self) -> bool:
        """summary.json is there (it is written last, whole or not at all)."""
        return self.summary_file.is_file()

    def has_row(self) -> bool:
        return self.row.is_file()

    def has_log(self) -> bool:
        return self.metrics.is_file()

    def summary(self) -> Summary | None:
        """The finished run's summary; None where there is none or one this version cannot read."""
        try:
            return Summary.from_dict(json.loads(self.summary_file.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write_summary(self, summary: Summary) -> Path:
        """Marks the run finished: summary.json appears whole or not at all."""
        with atomic_path(self.summary_file) as tmp:
            tmp.write_text(json.dumps(summary.to_dict(), indent=2))
        return self.summary_file

    def config(self, missing_ok: bool = True) -> dict[str, Any] | None:
        """The saved config.json (recipe and "env"); None where training never started. An
        unreadable one is refused in one line."""
        if not self.config_file.is_file() and missing_ok:
            return None
        try:
            return json.loads(self.config_file.read_text())
        except (OSError, ValueError) as e:
            raise ReslabError(f"cannot read run {self.path}: its {CONFIG} is unreadable ({e}); remove the run "
                              "directory or pass another --out") from None

    def write_config(self, config: dict[str, Any]) -> None:
        with atomic_path(self.config_file) as tmp:
            tmp.write_text(json.dumps(config, indent=2))

    # --- which checkpoint -------------------------------------------------------------------
    def chosen(self, purpose: str = "model") -> Path:
        """The file a run's directory stands for: its chosen checkpoint for purpose "model" (the
        one its summary names, else best.pt, else last.pt), its exported weights (model.safetensors, else last.pt) for
        "weights", its resume point (last.pt) for "resume"."""
        first = {"model": self.best, "weights": self.weights, "resume": self.last}[purpose]
        summary = self.summary() if purpose == "model" else None
        if summary is not None and summary.chosen in (BEST, LAST) and (self.path / summary.chosen).is_file():
            first = self.path / summary.chosen  # what the finished run tested and exported
        return first if first.is_file() else self.last

    def choose(self, validated: bool) -> Path:
        """The checkpoint a run that ends now tests and exports: best on validation where it had
        a validation split and kept a best.pt, else its last."""
        return self.best if validated and self.best.exists() else self.last

    # --- writing into it --------------------------------------------------------------------
    def check_new(self, differences: Callable[[dict[str, Any]], list[str]]) -> None:
        """A new run goes into a new or empty directory, or one where the same recipe died before
        its first checkpoint (it starts over: its log is removed); anything else is refused, never
        mixed or overwritten. differences(saved config) lists the fields in which a saved recipe
        differs from the new one. The record of the job submitted to train it does not count."""
        out = self.path
        if out.exists() and not out.is_dir():
            raise ReslabError(f"{out} is a file; --out takes a directory for the run")
        if self.has_checkpoint():
            raise ReslabError(f"{out} already holds a run; resume it with --resume {out} or pick another --out")
        files = sorted(p.name for p in out.iterdir() if not p.name.startswith(".") and p.name != JOB) \
            if out.is_dir() else []
        if not files:
            return
        if set(files) <= {CONFIG, METRICS} and CONFIG in files:
            try:
                saved = json.loads(self.config_file.read_text())
            except (OSError, ValueError):
                saved = None
            if saved is not None and not differences(saved):
                self.metrics.unlink(missing_ok=True)  # the same run, killed before its first checkpoint
                return
            raise ReslabError(f"{out} holds the start of another run (its config.json, no checkpoint yet); "
                              "remove it or pick another --out")
        raise ReslabError(f"{out} holds files that are not a reslab run ({', '.join(files[:3])}"
                          f"{', ...' if len(files) > 3 else ''}); pick another --out or an empty directory")

    def check_recipe(self, differences: Callable[[dict[str, Any]], list[str]], want: dict[str, Any]) -> None:
        """Refuses a directory that holds a run of another recipe; `want` is the new recipe as a
        dict (to name what differs)."""
        saved = self.config()
        differ = differences(saved) if saved is not None else []
        if differ:
            shown = ", ".join(f"{k} {saved.get(k)!r} there, {want[k]!r} here" for k in differ[:3])
            raise ReslabError(f"{self.path} holds a run with another recipe ({shown}); pass another --out or "
                              "remove it")

    @contextlib.contextmanager
    def exclusive(self, main: bool = True) -> Iterator[None]:
        """One process trains into the directory at a time (a lock the kernel drops when it dies);
        only the main process of a distributed run takes it."""
        if not main:
            yield
            return
        try:
            import fcntl
        except ImportError:  # not on Windows
            yield
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ReslabError(f"cannot write the run directory {self.path}: {e.strerror or e}") from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                raise ReslabError(f"another process is training into {self.path}; wait for it or pick another "
                                  "--out") from None
            yield
        finally:
            os.close(fd)


def prev_path(path: Path) -> Path:
    """Where a checkpoint's predecessor is kept while it is replaced: last.pt -> prev.pt, x.pt -> x.prev.pt."""
    return path.with_name(PREV if path.name == LAST else f"{path.stem}.prev{path.suffix}")
