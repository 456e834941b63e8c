"""`reslab demo` at toy size: both kinds of net at two depths, the table and the figure."""

import pytest

from reslab.cli import main
from reslab.demo import run_demo, verdict
from reslab.experiments import Row


def test_demo_trains_four_nets_and_writes_table_and_figure(tmp_path, capsys):
    out = tmp_path / "demo"
    rows = run_demo(out, depths=(8, 14), epochs=1, resize=8, threads=1, progress=False)
    assert [r.label for r in rows] == ["plain-8", "plain-14", "resnet-8", "resnet-14"]
    for r in rows:
        assert 0.0 <= r.train_err <= 100.0 and 0.0 <= r.test_err <= 100.0
    # one epoch of 23 steps already beats chance (90% error) for the shallow nets
    assert min(r.test_err for r in rows if r.label.endswith("-8")) < 80.0
    assert (out / "degradation" / "degradation.png").stat().st_size > 10000
    text = (out / "degradation" / "report.md").read_text()
    assert "| plain-14 |" in text and "training error" in text
    # Run again from the CLI with the same recipe: the finished nets are reused, not retrained.
    before = (out / "runs" / "plain-8-s0" / "last.pt").stat().st_mtime_ns
    argv = ["demo", "--out", str(out), "--depths", "8", "14", "--epochs", "1", "--threads", "1", "--quiet"]
    assert main(argv + ["--resize", "8"]) == 0
    assert (out / "runs" / "plain-8-s0" / "last.pt").stat().st_mtime_ns == before
    # Another recipe into the same directory is refused: results are never overwritten.
    assert main(argv + ["--resize", "8", "--epochs", "2"]) == 2
    assert "another recipe" in capsys.readouterr().err


@pytest.mark.parametrize("plain, res, expected", [((5.0, 20.0), (4.0, 3.0), "As in the paper"),
                                                  ((5.0, 4.0), (4.0, 3.0), "does not show")])
def test_verdict_follows_the_numbers(plain, res, expected):
    rows = [Row("plain-20", "plain20", 0, plain[0], None, 0, 0), Row("resnet-20", "resnet20", 0, res[0], None, 0, 0),
            Row("plain-56", "plain20", 0, plain[1], None, 0, 0), Row("resnet-56", "resnet20", 0, res[1], None, 0, 0)]
    assert expected in verdict(rows)
