"""Running an experiment: every net x seed trained with one recipe, spread over processes or
a Slurm cluster's jobs (reslab.launch), resumable anywhere, and summarized.

    out/runs/<net>-s<seed>/     one run directory per net and seed (shared by the experiments)
    out/<experiment>/           report.md, results.json and the figure(s)

A run already in `out/runs` with the same recipe is reused when finished and
resumed when interrupted; one with another recipe is refused, never
overwritten. So `--seeds 5` after `--seeds 2` trains three more per net, and
`--nets` in several processes or machines followed by a later call collects
everything into one report.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import ReslabError, is_whole
from ..evaluate import evaluate
from ..launch import Job, Local, Slurm, Task, wait
from ..rundir import RunDir
from ..runtime import Dist, resolve_device
from ..train import TrainConfig, preset, read_metrics, train
from ..train.config import paper_warmup, recipe_differences
from ..train.record import load_trained
from ..train.splits import load_data, make_loader
from .paper import TRAINED, Net, experiment_nets
from .report import write_report
from .results import Row, read_row, run_dir, summarize, write_row


def digits_recipe(epochs: int = 12, seed: int = 0, threads: int | None = None) -> TrainConfig:
    """A short recipe for the embedded digits (1,437 train images, upsampled to 16x16).

    SGD momentum 0.9, lr 0.05 after a 2-epoch warm-up, cosine decay, batch 64.
    """
    return TrainConfig(model="resnet20", data="digits", epochs=epochs, iters=None, batch_size=64,
                       val_size=0, lr=0.05, momentum=0.9, weight_decay=1e-4, schedule="cosine",
                       warmup_iters=44, warmup_start=0.1, augment=None, resize=16, amp="none",
                       compile="off", threads=threads, seed=seed, log_every=5)


def base_config(data: str = "digits", preset_name: str | None = None, **overrides) -> TrainConfig:
    """The shared recipe: `preset_name` on `data`, or the digits recipe for digits."""
    if preset_name is None:
        if data != "digits":
            raise ReslabError(f"choose a recipe for {data!r} with --preset (e.g. paper-cifar)")
        return digits_recipe().replace(**overrides) if overrides else digits_recipe()
    return preset(preset_name, data=data, **overrides)


def net_config(base: TrainConfig, net: Net, seed: int) -> TrainConfig:
    """The recipe of one run: `base` with the net's model and arguments and the seed.

    With the paper's schedule (lr 0.1, steps), nets of 110 layers and more start at lr 0.01
    until the training error is under 80% (section 4.2), as `preset("paper-cifar")` does.
    """
    changes: dict = {"model": net.model, "model_args": {**base.model_args, **dict(net.args)}, "seed": seed,
                     **dict(net.recipe)}
    if base.warmup_lr is None:
        changes.update(paper_warmup(net.model, changes["model_args"], base.lr, base.schedule))
    return base.replace(**changes)


def check_recipe(path: Path, cfg: TrainConfig) -> None:
    """Refuses a run directory that holds a run of another recipe (speed settings may differ)."""
    RunDir(path).check_recipe(recipe_differences(cfg), json.loads(cfg.to_json()))


def run_experiment(name: str, out: str | Path, base: TrainConfig | None = None,
                   depths: Sequence[int] | None = None, seeds: int = 1, nets: Sequence[str] | None = None,
                   jobs: int = 1, train_missing: bool = True, progress: bool = True,
                   command: str | None = None, budgets: Sequence[int] | None = None,
                   launcher: Local | Slurm | None = None) -> list[Row]:
    """Trains the nets of experiment `name` (seeds 0..seeds-1 each) with recipe `base`, then
    writes out/NAME/report.md, results.json and the figure from every finished run it finds.

    nets: labels or run names to train (the others are only collected); jobs: runs at once, each
    in its own process with threads split between them; launcher: where the runs train
    (reslab.launch; default Local(jobs)), waited for here (`submit_experiment` returns at once);
    train_missing=False trains nothing and reports what is there; budgets: the budget
    experiment's run lengths (its run of the recipe's own length is shared with the other
    experiments). Returns one Row per finished run.
    """
    if not is_whole(jobs, 1):
        raise ReslabError(f"jobs must be positive, got jobs={jobs}")
    base = base or digits_recipe()
    all_nets, tasks, todo = _plan(name, out, base, depths, seeds, nets, budgets)
    if train_missing:
        launched = _submit(todo, base, out, launcher or Local(jobs, on_done=_print_row if progress else None),
                           progress)
        states = wait(launched, poll_s=5.0)
        failed = [f"{j.name} (log {j.log})" for j in launched if states[j.name] == "failed"]
        if failed:
            raise ReslabError(f"{len(failed)} of {len(launched)} runs failed: {', '.join(failed)}; the others are "
                              "kept: fix the cause and run the same command again")
    for net, seed in tasks:  # finished elsewhere (another process, machine or `reslab train`): measure once
        path = run_dir(out, net, seed)
        if RunDir(path).is_finished() and not RunDir(path).has_row():
            write_row(path, measure_run(net, seed, path))
    # A run shared with another experiment keeps that one's label in row.json: report it under this one's.
    rows = [dataclasses.replace(read_row(run_dir(out, n, s)), label=n.label)
            for n, s in tasks if RunDir(run_dir(out, n, s)).has_row()]
    if not rows:
        raise ReslabError(f"no finished run of {name} in {Path(out) / 'runs'}; train some first")
    write_report(name, out, all_nets, rows, summarize(rows), base, seeds, command)
    return rows


def submit_experiment(name: str, out: str | Path, base: TrainConfig | None = None,
                      depths: Sequence[int] | None = None, seeds: int = 1, nets: Sequence[str] | None = None,
                      budgets: Sequence[int] | None = None, launcher: Local | Slurm | None = None,
                      progress: bool = False) -> list[Job]:
    """Gives each unfinished run of the chosen nets to `launcher` (default: Local(), which trains
    them before returning; Slurm returns once they are queued); returns their jobs. Report the
    runs once they are done with run_experiment(..., train_missing=False) (`--collect`)."""
    base = base or digits_recipe()
    _, _, todo = _plan(name, out, base, depths, seeds, nets, budgets)
    return _submit(todo, base, out, launcher or Local(), progress)


def _submit(todo: list[tuple[Net, int]], base: TrainConfig, out: str | Path, launcher: Local | Slurm,
            progress: bool) -> list[Job]:
    threads, each_progress = launcher.per_task(base.threads, len(todo))
    per_run = base.replace(threads=threads) if threads != base.threads else base
    return launcher.submit([Task(run_dir(out, net, seed).name, run_dir(out, net, seed), train_net,
                                 (net, seed, per_run, out, progress and each_progress)) for net, seed in todo])


def _plan(name: str, out: str | Path, base: TrainConfig, depths: Sequence[int] | None, seeds: int,
          nets: Sequence[str] | None, budgets: Sequence[int] | None) -> tuple[list[Net], list[tuple[Net, int]],
                                                                             list[tuple[Net, int]]]:
    """The experiment's nets, its runs (net, seed), and those of the chosen nets not finished;
    refuses a run directory that holds another recipe's run."""
    if name not in TRAINED:
        raise ReslabError(f"unknown experiment {name!r} to train; experiments: {', '.join(TRAINED)} "
                          "(responses reads their runs)")
    if not is_whole(seeds, 1):
        raise ReslabError(f"seeds must be positive, got seeds={seeds}")
    all_nets = experiment_nets(name, depths, budgets=budgets, shared=base.iters)
    chosen = experiment_nets(name, depths, nets, budgets=budgets, shared=base.iters) if nets else all_nets
    tasks = [(net, seed) for net in all_nets for seed in range(seeds)]
    for net, seed in tasks:
        check_recipe(run_dir(out, net, seed), net_config(base, net, seed))
    todo = [(n, s) for n, s in tasks if n in chosen and not RunDir(run_dir(out, n, s)).has_row()]
    return all_nets, tasks, todo


