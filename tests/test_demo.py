"""`reslab demo` at toy size: both kinds of net at two depths, the table and the figure."""

import pytest

from reslab.cli import main
from reslab.demo import DemoRow, format_table, run_demo


def test_demo_trains_four_nets_and_writes_table_and_figure(tmp_path):
    rows = run_demo(tmp_path / "demo", depths=(8, 14), epochs=1, resize=8, threads=1, progress=False)
    assert [r.model for r in rows] == ["plain8", "resnet8", "plain14", "resnet14"]
    for r in rows:
        assert 0.0 <= r.train_err <= 100.0 and 0.0 <= r.test_err <= 100.0
    # one epoch of 22 steps already beats chance (90% error) for the shallow nets
    assert min(r.test_err for r in rows if r.depth == 8) < 80.0
    assert (tmp_path / "demo" / "figure6.png").stat().st_size > 10000
    text = (tmp_path / "demo" / "results.md").read_text()
    assert "| plain14 | 14 | none |" in text
    assert main(["demo", "--out", str(tmp_path / "demo"), "--depths", "8", "14"]) == 2  # never overwrites


@pytest.mark.parametrize("plain, res, verdict", [((5.0, 20.0), (4.0, 3.0), "As in the paper"),
                                                 ((5.0, 4.0), (4.0, 3.0), "does not show")])
def test_table_verdict_follows_the_numbers(plain, res, verdict):
    rows = [DemoRow("plain20", 20, False, plain[0], 0, 0), DemoRow("resnet20", 20, True, res[0], 0, 0),
            DemoRow("plain56", 56, False, plain[1], 0, 0), DemoRow("resnet56", 56, True, res[1], 0, 0)]
    assert verdict in format_table(rows)
