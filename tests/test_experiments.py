"""`reslab experiment`: every net x seed trained with one recipe, shared runs, reports,
seeds, --nets/--jobs spread and collected, Figure 7's layer responses, resume."""

import json
import statistics

import pytest
import torch
from torch import nn

from reslab.cli import main
from reslab.errors import ReslabError
from reslab.experiments import (
    EXPERIMENTS,
    base_config,
    digits_recipe,
    layer_responses,
    net_config,
    run_dir,
    run_experiment,
    run_responses,
)
from reslab.models import create_model
from reslab.models.blocks import BasicBlock, PreActBasicBlock
from reslab.train import train

TINY = digits_recipe(epochs=1, threads=1)


def _layers(net) -> int:
    """Weighted layers of a net's model, counted from the modules: 3x3 convs plus the classifier."""
    m = create_model(net.model, **dict(net.args))
    return sum(isinstance(x, nn.Conv2d) and x.kernel_size == (3, 3) for x in m.modules()) + \
        sum(isinstance(x, nn.Linear) for x in m.modules())


def test_experiment_definitions_follow_the_paper():
    assert [n.label for n in EXPERIMENTS["degradation"]()] == [
        "plain-20", "plain-32", "plain-44", "plain-56", "resnet-20", "resnet-32", "resnet-44", "resnet-56"]
    assert [_layers(n) for n in EXPERIMENTS["depth"]()] == [20, 32, 44, 56, 110]
    assert [_layers(n) for n in EXPERIMENTS["degradation"]((8, 14))] == [8, 14, 8, 14]
    shortcuts = EXPERIMENTS["shortcuts"]()
    options = [create_model(n.model, **dict(n.args)).layer2[0].downsample for n in shortcuts]
    assert [type(o).__name__ for o in options] == ["ShortcutA", "Sequential", "Sequential", "NoneType"]
    assert [len(create_model(n.model, **dict(n.args)).layer1[0].downsample or ()) for n in shortcuts[1:3]] == [0, 2]
    # Runs are shared: the depth sweep and the shortcut experiment reuse Figure 6's directories.
    assert {n.run for n in EXPERIMENTS["depth"]((20, 56))} <= {n.run for n in EXPERIMENTS["degradation"]()}
    assert {shortcuts[0].run, shortcuts[3].run} == {"resnet-32", "plain-32"}


def test_paper_warmup_for_the_deepest_nets():
    base = base_config("cifar10", "paper-cifar", iters=8000, epochs=None)
    deep, shallow = EXPERIMENTS["depth"]((20, 110))[::-1]
    assert net_config(base, deep, 0).warmup_lr == 0.01 and net_config(base, deep, 0).model == "resnet110"
    assert net_config(base, shallow, 0).warmup_lr is None


def test_preact_builds_both_variants_with_equal_recipes():
    for d in (8, 164):
        orig, pre = EXPERIMENTS["preact"]((d,))
        a, b = net_config(TINY, orig, 3), net_config(TINY, pre, 3)
        assert {k: v for k, v in a.to_dict().items() if k not in ("model", "model_args")} == \
            {k: v for k, v in b.to_dict().items() if k not in ("model", "model_args")}
        if d == 8:
            ma, mb = create_model(a.model, **a.model_args), create_model(b.model, **b.model_args)
            assert type(ma.layer1[0]) is BasicBlock and type(mb.layer1[0]) is PreActBasicBlock
            assert _layers(orig) == _layers(pre) == 8
    assert [n.label for n in EXPERIMENTS["preact"]()] == ["resnet-110", "preact-resnet-110", "resnet-164",
                                                          "preact-resnet-164"]