def _print_row(row: Row) -> None:
    print(f"{row.run}: test error {row.test_err if row.test_err is None else round(row.test_err, 2)}%"
          f" after {row.seconds / 60:.1f} min", flush=True)


def train_net(net: Net, seed: int, base: TrainConfig, out: str | Path, progress: bool = True) -> Row:
    """Trains (or resumes) one net of an experiment and measures its row (row.json in its run dir)."""
    cfg = net_config(base, net, seed)
    path = run_dir(out, net, seed)
    if not RunDir(path).is_finished():  # finished runs are not trained again
        train(cfg, path, resume=RunDir(path).has_checkpoint(), progress=progress)
    row = measure_run(net, seed, path)
    write_row(path, row)
    return row


def measure_run(net: Net, seed: int, path: Path) -> Row:
    """A finished run's row: training error of its last weights on the whole training split (eval
    mode), best validation and test error from its summary, training time from its log."""
    summary = RunDir(path).summary()
    if summary is None:
        raise ReslabError(f"{path} holds no finished run to measure (no readable summary)")
    trained = load_trained(RunDir(path).last)
    cfg = trained.config
    device = resolve_device(cfg.device, Dist())
    trained.model.to(device)
    data = load_data(cfg, with_test=False)
    on_train = evaluate(trained.model, make_loader(data.train, cfg, False, device, 512), len(data.classes))
    val, test = summary.best_val_acc, summary.test_acc
    seconds = sum(r.get("seconds", 0.0) for r in read_metrics(path) if r.get("kind") == "epoch")
    return Row(net.label, net.model, sum(p.numel() for p in trained.model.parameters()),
               100 * (1 - on_train.top1), None if val is None else 100 * (1 - val),
               None if test is None else 100 * (1 - test), seconds, seed, path.name)
