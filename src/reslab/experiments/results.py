"""What an experiment measured: one Row per finished run, one Summary per net over its seeds,
and where each run lives (out/runs/<net>-s<seed>)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..atomic import atomic_path
from ..rundir import RunDir
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
    """The row measured from the finished run in `path` (its row.json)."""
    known = {f.name for f in fields(Row)}
    return Row(**{k: v for k, v in json.loads(RunDir(path).row.read_text()).items() if k in known})


def write_row(path: Path, row: Row) -> None:
    with atomic_path(RunDir(path).row) as tmp:
        tmp.write_text(json.dumps(asdict(row)) + "\n")


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


@dataclass(frozen=True)
class Difference:
    """Test error of `a` minus that of `b` (points), over their seeds: the difference of means,
    its standard error sqrt(sa^2/na + sb^2/nb), and Welch's t-test (unequal variances)."""

    a: str
    b: str
    diff: float
    se: float
    t: float | None  # None where a net has one run: no spread to test against
    df: float | None
    p: float | None  # two-sided

    def verdict(self, level: float = 0.05) -> str:
        """In words, with `a` the shallower net: which is better, and whether beyond the seed noise."""
        if self.p is None:
            return "one run of a net: no seed noise to weigh the difference against"
        better = self.b if self.diff > 0 else self.a
        if self.p < level:
            return f"{better} is better beyond the seed noise (p = {self.p:.3f})"
        return f"within the seed noise (p = {self.p:.2f})"


def difference(a: Summary, b: Summary) -> Difference:
    """a's test error minus b's, with Welch's t-test over their seeds."""
    from scipy import stats

    diff = a.test_err - b.test_err
    var_a, var_b = a.test_std ** 2 / a.runs, b.test_std ** 2 / b.runs
    se = (var_a + var_b) ** 0.5
    if a.runs < 2 or b.runs < 2 or se == 0:
        return Difference(a.label, b.label, float(diff), float(se), None, None, None)
    t, p = stats.ttest_ind_from_stats(a.test_err, a.test_std, a.runs, b.test_err, b.test_std, b.runs,
                                      equal_var=False)
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (a.runs - 1) + var_b ** 2 / (b.runs - 1))
    return Difference(a.label, b.label, float(diff), float(se), float(t), float(df), float(p))