def test_depth_experiment_on_digits(tmp_path):
    rows = run_experiment("depth", tmp_path, TINY, depths=(8,), progress=False)
    (row,) = rows
    assert row.label == "resnet-8" and row.params == 75_002 and row.run == "resnet-8-s0"  # 1 input channel
    assert 0 <= row.train_err < 90 and 0 <= row.test_err < 90  # one epoch beats chance (90% error)
    saved = json.loads((tmp_path / "depth" / "results.json").read_text())
    assert saved["runs"][0]["test_err"] == pytest.approx(row.test_err)
    report = (tmp_path / "depth" / "report.md").read_text()
    assert "| resnet-8 |" in report and "reslab experiment depth" in report
    assert (tmp_path / "depth" / "depth.png").stat().st_size > 10_000
    # A finished net is not trained again: the second call reads its row back.
    mtime = (run_dir(tmp_path, EXPERIMENTS["depth"]((8,))[0], 0) / "last.pt").stat().st_mtime_ns
    again = run_experiment("depth", tmp_path, TINY, depths=(8,), progress=False)
    assert again == rows
    assert (run_dir(tmp_path, EXPERIMENTS["depth"]((8,))[0], 0) / "last.pt").stat().st_mtime_ns == mtime
    # Another recipe in the same directory is refused, before anything is trained or written.
    with pytest.raises(ReslabError, match="another recipe"):
        run_experiment("depth", tmp_path, TINY.replace(lr=0.01), depths=(8,), progress=False)
    assert json.loads((tmp_path / "depth" / "results.json").read_text()) == saved


def test_seeds_aggregate_and_extend(tmp_path):
    one = run_experiment("depth", tmp_path, TINY, depths=(8,), seeds=1, progress=False)
    seed0 = run_dir(tmp_path, EXPERIMENTS["depth"]((8,))[0], 0) / "last.pt"
    mtime = seed0.stat().st_mtime_ns
    rows = run_experiment("depth", tmp_path, TINY, depths=(8,), seeds=3, progress=False)
    assert [r.seed for r in rows] == [0, 1, 2] and rows[0] == one[0]
    assert seed0.stat().st_mtime_ns == mtime  # seed 0 reused, two more trained
    tests = [r.test_err for r in rows]
    assert len(set(tests)) > 1  # the seeds differ
    (summary,) = json.loads((tmp_path / "depth" / "results.json").read_text())["summary"]
    assert summary["runs"] == 3
    assert summary["test_err"] == pytest.approx(sum(tests) / 3)
    assert summary["test_std"] == pytest.approx(statistics.stdev(tests))
    assert summary["test_best"] == min(tests)
    report = (tmp_path / "depth" / "report.md").read_text()
    assert f"{min(tests):.2f} ({sum(tests) / 3:.2f}+-{statistics.stdev(tests):.2f})" in report


def test_nets_then_collect_equals_one_call(tmp_path):
    whole = run_experiment("degradation", tmp_path / "one", TINY, depths=(8,), progress=False)
    part = run_experiment("degradation", tmp_path / "spread", TINY, depths=(8,), nets=["resnet-8"], progress=False)
    assert [r.label for r in part] == ["resnet-8"]  # only what is finished is reported
    assert "Not finished yet: plain-8" in (tmp_path / "spread" / "degradation" / "report.md").read_text()
    # plain-8 trained elsewhere, as another process or machine would with `reslab train`
    plain = EXPERIMENTS["degradation"]((8,))[0]
    train(net_config(TINY, plain, 0), run_dir(tmp_path / "spread", plain, 0), progress=False)
    collected = run_experiment("degradation", tmp_path / "spread", TINY, depths=(8,), train_missing=False,
                               progress=False)

    def results(rows):
        return [(r.label, r.params, r.train_err, r.val_err, r.test_err) for r in rows]

    assert results(collected) == results(whole)
    with pytest.raises(ReslabError, match="has no net 'resnet-9'"):
        run_experiment("degradation", tmp_path / "spread", TINY, depths=(8,), nets=["resnet-9"], progress=False)


def test_jobs_train_in_separate_processes_with_the_same_results(tmp_path):
    sequential = run_experiment("degradation", tmp_path / "a", TINY, depths=(8,), progress=False)
    parallel = run_experiment("degradation", tmp_path / "b", TINY, depths=(8,), jobs=2, progress=False)
    assert [(r.label, r.test_err, r.train_err) for r in parallel] == \
        [(r.label, r.test_err, r.train_err) for r in sequential]


def test_layer_responses_equal_forward_hooks():
    torch.manual_seed(0)
    model = create_model("resnet20", depth=8, shortcut="B", num_classes=10).eval()
    bn_layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for i, m in enumerate(bn_layers):  # trained-like BN: responses of different sizes
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.2, 2.0).mul_(i + 1)
            m.bias.data.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(24, 3, 16, 16)
    # expectation: the BNs that follow a 3x3 conv, named by hand (the 1x1 shortcut's BN is not one)
    bns = [model.bn1] + [b for stage in (model.layer1, model.layer2, model.layer3) for blk in stage
                         for b in (blk.bn1, blk.bn2)]
    seen = {}
    hooks = [bn.register_forward_hook(lambda m, a, o: seen.setdefault(m, []).append(o.clone())) for bn in bns]
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    expected = [torch.cat(seen[bn]).transpose(0, 1).flatten(1).std(1, unbiased=False).mean().item() for bn in bns]
    got = layer_responses(model, [(x[:10], None), (x[10:], None)])
    assert got == pytest.approx(expected, rel=1e-5)
    assert len(got) == 7 and max(got) / min(got) > 3


