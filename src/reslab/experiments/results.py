"""What an experiment measured: one Row per finished run, one Summary per net over its seeds,
and where each run lives (out/runs/<net>-s<seed>)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from .paper import Net


@dataclass(frozen=True)
class Row:
    """One trained run of an experiment. Errors in %."""

    label: str
    model: str
    params: int
    train_err: float  # eval mode, whole training split, end of training
    val_err: float | None  # best validation error over the run
    test_err: float | None  # of the checkpoint chosen on validation
    seconds: float  # training time over all the run's sessions
    seed: int = 0
    run: str = ""  # run directory name


@dataclass(frozen=True)
class Summary:
    """One net over its seeds: mean and sample std (0 for one seed), and the best run."""

    label: str
    params: int
    runs: int
    train_err: float
    val_err: float | None
    test_err: float | None
    test_std: float | None
    test_best: float | None
    seconds: float


def run_dir(out: str | Path, net: Net, seed: int) -> Path:
    return Path(out) / "runs" / f"{net.run}-s{seed}"


def read_row(path: Path) -> Row:
    known = {f.name for f in fields(Row)}
    return Row(**{k: v for k, v in json.loads((path / "row.json").read_text()).items() if k in known})


def summarize(rows: Sequence[Row]) -> list[Summary]:
    """One Summary per label, in the order the labels first appear."""
    out = []
    for label in dict.fromkeys(r.label for r in rows):
        mine = [r for r in rows if r.label == label]

        def mean(key: str, mine: list[Row] = mine) -> float | None:
            vals = [getattr(r, key) for r in mine if getattr(r, key) is not None]
            return statistics.fmean(vals) if vals else None

        tests = [r.test_err for r in mine if r.test_err is not None]
        out.append(Summary(label, mine[0].params, len(mine), mean("train_err"), mean("val_err"), mean("test_err"),
                           (statistics.stdev(tests) if len(tests) > 1 else 0.0) if tests else None,
                           min(tests) if tests else None, mean("seconds")))
    return out
