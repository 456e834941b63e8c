"""The `reslab` command: thin argparse subcommands over typed library functions.

Each subcommand has an `_add_<name>(sub)` that declares its arguments and
sets `func`, a function of the parsed namespace that calls the library.
Errors a user can fix (ReslabError, a missing file) are printed as one line
and exit with status 2. The library is imported inside those functions, so that
`reslab --help` and `reslab --version` load no torch.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from .errors import ReslabError
from .runtime import tune_allocator

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2, as for our own errors
        self.exit(EXIT_USAGE, f"reslab: error: {message} (see {self.prog} --help)\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.ArgumentDefaultsHelpFormatter(prog, max_help_position=32)


# --- models -----------------------------------------------------------------
def _add_models(sub) -> None:
    p = sub.add_parser("models", help="list the registered models", formatter_class=_formatter)
    p.add_argument("pattern", nargs="?", default=None, help="glob or substring, e.g. 'resnet*' or 'preact'")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_models)


def _run_models(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    from .models import list_models, model_info

    names = list_models(args.pattern)
    if not names:
        raise ReslabError(f"no model matches {args.pattern!r}; run `reslab models` for all names")
    infos = [model_info(n) for n in names]
    if args.json:
        print(json.dumps([asdict(i) for i in infos], indent=2))
        return
    w = max(len(n) for n in names)
    print(f"{'name':<{w}}  {'params':>12}  {'GMACs':>7}  {'input':<11}  reference")
    for i in infos:
        size = "x".join(str(s) for s in i.input_size)
        print(f"{i.name:<{w}}  {i.params:>12,}  {i.macs / 1e9:>7.3f}  {size:<11}  {i.reference}")


# --- summary ----------------------------------------------------------------
def _add_summary(sub) -> None:
    p = sub.add_parser("summary", help="per-layer table: output shapes, parameters, MACs",
                       formatter_class=_formatter)
    p.add_argument("name", help="a registered model name (see `reslab models`)")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="input size; the model's default when omitted")
    p.add_argument("--batch", type=_positive_int, default=1, help="batch size N")
    p.add_argument("--depth", type=_positive_int, default=2, help="deepest module level shown")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_run_summary)


def _run_summary(args: argparse.Namespace) -> None:
    from .summary import summary

    s = summary(args.name, tuple(args.input_size) if args.input_size else None, args.batch, args.depth)
    print(s.to_json() if args.json else s)


# --- data, training, evaluation (train/, data/): train, eval, predict, plot, demo, experiment
def _config_fields_help() -> str:
    from dataclasses import MISSING, fields

    from .train import TrainConfig

    lines = ["config fields (--set key=value; values parse as JSON, e.g. milestones=[0.5,0.75]):"]
    for f in fields(TrainConfig):
        default = f.default_factory() if f.default is MISSING else f.default
        lines.append(f"  {f.name} = {default!r}")
    return "\n".join(lines)


def _add_train(sub) -> None:
    from .train import PRESETS

    p = sub.add_parser("train", help="train a model (a preset recipe, overridable)",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_config_fields_help(),
                       description="Train into a run directory: config.json, metrics.jsonl, last/best "
                                   "checkpoints, model.safetensors, curves.png.")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a published recipe (default: the TrainConfig defaults, i.e. paper-cifar numbers)")
    p.add_argument("--model", default=None, help="a registered model name (see `reslab models`)")
    p.add_argument("--data", default=None,
                   help="digits, cifar10, cifar100, mnist, fashion_mnist, imagefolder:PATH or shards:DIR "
                        "(tar shards of `reslab shard`)")
    p.add_argument("--data-dir", default=None, help="data cache/download directory")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=_positive_int, default=None, help="run length in epochs")
    length.add_argument("--iters", type=_positive_int, default=None, help="run length in optimizer steps")
    p.add_argument("--out", default=None, help="run directory (default runs/<model>-<data>-<time>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config field (repeatable); fields listed below")
    p.add_argument("--resume", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR exactly where its last checkpoint stopped")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    g = _add_launcher(p, "the run as one Slurm job of --slurm-nodes x --slurm-tasks-per-node processes (ranks), "
                         "returning once it is queued")
    g.add_argument("--slurm-nodes", type=_positive_int, default=1, metavar="N", help="nodes of the job")
    g.add_argument("--slurm-gpus-per-node", type=_non_negative_int, default=0, metavar="N", help="GPUs on each node")
    g.add_argument("--slurm-tasks-per-node", type=_positive_int, default=None, metavar="N",
                   help="processes (ranks) on each node (None: one per GPU, else 1)")
    g.add_argument("--slurm-cpus-per-task", type=_positive_int, default=1, metavar="N",
                   help="CPUs of each process (its threads, unless --set threads= says)")
    p.set_defaults(func=_run_train)


def train_config_from_args(args: argparse.Namespace):
    """The TrainConfig a `reslab train` command line describes (preset, then flags, then --set)."""
    from .train import TrainConfig, preset

    # giving one of epochs and iters clears the other (the config's own rule, in replace and preset)
    flags = {k: getattr(args, k) for k in ("model", "data", "data_dir", "epochs", "iters")
             if getattr(args, k) is not None}
    cfg = preset(args.preset, **flags) if args.preset else TrainConfig().replace(**flags)
    return cfg.with_overrides(args.overrides)


def _run_train(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    from .train import TrainingInterrupted, train

    if args.resume:
        if args.overrides or args.preset or args.epochs or args.iters:
            raise ReslabError("--resume continues a run with its own config; drop --preset/--set/--epochs/--iters")
        out, cfg, resume = Path(args.resume), None, True
    else:
        cfg = train_config_from_args(args)
        out = Path(args.out or f"runs/{cfg.model}-{cfg.data.replace(':', '_').replace('/', '_')}-"
                              f"{time.strftime('%Y%m%d-%H%M%S')}")
        resume = False
    if args.launcher == "slurm":
        _submit_train(args, cfg, out)
        return
    try:
        train(cfg, out, resume=resume, progress=not args.quiet)
    except TrainingInterrupted as e:
        print(f"reslab: {e}", file=sys.stderr)
        raise SystemExit(130) from None


def _submit_train(args: argparse.Namespace, cfg, out: Path) -> None:
    from .launch import Slurm, Task
    from .rundir import RunDir
    from .train import train_or_resume
    from .train.config import recipe_differences

    gpus = args.slurm_gpus_per_node
    launcher = Slurm(_slurm_options(args, nodes=args.slurm_nodes, tasks_per_node=args.slurm_tasks_per_node or gpus or 1,
                                    cpus_per_task=args.slurm_cpus_per_task, gpus_per_node=gpus),
                     logs=out.parent / "slurm-logs", name=f"reslab-train-{out.name}")
    if cfg is not None:
        RunDir(out).check_new(recipe_differences(cfg))  # here, not in the job's log
        cfg = cfg.replace(threads=launcher.per_task(cfg.threads, 1)[0])
    (job,) = launcher.submit([Task(out.name, out, train_or_resume, (cfg, str(out)))])
    print(f"{out}: Slurm job {job.id}, log {job.log}")
    print(f"follow it with: reslab runs {shlex.quote(str(out))}")


def _add_shard(sub) -> None:
    p = sub.add_parser("shard", help="write an image folder as tar shards (WebDataset layout) to train on many machines",
                       formatter_class=_formatter,
                       description="Each split of the folder (train/, val/, test/; the folder itself as train when "
                                   "it has no train/) becomes its own shards, SPLIT-000000.tar, ...: per image "
                                   "KEY.<ext> (the file's bytes) and KEY.cls (its class index), shuffled (seeded) "
                                   "so each shard mixes the classes; OUT/manifest.json lists the classes and each "
                                   "shard's count, size and SHA-256. Train from them with --data shards:OUT.")
    p.add_argument("data", metavar="imagefolder:PATH", help="the image folder to shard")
    p.add_argument("--out", required=True,
                   help="directory for the shards and manifest.json: new, empty, or holding reslab's shards only")
    p.add_argument("--shard-size", type=_positive_int, default=None,
                   help="images per shard (default 1000, about 100 MB of ImageNet JPEGs)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle that mixes the classes across shards")
    p.set_defaults(func=_run_shard)


def _run_shard(args: argparse.Namespace) -> None:
    from .data.shards import MANIFEST, SHARD_SIZE, write_shards

    write_shards(args.data, args.out, args.shard_size or SHARD_SIZE, args.seed, log=print)
    print(f"wrote {Path(args.out).expanduser() / MANIFEST}; train with --data shards:{args.out}")


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="top-1/top-5, loss, per-class accuracy, confusion matrix of a checkpoint",
                       formatter_class=_formatter)
    p.add_argument("checkpoint", help="a checkpoint file or a run directory (its best.pt, else last.pt), or a "
                                      "weights file of a known family (with --data)")
    p.add_argument("--data", default=None, help="data name (default: the data the run trained on)")
    p.add_argument("--data-dir", default=None, help="data cache/download directory")
    p.add_argument("--split", choices=("test", "val", "train"), default="test", help="which split")
    p.add_argument("--batch", type=_positive_int, default=512, help="evaluation batch size")
    p.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    p.add_argument("--confusion", default=None, metavar="PNG", help="also write the confusion matrix as PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_run_eval)


def _run_eval(args: argparse.Namespace) -> None:
    from .outputs import check_plot
    from .predict import evaluate_checkpoint
    from .train import plot_confusion

    if args.confusion:  # before the evaluation, not after it
        check_plot(args.confusion, "confusion matrix")
    r, trained = evaluate_checkpoint(args.checkpoint, args.data, args.split, args.data_dir, args.batch, args.tta)
    if args.confusion:
        plot_confusion(r.confusion, trained.record.classes, args.confusion,
                       title=f"{trained.record.name}, {args.split} split: top-1 {100 * r.top1:.2f}%")
    if args.json:
        print(json.dumps({**r.to_dict(), "classes": trained.record.classes, "split": args.split}, indent=2))
        return
    origin = f"{trained.record.name} (step {trained.step})" if trained.config else f"{trained.record.name} ({args.checkpoint})"
    print(f"{origin} on {args.data or trained.config.data} {args.split}: "
          f"n {r.n}  top-1 {100 * r.top1:.2f}%  top-5 {100 * r.top5:.2f}%  loss {r.loss:.4f}")
    w = max(len(c) for c in trained.record.classes)
    print(f"\n{'class':<{w}}  acc %   " + " ".join(f"{i:>5}" for i in range(len(trained.record.classes)))
          if len(trained.record.classes) <= 20 else f"\n{'class':<{w}}  acc %")
    for i, (c, a) in enumerate(zip(trained.record.classes, r.per_class, strict=True)):
        row = " ".join(f"{v:>5}" for v in r.confusion[i].tolist()) if len(trained.record.classes) <= 20 else ""
        print(f"{c:<{w}}  {100 * a:6.2f}  {row}")


def _add_predict(sub) -> None:
    p = sub.add_parser("predict", help="class probabilities for image files, from a checkpoint alone",
                       formatter_class=_formatter)
    p.add_argument("checkpoint", help="a checkpoint file or a run directory, a weights file of a known family "
                                      "(akamaster, chenyaofo, torchvision, timm), or an exported .xml (OpenVINO) or .onnx file")
    p.add_argument("images", nargs="+", help="image files or directories of images")
    p.add_argument("--topk", type=_positive_int, default=3, help="classes shown per image")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_run_predict)


def _run_predict(args: argparse.Namespace) -> None:
    from .predict import predict_files

    results = predict_files(args.checkpoint, args.images, topk=args.topk)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for r in results:
        print(r["file"] + "  " + "  ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"]))


def _add_explain(sub) -> None:
    p = sub.add_parser("explain", help="Grad-CAM: where in each image the model found its class",
                       formatter_class=_formatter)
    p.add_argument("checkpoint", help="a checkpoint file or a run directory")
    p.add_argument("images", nargs="+", help="image files or directories of images")
    p.add_argument("--out", default="gradcam", help="directory for the <image>-gradcam.png files")
    p.add_argument("--class", dest="target", default=None, help="explain this class instead of the top one")
    p.set_defaults(func=_run_explain)


def _run_explain(args: argparse.Namespace) -> None:
    from .explain import explain_files

    for r in explain_files(args.checkpoint, args.images, args.out, args.target):
        print(f"{r['file']}: {r['class']} ({100 * r['prob']:.1f}%) -> {r['png']}")


def _add_plot(sub) -> None:
    p = sub.add_parser("plot", help="error and loss vs iterations of one or more runs (overlaid)",
                       formatter_class=_formatter)
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--out", default="curves.png", help="PNG to write")
    p.add_argument("--labels", nargs="+", default=None, help="one legend label per run")
    p.add_argument("--title", default=None, help="figure title")
    p.set_defaults(func=_run_plot)


def _run_plot(args: argparse.Namespace) -> None:
    from .train import plot_runs

    if args.labels and len(args.labels) != len(args.runs):
        raise ReslabError(f"--labels needs one label per run: {len(args.runs)} runs, {len(args.labels)} labels")
    print(plot_runs(args.runs, args.out, args.labels, args.title))


def _add_runs(sub) -> None:
    from .train.logging import RUN_COLUMNS

    p = sub.add_parser("runs", help="a table of runs: status, steps, best validation and test accuracy, speed",
                       formatter_class=_formatter,
                       description="status: done, or stopped (interrupted, or still training here); for a run "
                                   "submitted to Slurm: queued, running, failed (its log is named) or done.")
    p.add_argument("paths", nargs="+", help="run directories, or directories holding runs")
    p.add_argument("--sort", choices=RUN_COLUMNS, default=None, help="column to sort by (accuracies: best first)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=_run_runs)


def _run_runs(args: argparse.Namespace) -> None:
    from .train import find_runs, format_runs, run_summary

    rows = [run_summary(r) for r in find_runs(args.paths)]
    if any(r["job"] for r in rows):  # trained by a cluster: ask its scheduler
        from .launch import with_job_states

        rows = with_job_states(rows)
    if key := args.sort:  # runs without the value go last
        best_first = key in ("best_val_acc", "test_acc", "img_s")
        rows = (sorted((r for r in rows if r[key] is not None), key=lambda r: r[key], reverse=best_first)
                + [r for r in rows if r[key] is None])
    print(json.dumps(rows, indent=2) if args.json else format_runs(rows))


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="plain vs residual nets on the embedded digits (offline, ~3 min)",
                       formatter_class=_formatter)
    p.add_argument("--out", default="runs/demo", help="directory for the runs and degradation/report.md")
    p.add_argument("--depths", type=_positive_int, nargs=2, default=[20, 56], metavar=("D1", "D2"),
                   help="two CIFAR-style depths (6n+2)")
    p.add_argument("--epochs", type=_positive_int, default=10, help="epochs per net")
    p.add_argument("--resize", type=_positive_int, default=16, help="side the 8x8 digits are upsampled to")
    p.add_argument("--threads", type=_positive_int, default=1,
                   help="CPU threads (more helps little for these small nets and hurts on a busy machine)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=_run_demo)


def _run_demo(args: argparse.Namespace) -> None:
    from .demo import run_demo

    run_demo(args.out, tuple(args.depths), args.epochs, args.resize, threads=args.threads,
             progress=not args.quiet)


def _add_experiment(sub) -> None:
    from .experiments import EXPERIMENTS
    from .train import PRESETS

    p = sub.add_parser("experiment", help="the paper's experiments: degradation, depth, shortcuts, preact, budget, "
                                          "responses",
                       formatter_class=_formatter,
                       description="Train every net of an experiment (seeds 0..K-1) into OUT/runs/, then write "
                                   "OUT/NAME/report.md, results.json and the figure. Finished runs are reused, "
                                   "interrupted ones resumed; `responses` reads the runs of the others.")
    p.add_argument("name", choices=list(EXPERIMENTS), help="which experiment")
    p.add_argument("--data", default="digits", help="digits (minutes on a CPU), cifar10, imagefolder:PATH, ...")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="recipe shared by every net (required unless --data digits)")
    p.add_argument("--depths", type=_positive_int, nargs="+", default=None,
                   help="CIFAR depths 6n+2 (default: the paper's)")
    p.add_argument("--epochs", type=_positive_int, default=None, help="run length in epochs")
    p.add_argument("--iters", type=_positive_int, default=None, help="run length in optimizer steps")
    p.add_argument("--budgets", type=_positive_int, nargs="+", default=None, metavar="ITERS",
                   help="budget: the run lengths to train each depth for (default 2000 4000 8000 16000); "
                        "the one equal to --iters shares the depth experiment's runs")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field for every net (repeatable)")
    p.add_argument("--seeds", type=_positive_int, default=1, help="runs per net, seeds 0..K-1")
    p.add_argument("--nets", nargs="+", default=None, metavar="NET",
                   help="train only these nets (labels or run names); the report collects every finished one")
    p.add_argument("--jobs", type=_positive_int, default=None,
                   help="runs trained at once: processes here (default 1; threads split between them, a GPU "
                        "shared), or the Slurm job array's limit (default: none)")
    p.add_argument("--collect", action="store_true", help="train nothing: report the finished runs in OUT")
    p.add_argument("--out", default=None, help="directory (default runs/experiments-DATA)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    g = _add_launcher(p, "each unfinished run as a Slurm job (a job array), returning once they are queued; "
                         "report them with --collect once they are done")
    g.add_argument("--slurm-cpus-per-run", type=_positive_int, default=1, metavar="N",
                   help="CPUs of each run's job (its threads, unless --set threads= says)")
    g.add_argument("--slurm-gpus-per-run", type=_non_negative_int, default=0, metavar="N", help="GPUs of each run's job")
    p.set_defaults(func=_run_experiment)


def _reproducing(argv: list[str]) -> list[str]:
    """The experiment's command line without what only chose which part to run or where (--collect,
    --nets, --launcher and the Slurm options)."""
    out, skip = [], None  # skipping the values of a dropped option: "one", or "many" up to the next option
    for a in argv:
        if skip == "one" or (skip == "many" and not a.startswith("--")):
            skip = None if skip == "one" else skip
            continue
        flag, inline = a.split("=", 1)[0], "=" in a
        skip = None
        if flag in ("--collect", "--quiet"):
            continue
        if flag == "--nets" or flag == "--launcher" or flag.startswith("--slurm-"):
            skip = None if inline else "many" if flag == "--nets" else "one"
            continue
        out.append(a)
    return out


def _run_experiment(args: argparse.Namespace) -> None:
    from .experiments import base_config, run_experiment, run_responses, submit_experiment

    out = args.out or f"runs/experiments-{args.data.replace(':', '_').replace('/', '_')}"
    command = "reslab " + " ".join(shlex.quote(a) for a in _reproducing(args.argv))
    if args.name == "responses":
        run_responses(out, args.depths, command=command, progress=not args.quiet)
        print((Path(out) / args.name / "report.md").read_text())
        return
    length = {k: getattr(args, k) for k in ("epochs", "iters") if getattr(args, k)}  # one clears the other
    base = base_config(args.data, args.preset, **length).with_overrides(args.overrides)
    chosen = dict(depths=args.depths, seeds=args.seeds, nets=args.nets, budgets=args.budgets)
    if args.launcher == "slurm" and not args.collect:
        from .launch import Slurm

        options = _slurm_options(args, cpus_per_task=args.slurm_cpus_per_run, gpus_per_node=args.slurm_gpus_per_run,
                                 parallel=args.jobs)
        launched = submit_experiment(args.name, out, base, launcher=Slurm(options, Path(out) / "slurm",
                                                                          f"reslab-{args.name}"), **chosen)
        if launched:
            for job in launched:
                print(f"{job.name}: Slurm job {job.id}, log {job.log}")
            print(f"follow them with: reslab runs {shlex.quote(str(Path(out) / 'runs'))}")
            print(f"report them once they are done with: {command} --collect")
            return
    run_experiment(args.name, out, base, jobs=args.jobs or 1, train_missing=not args.collect and args.launcher == "local",
                   progress=not args.quiet, command=command, **chosen)
    print((Path(out) / args.name / "report.md").read_text())


def _add_report(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page of runs and experiments",
                       formatter_class=_formatter,
                       description="One HTML file, images embedded: per run its config, curves, final metrics, "
                                   "and its chosen checkpoint evaluated again on its test split (per-class "
                                   "accuracy, confusion matrix, misclassified images with their top 3, Grad-CAM); "
                                   "per experiment directory its table beside the paper's numbers, findings, "
                                   "figures.")
    p.add_argument("paths", nargs="+", metavar="RUN_OR_EXPERIMENT",
                   help="run directories, and experiment directories (OUT/NAME of `reslab experiment`)")
    p.add_argument("--out", default="report.html", help="HTML file to write")
    p.add_argument("--limit", type=_positive_int, default=None, metavar="N",
                   help="evaluate each run on a fixed sample of at most N test images (None: all)")
    p.add_argument("--misclassified", type=_non_negative_int, default=24, metavar="N",
                   help="misclassified test images shown per run, the most confident first")
    p.add_argument("--gradcam", type=_non_negative_int, default=6, metavar="N",
                   help="test images with a Grad-CAM map per run (one per class in turn)")
    p.add_argument("--data-dir", default=None, help="data cache/download directory (None: each run's)")
    p.add_argument("--batch", type=_positive_int, default=512, help="evaluation batch size")
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> None:
    from .report import html_report

    log = lambda s: print(f"reslab: {s}", file=sys.stderr, flush=True)  # noqa: E731  progress, not results
    print(html_report(args.paths, args.out, limit=args.limit, misclassified=args.misclassified,
                      gradcam=args.gradcam, batch_size=args.batch, data_dir=args.data_dir, log=log))


# --- performance (bench.py, export.py): bench, export
def _add_bench(sub) -> None:
    p = sub.add_parser("bench", help="throughput and latency vs torchvision/timm, side by side",
                       formatter_class=_formatter)
    p.add_argument("--models", default="resnet50,resnet20", help="comma-separated registered names")
    p.add_argument("--mode", choices=("infer", "train"), default="infer",
                   help="inference, or a training step (CIFAR nets: loader included; larger nets: batches on the device)")
    p.add_argument("--batch", type=_positive_int, default=None,
                   help="batch size (default 16 for infer, 128 for train)")
    p.add_argument("--dtype", default="auto",
                   help="configurations to time: fp32,bf16,int8; auto = all three, less bf16 where it is not native")
    p.add_argument("--peers", default="auto",
                   help="other runtimes timed beside reslab (CPU): openvino,onnxruntime; auto = those installed; none")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="also time torch.compile'd configurations (compile time reported apart)")
    p.add_argument("--repeats", type=_positive_int, default=5, help="interleaved timed rounds")
    p.add_argument("--no-latency", dest="latency", action="store_false", help="skip batch-1 latency")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=_positive_int, default=None,
                   help="intra-op CPU threads (default: torch's, one per core)")
    p.add_argument("--json", metavar="OUT", default=None, help="also write the full report as JSON")
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> None:

    import torch

    from .bench import bench_inference, bench_train
    from .models import list_models

    if args.json:
        from .outputs import check_output

        check_output(args.json, (".json",), "JSON report")  # before minutes of timing, not after
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in list_models()]
    if unknown:
        raise ReslabError(f"unknown model {unknown[0]!r}; run `reslab models` for all names")
    if not models:
        raise ReslabError(f"--models names no model ({args.models!r}); e.g. --models resnet50,resnet20")
    if args.mode != "train" and not [d for d in args.dtype.split(",") if d.strip()]:
        raise ReslabError(f"--dtype names no configuration ({args.dtype!r}); e.g. --dtype fp32,bf16,int8")
    if args.device not in (None, "cpu", "cuda") or (args.device == "cuda" and not torch.cuda.is_available()):
        raise ReslabError(f"device {args.device!r} is not available here; use cpu"
                          + (" or cuda" if torch.cuda.is_available() else ""))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731  progress, not results
    if args.mode == "train":
        reports = [bench_train(m, args.batch or 128, args.compile, args.repeats, device=device, log=log)
                   for m in models]
    else:
        dtypes = [d.strip() for d in args.dtype.split(",") if d.strip()]
        if dtypes == ["auto"]:
            from .optimize import bf16_supported

            dtypes = ["fp32", "bf16", "int8"] if bf16_supported(device) else ["fp32", "int8"]
        reports = [bench_inference(models, args.batch or 16, dtypes, args.compile, args.repeats,
                                   args.latency, device, log=log, peers=_peers(args.peers))]
    for report in reports:
        print(report)
    if args.json:
        from .outputs import write_text

        write_text(args.json, "[" + ",\n".join(r.to_json() for r in reports) + "]\n", (".json",), "JSON report")


def _peers(text: str) -> list[str] | None:
    from .backends import available
    from .bench import PEER_NAMES

    if text == "auto":
        return None
    if text == "none":
        return []
    peers = [p.strip() for p in text.split(",") if p.strip()]
    for peer in peers:
        if peer not in PEER_NAMES:
            raise ReslabError(f"unknown peer {peer!r}; choose from {', '.join(PEER_NAMES)}, auto or none")
        if not available(peer):
            raise ReslabError(f"{peer} is not installed: pip install 'reslab[{'openvino' if peer == 'openvino' else 'onnx'}]'")
    return peers


def _add_export(sub) -> None:
    p = sub.add_parser("export", help="write ONNX, OpenVINO IR, torch.export/AOTInductor or safetensors files",
                       formatter_class=_formatter)
    p.add_argument("checkpoint", nargs="?", default=None,
                   help="a run directory, checkpoint, state_dict or .safetensors file")
    p.add_argument("--model", default=None, help="registered name (needed when the file does not record it)")
    p.add_argument("--format", choices=("onnx", "openvino", "pt2", "exported", "safetensors"), default="onnx",
                   help="onnx; openvino = IR (.xml + .bin); pt2 = AOTInductor package; "
                        "exported = portable torch.export program")
    p.add_argument("--out", required=True, help="output file")
    p.add_argument("--input-size", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                   help="example input size (default: the checkpoint's, else the model's)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch size instead of a dynamic axis")
    p.add_argument("--no-fold", dest="fold", action="store_false", help="keep BatchNorm unfolded")
    p.set_defaults(func=_run_export)


def _run_export(args: argparse.Namespace) -> None:
    import torch

    from .export import export_onnx, export_pt2, onnx_max_abs_diff, save_safetensors
    from .models.registry import default_input_size
    from .weights import load_any

    loaded = load_any(args.checkpoint, args.model)
    size = tuple(args.input_size) if args.input_size else loaded.record.image_size or default_input_size(loaded.record.name)
    dynamic = not args.static_batch
    if args.format == "safetensors":
        path = save_safetensors(loaded.model, args.out, loaded.metadata(size))
    elif args.format == "onnx":
        path = export_onnx(loaded.model, args.out, size, dynamic, args.fold, metadata=loaded.metadata(size))
        diff = onnx_max_abs_diff(path, loaded.model, torch.randn(3 if dynamic else 2, *size))
        print(f"onnxruntime vs torch: max abs diff {diff:.2e}")
    elif args.format == "openvino":
        from .backends import read_deployed, save_openvino

        path = save_openvino(loaded.model, args.out, loaded.metadata(size), size)
        x = torch.randn(3, *size)
        with torch.no_grad():
            diff = (read_deployed(path)[0](x) - loaded.model(x)).abs().max().item()
        print(f"openvino vs torch: max abs diff {diff:.2e} (weights in {path.with_suffix('.bin')})")
    else:
        path = export_pt2(loaded.model, args.out, size, dynamic, aoti=args.format == "pt2", fold=args.fold)
    print(f"wrote {path} ({loaded.record.name}, input {'N' if dynamic or args.format == 'openvino' else 2}x"
          f"{'x'.join(map(str, size))})")
    if loaded.random:
        print(f"note: {path} has random (untrained) weights of {loaded.record.name}; give a checkpoint or run "
              "directory to export trained ones", file=sys.stderr)


# --- where training runs (launch.py): shared by train and experiment ----------------------
def _add_launcher(p: argparse.ArgumentParser, slurm_does: str):
    """--launcher and the Slurm options both verbs take; returns the group, for the verb's own."""
    g = p.add_argument_group("where it trains")
    g.add_argument("--launcher", choices=("local", "slurm"), default="local",
                   help=f"local: on this machine; slurm: {slurm_does} (needs submitit: pip install 'reslab[slurm]')")
    g.add_argument("--slurm-partition", default=None, metavar="NAME", help="Slurm partition (None: the cluster's default)")
    g.add_argument("--slurm-time", type=_positive_int, default=60, metavar="MINUTES",
                   help="time limit of each job; a job out of time (or preempted) is requeued and resumes from "
                        "its last checkpoint")
    g.add_argument("--slurm-mem", default=None, metavar="SIZE",
                   help="memory per node in Slurm's syntax, e.g. 16G (None: the cluster's default)")
    g.add_argument("--slurm-arg", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                   help="any other sbatch option by its long name, e.g. account=lab or qos=high (repeatable)")
    return g


