"""`reslab experiment`: every net trained with one recipe, results table, plot, resume."""

import json

import pytest

from reslab.errors import ReslabError
from reslab.experiments import EXPERIMENTS, base_config, digits_recipe, run_experiment


def test_experiment_definitions_follow_the_paper():
    assert [n.label for n in EXPERIMENTS["degradation"]()] == [
        "plain-20", "plain-32", "plain-44", "plain-56", "resnet-20", "resnet-32", "resnet-44", "resnet-56"]
    assert [dict(n.args)["depth"] for n in EXPERIMENTS["depth"]()] == [20, 32, 44, 56, 110]
    options = [dict(n.args).get("shortcut") for n in EXPERIMENTS["shortcuts"]()]
    assert options == ["A", "B", "C", None]


def test_depth_experiment_on_digits(tmp_path):
    rows = run_experiment("depth", tmp_path, digits_recipe(epochs=1), depths=(8,), progress=False)
    (row,) = rows
    assert row.label == "resnet-8" and row.params == 75_002  # 1 input channel
    assert 0 <= row.train_err < 90 and 0 <= row.test_err < 90  # one epoch beats chance (90% error)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved[0]["test_err"] == pytest.approx(row.test_err)
    assert "| resnet-8 |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "depth.png").stat().st_size > 10_000
    # A finished net is not trained again: the second call reads its row back.
    again = run_experiment("depth", tmp_path, digits_recipe(epochs=1), depths=(8,), progress=False)
    assert again == rows


def test_bad_experiment_input():
    with pytest.raises(ReslabError, match="unknown experiment"):
        run_experiment("resolution", "/tmp/none")
    with pytest.raises(ReslabError, match="--preset"):
        base_config("cifar10")
    assert base_config("cifar10", "paper-cifar").iters == 64000