def test_responses_from_an_experiment_directory(tmp_path, capsys):
    run_experiment("degradation", tmp_path, TINY, depths=(8,), progress=False)
    curves = run_responses(tmp_path, depths=(8,), progress=False)
    assert set(curves) == {"plain-8", "resnet-8"} and all(len(v) == 7 for v in curves.values())
    saved = json.loads((tmp_path / "responses" / "responses.json").read_text())
    assert saved == curves  # floats round-trip through JSON exactly
    assert "weaker at" in (tmp_path / "responses" / "report.md").read_text()
    assert (tmp_path / "responses" / "responses.png").stat().st_size > 10_000
    with pytest.raises(ReslabError, match="no finished"):
        run_responses(tmp_path / "empty", depths=(8,), progress=False)


def test_experiment_cli(tmp_path, capsys):
    argv = ["experiment", "depth", "--depths", "8", "--epochs", "1", "--set", "threads=1", "--out", str(tmp_path),
            "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| resnet-8 |" in out and "--depths 8" in out  # the report, with the command that reproduces it
    assert main(["experiment", "depth", "--depths", "8", "--collect", "--out", str(tmp_path / "none")]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_bad_experiment_input():
    with pytest.raises(ReslabError, match="unknown experiment"):
        run_experiment("resolution", "/tmp/none")
    with pytest.raises(ReslabError, match="--preset"):
        base_config("cifar10")
    assert base_config("cifar10", "paper-cifar").iters == 64000


def test_shared_runs_are_reported_under_each_experiments_labels(tmp_path):
    # shortcuts reuses degradation's plain net (same run directory): its row must appear in the
    # shortcuts table as "plain-8 (no shortcut)", not be listed as unfinished
    run_experiment("degradation", tmp_path, TINY, depths=(8,), nets=["plain-8"], progress=False)
    rows = run_experiment("shortcuts", tmp_path, TINY, depths=(8,), train_missing=False, progress=False)
    assert [r.label for r in rows] == ["plain-8 (no shortcut)"]
    report = (tmp_path / "shortcuts" / "report.md").read_text()
    assert "| plain-8 (no shortcut) |" in report
    assert "Not finished yet: resnet-8 (option A), resnet-8 (option B), resnet-8 (option C)" in report


def test_a_run_kept_as_its_row_only_is_reported_not_retrained(tmp_path):
    # benchmarks/paper_cifar8k.sh restores a finished run's row from the published results.json
    # on a machine that lost the run: it must count as finished, keep its figures and the
    # machine of a run that has a training log
    run_experiment("degradation", tmp_path / "first", TINY, depths=(8,), progress=False)
    published = json.loads((tmp_path / "first" / "degradation" / "results.json").read_text())
    plain = next(r for r in published["runs"] if r["label"] == "plain-8")
    kept = tmp_path / "again" / "runs" / plain["run"]
    kept.mkdir(parents=True)
    (kept / "row.json").write_text(json.dumps(plain))
    rows = run_experiment("degradation", tmp_path / "again", TINY, depths=(8,), progress=False)
    assert sorted(kept.iterdir()) == [kept / "row.json"]  # not trained again
    assert [(r.label, r.test_err) for r in rows] == [(r["label"], r["test_err"]) for r in published["runs"]]
    again = json.loads((tmp_path / "again" / "degradation" / "results.json").read_text())
    assert again["environment"] == published["environment"] and "?" not in again["environment"]
    note = f"Not in the figure: {plain['run']} (its table row was kept, its training log was not)."
    assert note in (tmp_path / "again" / "degradation" / "report.md").read_text()
    assert published["figure"] == ["plain-8-s0", "resnet-8-s0"] and again["figure"] == ["resnet-8-s0"]
    figure = tmp_path / "again" / "degradation" / "degradation.png"
    drawn = figure.stat().st_mtime_ns
    run_experiment("degradation", tmp_path / "again", TINY, depths=(8,), progress=False)  # collected again
    assert figure.stat().st_mtime_ns == drawn  # a log is missing: the figure is kept, and says what it leaves out
    assert note in (tmp_path / "again" / "degradation" / "report.md").read_text()


def test_budget_experiment_on_digits_shares_the_depth_runs(tmp_path, capsys):
    base = TINY.replace(iters=20)
    depth = run_experiment("depth", tmp_path, base, depths=(8,), progress=False)
    shared = run_dir(tmp_path, EXPERIMENTS["depth"]((8,))[0], 0) / "last.pt"
    mtime = shared.stat().st_mtime_ns
    rows = run_experiment("budget", tmp_path, base, depths=(8, 14), budgets=(10, 20), progress=False)
    assert [(r.label, r.run) for r in rows] == [("resnet-8 @ 10it", "resnet-8-10it-s0"), ("resnet-8 @ 20it", "resnet-8-s0"),
                                               ("resnet-14 @ 10it", "resnet-14-10it-s0"),
                                               ("resnet-14 @ 20it", "resnet-14-s0")]
    assert shared.stat().st_mtime_ns == mtime and rows[1].test_err == depth[0].test_err  # reused, not retrained
    for r, iters in zip(rows, (10, 20, 10, 20)):
        saved = json.loads((tmp_path / "runs" / r.run / "config.json").read_text())
        assert (saved["iters"], saved["epochs"], saved["model"]) == (iters, None, "resnet20")
        assert r.seconds > 0
    results = json.loads((tmp_path / "budget" / "results.json").read_text())
    gaps = {g["iters"]: g for g in results["gaps"]}
    assert sorted(gaps) == [10, 20]
    assert gaps[10]["gap"] == pytest.approx(rows[0].test_err - rows[2].test_err)
    assert gaps[20]["gap"] == pytest.approx(rows[1].test_err - rows[3].test_err)
    assert gaps[10]["p"] is None  # one seed: no noise to test against
    report = (tmp_path / "budget" / "report.md").read_text()
    assert "## What depth buys at each budget" in report and "| 64,000 (paper) | 8.75 | 6.97 | +1.78 |" in report
    assert "per doubling of the budget" in report  # the trend, with two budgets
    assert (tmp_path / "budget" / "budget.png").stat().st_size > 10_000
    # the CLI: --budgets belongs to the budget experiment
    assert main(["experiment", "depth", "--budgets", "10", "--out", str(tmp_path / "x")]) == 2
    assert "--budgets is the budget experiment's" in capsys.readouterr().err


def test_differences_are_welchs_t_over_the_seeds():
    from scipy import stats

    from reslab.experiments.results import Summary, difference

    a, b = [16.34, 16.43, 16.37], [15.54, 15.90, 15.40]

    def summary(label, xs):
        std = statistics.stdev(xs) if len(xs) > 1 else 0.0
        return Summary(label, 0, len(xs), 0.0, None, statistics.fmean(xs), std, min(xs), 0.0)

    d = difference(summary("resnet-20", a), summary("resnet-56", b))
    want = stats.ttest_ind(a, b, equal_var=False)
    assert d.diff == pytest.approx(statistics.fmean(a) - statistics.fmean(b))
    assert d.se == pytest.approx((statistics.variance(a) / 3 + statistics.variance(b) / 3) ** 0.5)
    assert (d.t, d.p, d.df) == (pytest.approx(want.statistic), pytest.approx(want.pvalue), pytest.approx(want.df))
    assert d.verdict() == f"resnet-56 is better beyond the seed noise (p = {want.pvalue:.3f})"
    close = difference(summary("resnet-20", a), summary("resnet-32", [16.2, 16.5, 16.45]))
    assert close.verdict().startswith("within the seed noise")
    assert difference(summary("a", [1.0]), summary("b", [2.0])).p is None


def test_reports_name_no_path_of_the_machine_that_ran_them():
    from reslab.experiments.report import portable_command

    assert portable_command("reslab experiment depth --data imagefolder:/work/data/cifar10-jpeg --preset paper-cifar "
                            "--out /work/runs/paper-8k --seeds 3") == \
        "reslab experiment depth --data imagefolder:PATH/TO/cifar10-jpeg --preset paper-cifar --out runs/paper-8k " \
        "--seeds 3"
    assert portable_command("reslab experiment depth --data digits --out runs/x") == \
        "reslab experiment depth --data digits --out runs/x"