def _slurm_options(args: argparse.Namespace, **layout):
    from .launch import SlurmOptions

    return SlurmOptions(partition=args.slurm_partition, minutes=args.slurm_time, mem=args.slurm_mem,
                        extra=dict(args.slurm_arg), **layout)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    key = key.strip().lstrip("-")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (an sbatch option without its dashes), got {text!r}")
    return key, value


# --- shared argument types --------------------------------------------------
def _int_at_least(low: int, what: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "a whole number >= 0")


# --- entry point ------------------------------------------------------------
SUBCOMMANDS = [_add_models, _add_summary, _add_shard, _add_train, _add_eval, _add_predict, _add_explain, _add_plot, _add_runs,
               _add_demo, _add_experiment, _add_report, _add_bench, _add_export]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="reslab", description="Deep residual networks: build, train, measure, export.")
    parser.add_argument("--version", action="version", version=f"reslab {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command line, for reports that say how to reproduce them
    tune_allocator()
    from .data import DataWarning

    python_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        """reslab's own warnings (skipped images, a missing test split) as one line; others as Python shows them."""
        if issubclass(category, DataWarning):
            print(f"reslab: warning: {message}", file=file or sys.stderr)
        else:
            python_show(message, category, filename, lineno, file, line)

    warnings.showwarning = show
    try:
        args.func(args)
    except ReslabError as e:
        print(f"reslab: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except FileNotFoundError as e:
        print(f"reslab: error: no such file or directory: {e.filename or e}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as e:  # a full disk, a read-only folder, a name the file system refuses
        print(f"reslab: error: {e.filename or 'a file'}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("reslab: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = python_show
    return 0


if __name__ == "__main__":
    sys.exit(main())
