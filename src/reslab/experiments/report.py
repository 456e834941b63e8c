"""An experiment's self-contained write-up: report.md, results.json and its figure(s), in out/NAME/.

report.md says how to reproduce the experiment, the recipe and how its length compares
with the paper's 64k iterations, the seeds, the time per net, the machine, our figures
beside the paper's, and which of the paper's findings ours agree with. `read_experiment`
reads the same content back from a written directory, for other formats (reslab.report's
HTML page).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ReslabError
from ..outputs import save_figure
from ..predict import split_loader
from ..rundir import RunDir
from ..runtime import cpu_name
from ..train import TrainConfig, read_metrics
from ..train.config import SPEED_ONLY
from ..train.logging import curve_series, draw_curves
from ..train.record import load_trained
from .paper import PAPER_TABLE6, Net, experiment_nets, paper_error, paper_params
from .responses import layer_responses, plot_responses
from .results import Difference, Row, Summary, difference, run_dir

PAPER_ITERS = 64000
TITLES = {
    "degradation": "Plain against residual nets (Figure 6 of He et al. 2015)",
    "depth": "ResNets of growing depth (Table 6 of He et al. 2015)",
    "shortcuts": "Shortcut options A, B, C and none (section 4.1 of He et al. 2015, at CIFAR scale)",
    "preact": "Original against pre-activation blocks (He et al. 2016)",
    "responses": "Layer responses of plain and residual nets (Figure 7 of He et al. 2015)",
    "budget": "The budget at which depth pays (ResNets of two depths at growing run lengths)",
}
FIGURE_NOTE = ("Training error (dashed, thin) is the running error of the training batches, with augmentation "
               "and in training mode; the table's training error is measured once at the end, in eval mode, "
               "on the whole training split. Held-out error (bold) is the validation split's.")
RESPONSES_NOTE = ("The response of a 3x3 layer is its BN's output, before the ReLU and the addition; its strength "
                  "is the standard deviation of each channel over the test images and positions, averaged over "
                  "the layer's channels.")


def write_report(name: str, out: str | Path, nets: Sequence[Net], rows: Sequence[Row],
                 summaries: Sequence[Summary], base: TrainConfig, seeds: int, command: str | None) -> Path:
    folder = Path(out) / name
    folder.mkdir(parents=True, exist_ok=True)
    paths = [Path(out) / "runs" / r.run for r in rows]
    recorded = next((p for p in paths if RunDir(p).config_file.is_file()), None)
    env = _environment(recorded) if recorded else _published(folder, "environment") or _environment(paths[0])
    by_label = {s.label: s for s in summaries}
    figure = folder / f"{name}.png"
    drawn: list[str] | None = None  # the runs the figure draws, where it draws runs' logs
    if name == "budget":
        plot_budget(nets, by_label, figure, title=f"{name} on {_data_name(base)}")
    elif figure.is_file() and not all(RunDir(run_dir(out, n, 0)).has_log() for n in nets):
        drawn = _published(folder, "figure")  # drawn where more logs were: a figure of fewer would replace it
    else:
        drawn = plot_experiment(out, nets, figure, title=f"{name} on {_data_name(base)}")
    # finished runs the figure leaves out: their rows were kept (a new machine), their logs were not
    unlogged = [p.name for n in nets if n.label in by_label and (p := run_dir(out, n, 0)).name not in drawn] \
        if drawn is not None else []
    command = portable_command(command or _command(name, base, seeds, out))
    diffs = depth_differences(nets, by_label) if name == "depth" else []
    gaps = budget_gaps(nets, by_label) if name == "budget" else []
    results = {"experiment": name, "recipe": _recipe(base), "seeds": seeds, "environment": env,
               "command": command, "nets": [n.label for n in nets],
               "summary": [asdict(s) for s in summaries], "runs": [asdict(r) for r in rows],
               **({"differences": [asdict(d) for d in diffs]} if diffs else {}),
               **({"gaps": gaps} if gaps else {}), **({"figure": drawn} if drawn is not None else {})}
    (folder / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    missing = [n.label for n in nets if n.label not in by_label]
    lines = [f"# {TITLES[name]}", "",
             f"On {_data_name(base)}. Reproduce with:", "", "```bash", command,
             "```", "", "## Recipe", "", *[f"- {line}" for line in recipe_lines(base, nets)], "",
             f"Seeds: {', '.join(map(str, range(seeds)))} ({seeds} per net). Machine: {env}.", "",
             "## Results", "", *_table(name, nets, by_label), ""]
    if missing:
        lines += [f"Not finished yet: {', '.join(missing)} (the figure draws runs in progress as far as they got).",
                  ""]
    if unlogged and name != "budget":
        lines += [f"Not in the figure: {', '.join(unlogged)} (its table row was kept, its training log was not).", ""]
    if diffs:
        lines += ["## Differences between depths", "", DIFFERENCES_NOTE, "", *_differences_table(diffs), ""]
    if gaps:
        note = GAPS_NOTE.format(a=gaps[0]["shallow"], b=gaps[0]["deep"], paper=PAPER_GAP[2])
        lines += ["## What depth buys at each budget", "", note, "", *_gaps_table(gaps), ""]
    lines += ["## Against the paper", "", *[f"- {f}" for f in findings(name, nets, by_label)], "",
              f"![{name}]({figure.name})", "", BUDGET_NOTE if name == "budget" else FIGURE_NOTE, ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path


def _published(folder: Path, key: str) -> object:
    """`key` of the results.json already in `folder` (a report published from runs no longer at hand)."""
    try:
        return json.loads((folder / "results.json").read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _data_name(cfg: TrainConfig) -> str:
    if cfg.data.startswith("imagefolder:") and "cifar10" in cfg.data.lower():
        return "CIFAR-10 (JPEG copy)"  # lossy re-encoding: not comparable to the official pickles
    return cfg.data


def _recipe(cfg: TrainConfig) -> dict:
    return {k: v for k, v in json.loads(cfg.to_json()).items() if k not in SPEED_ONLY}


def recipe_lines(cfg: TrainConfig, nets: Sequence[Net]) -> list[str]:
    """The recipe in a few sentences: optimizer and schedule, run length against the paper's,
    augmentation, the validation hold-out, the warm-up of the deepest nets."""
    budgets = sorted({n.iters for n in nets if n.iters})
    if len(budgets) > 1:
        length = (f"{budgets[0]:,} to {budgets[-1]:,} iterations, each net as its label says "
                  f"({budgets[0] / PAPER_ITERS:.3g} to {budgets[-1] / PAPER_ITERS:.3g} of the paper's {PAPER_ITERS:,})")
    elif cfg.iters:
        length = f"{cfg.iters:,} iterations ({cfg.iters / PAPER_ITERS:.3g} of the paper's {PAPER_ITERS:,})"
    else:
        length = f"{cfg.epochs} epochs"
    drops = ", ".join(f"{100 * m:.0f}%" for m in cfg.milestones)
    sched = f"lr x{cfg.gamma} at {drops} of the run" if cfg.schedule == "multistep" else f"{cfg.schedule} schedule"
    val = (f"{int(cfg.val_size):,} training images held out for validation" if cfg.val_size >= 1 else
           f"{cfg.val_size:.0%} of the training images held out for validation") if cfg.val_size else \
        "no validation split"
    lines = [f"{cfg.optimizer.upper()} lr {cfg.lr}, momentum {cfg.momentum}, weight decay {cfg.weight_decay}, "
             f"batch {cfg.batch_size}, {sched}; {length}.",
             f"Augmentation: {cfg.augment or 'none'}; mixed precision: {cfg.amp}.",
             f"{val}; the checkpoint with the best validation error is tested once on the test split."]
    if cfg.lr == 0.1 and cfg.schedule == "multistep" and any(n.depth >= 110 for n in nets):
        lines.append("Nets of 110 layers and more start at lr 0.01 until the training error is under 80% "
                     "(the paper's warm-up), then go on at 0.1.")
    return lines


def _environment(path: Path) -> str:
    try:
        env = (RunDir(path).config() or {}).get("env", {})
    except ReslabError:
        env = {}
    device = env.get("device", "?")
    name = env.get("device_name", "")
    if device == "cpu" and name in ("", "x86_64", "aarch64"):
        name = cpu_name()  # runs recorded before the model name was: the machine writing this report
    return (f"{device} ({name}), torch {env.get('torch', '?')}, {env.get('threads', '?')} thread(s) per run, "
            f"mixed precision {env.get('amp', '?')}")


def _command(name: str, cfg: TrainConfig, seeds: int, out: str | Path) -> str:
    defaults = TrainConfig()
    sets = [f"--set {k}={json.dumps(v, separators=(',', ':'))}" for k, v in _recipe(cfg).items()
            if k not in ("data", "model", "model_args", "seed") and v != _recipe(defaults).get(k)]
    return " ".join([f"reslab experiment {name} --data {cfg.data}", *sets, f"--seeds {seeds} --out {out}"])


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


RESULTS_HEADER = ["net", "params", "runs", "train error %", "val error %", "test error %: best (mean +- std)",
                  "paper's test error %", "minutes per run"]


def results_table(name: str, nets: Sequence[Net], by_label: dict[str, Summary]) -> list[list[str]]:
    """One row of cells (RESULTS_HEADER) per finished net, in the experiment's order: our errors
    (%) and parameters with the paper's beside them."""
    rows = []
    for net in nets:
        s = by_label.get(net.label)
        if s is None:
            continue
        test = _pct(s.test_best) if s.runs == 1 else f"{_pct(s.test_best)} ({_pct(s.test_err)}+-{_pct(s.test_std)})"
        paper = paper_params(net) if name in ("depth", "degradation") else None
        params = f"{s.params / 1e6:.3f}M" + (f" (paper {paper / 1e6:.2f}M)" if paper else "")
        rows.append([net.label, params, str(s.runs), _pct(s.train_err), _pct(s.val_err), test,
                     paper_error(name, net) or "-", f"{s.seconds / 60:.1f}"])
    return rows


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    """Markdown lines; the first column left-aligned, the others (numbers) right-aligned."""
    line = lambda cells: "| " + " | ".join(cells) + " |"  # noqa: E731
    return [line(header), "| --- |" + " ---: |" * (len(header) - 1), *map(line, rows)]


def _table(name: str, nets: Sequence[Net], by_label: dict[str, Summary]) -> list[str]:
    return _markdown_table(RESULTS_HEADER, results_table(name, nets, by_label))


def _trend(values: list[tuple[int, float]], rising: bool) -> str:
    """How values ordered by depth move: 'rises at every step', 'rises overall', 'does not rise'."""
    word = "rises" if rising else "falls"
    ys = [v for _, v in values]
    steps = [b > a if rising else b < a for a, b in zip(ys, ys[1:])]
    shown = ", ".join(f"{d}: {v:.2f}" for d, v in values)
    if all(steps):
        return f"{word} at every step ({shown})"
    if (ys[-1] > ys[0]) == rising:
        return f"{word} from the shallowest to the deepest, not at every step ({shown})"
    return f"does not {word[:-1]} ({shown})"


def findings(name: str, nets: Sequence[Net], by_label: dict[str, Summary]) -> list[str]:
    """The paper's claims for experiment `name`, each with what our runs show."""
    def series(kind: str, key: str) -> list[tuple[int, float]]:
        return [(n.depth, getattr(by_label[n.label], key)) for n in nets
                if n.label.startswith(kind + "-") and n.label in by_label
                and getattr(by_label[n.label], key) is not None]

    out = []
    if name in ("degradation",):
        plain = series("plain", "train_err")
        if len(plain) > 1:
            out.append("Paper: the deeper plain net has the higher training error (the degradation problem). "
                       f"Ours: plain training error {_trend(plain, True)}.")
    if name in ("degradation", "depth"):
        res_test, res_train = series("resnet", "test_err"), series("resnet", "train_err")
        if len(res_test) > 1:
            out.append(f"Paper: deeper ResNets reach lower training and test error. Ours: ResNet test error "
                       f"{_trend(res_test, False)}; training error {_trend(res_train, False)}.")
    if name == "degradation":
        both = [(d, p, r) for (d, p) in series("plain", "test_err") for (e, r) in series("resnet", "test_err")
                if d == e]
        if both:
            wins = [d for d, p, r in both if r < p]
            out.append(f"Paper: the ResNet beats the plain net of the same depth, by more the deeper it is. "
                       f"Ours: the ResNet wins at {len(wins)} of {len(both)} depths; test error plain -> ResNet: "
                       + ", ".join(f"{d}: {p:.2f} -> {r:.2f}" for d, p, r in both) + ".")
    if name == "depth":
        for d in depth_differences(nets, by_label):
            if d.p is not None:
                out.append(f"Paper: {d.b} beats {d.a}. Ours: {d.a} minus {d.b} = {d.diff:+.2f} +- {d.se:.2f} points; "
                           f"{d.verdict()}.")
    if name == "budget":
        gaps = budget_gaps(nets, by_label)
        if gaps:
            a, b = gaps[0]["shallow"], gaps[0]["deep"]
            pays = [g for g in gaps if g["gap"] > 0 and (g["p"] is None or g["p"] < 0.05)]
            when = (f"first at {pays[0]['iters']:,} iterations" if pays else "at none of the budgets run")
            out.append(f"Paper: at 64,000 iterations ResNet-{b} beats ResNet-{a} by {PAPER_GAP[2]} points. Ours: "
                       f"depth pays ({b} better{' beyond the seed noise' if any(g['p'] for g in pays) else ''}) "
                       f"{when}" + (f"; {gap_trend(gaps)}." if len(gaps) > 1 else "."))
    if name == "shortcuts":
        for group in dict.fromkeys(n.group for n in nets):
            errs = {n.label: by_label[n.label].test_err for n in nets
                    if n.group == group and n.label in by_label and by_label[n.label].test_err is not None}
            if len(errs) > 1:
                order = " < ".join(f"{k} {v:.2f}" for k, v in sorted(errs.items(), key=lambda kv: kv[1]))
                out.append("Paper (ImageNet, 34 layers): all three options far better than no shortcut, "
                           f"C slightly better than B, B slightly better than A. Ours, test error: {order}.")
    if name == "preact":
        for group in dict.fromkeys(n.group for n in nets):
            pair = [n for n in nets if n.group == group and n.label in by_label]
            if len(pair) == 2 and all(by_label[n.label].test_err is not None for n in pair):
                orig, pre = (by_label[n.label].test_err for n in pair)
                verdict = "lower" if pre < orig else "not lower"
                out.append(f"Paper: pre-activation lowers the test error ({pair[0].label} "
                           f"{paper_error(name, pair[0])} -> {paper_error(name, pair[1])}). Ours: {orig:.2f} -> "
                           f"{pre:.2f}, {verdict}.")
    return out or ["Too few finished runs to compare with the paper yet."]


def plot_experiment(out: str | Path, nets: Sequence[Net], path: Path, title: str = "") -> list[str]:
    """One panel per group (e.g. plain | ResNets, as the paper's Figure 6) from each net's
    seed-0 run: training error thin and dashed, validation (or test) error bold. Returns the
    runs drawn (those whose training log is at hand)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(n.group for n in nets))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), sharey=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    top = 1.0
    drawn = []
    for ax, group in zip(axes[0], groups, strict=True):
        for i, net in enumerate(n for n in nets if n.group == group):
            run = run_dir(out, net, 0)
            if not RunDir(run).has_log():  # not trained yet, or its log is not at hand
                continue
            drawn.append(run.name)
            held = draw_curves(ax, curve_series(read_metrics(run)), "err", colors[i % len(colors)], net.label)
            if held:
                top = max(top, min(100.0, 2 * max(held[len(held) // 2:])))
        ax.set(title=group, xlabel="iterations")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    axes[0][0].set(ylabel="error (%): train dashed, held-out bold", ylim=(0, top))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, "figure")
    return drawn


def portable_command(command: str) -> str:
    """`command` as a reader can type it on their machine: an image folder's absolute path
    becomes PATH/TO/<its name>, an absolute --out becomes runs/<its name>."""
    words = shlex.split(command)
    for i, w in enumerate(words):
        if w.startswith("imagefolder:/"):
            words[i] = "imagefolder:PATH/TO/" + Path(w.removeprefix("imagefolder:")).name
        elif i and words[i - 1] == "--out" and Path(w).is_absolute():
            words[i] = f"runs/{Path(w).name}"
    return shlex.join(words)


# --- the depth experiment's differences, the budget experiment's gaps ------------------
PAPER_GAP = (20, 56, 1.78)  # Table 6: ResNet-20 8.75% minus ResNet-56 6.97%, at 64k iterations
DIFFERENCES_NOTE = ("Test error of the shallower net minus the deeper one's, in points (positive: the deeper net "
                    "is better), over the seeds each has: the difference of means, its standard error "
                    "sqrt(s1^2/n1 + s2^2/n2), and Welch's t-test (two-sided; p < 0.05 counts as beyond the "
                    "seed noise).")
BUDGET_NOTE = ("Test error of the checkpoint chosen on validation, against the run's length; error bars: the "
               "standard deviation over seeds where a net has several. Stars: the paper's 64k figures, on the "
               "official images (this copy's JPEG compression costs a trained ResNet-20 about 10 points).")
GAPS_NOTE = ("The gap is ResNet-{a}'s test error minus ResNet-{b}'s at the same budget (positive: depth pays), "
             "with its standard error over the seeds where a net has several; the paper's gap at 64,000 "
             "iterations is {paper} points ({a}: 8.75%, {b}: 6.97%).")


def _by_depth(nets: Sequence[Net], by_label: dict[str, Summary]) -> list[tuple[Net, Summary]]:
    return [(n, by_label[n.label]) for n in nets if n.label.startswith("resnet-") and n.label in by_label
            and by_label[n.label].test_err is not None]


def depth_differences(nets: Sequence[Net], by_label: dict[str, Summary]) -> list[Difference]:
    """Each adjacent pair of depths, and the shallowest against 56 layers (the paper's gap)."""
    done = _by_depth(nets, by_label)
    pairs = list(zip(done, done[1:]))
    first, deep = (done[0] if done else None), next((x for x in done if x[0].depth == 56), None)
    if first and deep and (first, deep) not in pairs and first is not deep:
        pairs.append((first, deep))
    return [difference(a, b) for (_, a), (_, b) in pairs]


def _differences_table(diffs: Sequence[Difference]) -> list[str]:
    rows = [[f"{d.a} - {d.b}", f"{d.diff:+.2f}", "-" if d.p is None else f"{d.se:.2f}", "-" if d.t is None else f"{d.t:.2f}",
             "-" if d.df is None else f"{d.df:.1f}", "-" if d.p is None else f"{d.p:.3f}", d.verdict()]
            for d in diffs]
    return _markdown_table(["pair", "difference (points)", "+- se", "t", "df", "p", "in words"], rows)


def budget_gaps(nets: Sequence[Net], by_label: dict[str, Summary]) -> list[dict]:
    """At each budget with both depths finished: the shallower minus the deeper net's test error."""
    depths = sorted({n.depth for n in nets})
    if len(depths) < 2:
        return []
    a, b = depths[0], depths[-1]
    at = {(n.depth, n.iters): by_label[n.label] for n in nets if n.label in by_label
          and by_label[n.label].test_err is not None}
    out = []
    for iters in sorted({n.iters for n in nets}):
        if (a, iters) in at and (b, iters) in at:
            d = difference(at[a, iters], at[b, iters])
            out.append({"iters": iters, "shallow": a, "deep": b, "shallow_err": at[a, iters].test_err,
                        "deep_err": at[b, iters].test_err, "gap": d.diff, "se": d.se, "p": d.p,
                        "runs": [at[a, iters].runs, at[b, iters].runs]})
    return out


def _gaps_table(gaps: Sequence[dict]) -> list[str]:
    rows = [[f"{g['iters']:,}", f"{g['shallow_err']:.2f}", f"{g['deep_err']:.2f}",
             f"{g['gap']:+.2f}" + (f" +- {g['se']:.2f}" if g["p"] is not None else ""),
             "-" if g["p"] is None else f"{g['p']:.3f}", "/".join(map(str, g["runs"]))] for g in gaps]
    rows.append([f"{PAPER_ITERS:,} (paper)", "8.75", "6.97", f"+{PAPER_GAP[2]:.2f}", "-", "1/1"])
    a, b = (gaps[0]["shallow"], gaps[0]["deep"]) if gaps else PAPER_GAP[:2]
    return _markdown_table(["iterations", f"ResNet-{a} test %", f"ResNet-{b} test %", "gap (points)", "p",
                            "runs"], rows)


def gap_trend(gaps: Sequence[dict]) -> str:
    """What the gaps do as the budget grows, and what the last step says about 64k: the gap's
    change per doubling of the budget between the two longest runs (no curve is fitted: a few
    points of a saturating curve would carry any line far past the paper's figure)."""
    import math

    if len(gaps) < 2:
        return ""
    shown = ", ".join(f"{g['iters']:,}: {g['gap']:+.2f}" for g in gaps)
    last, prev = gaps[-1], gaps[-2]
    per_doubling = (last["gap"] - prev["gap"]) / math.log2(last["iters"] / prev["iters"])
    if per_doubling > 0:
        toward = (f"still growing at {last['iters']:,} iterations, toward the paper's +{PAPER_GAP[2]:.2f} at "
                  f"{PAPER_ITERS:,}" if last["gap"] < PAPER_GAP[2] else
                  f"still growing at {last['iters']:,} iterations, already past the paper's +{PAPER_GAP[2]:.2f}")
    else:
        toward = f"not growing at {last['iters']:,} iterations"
    return (f"the gap moves by {per_doubling:+.2f} points per doubling of the budget between the two longest "
            f"runs ({shown}): {toward}")


def plot_budget(nets: Sequence[Net], by_label: dict[str, Summary], path: Path, title: str = "") -> Path:
    """Test error against iterations (log scale), one line per depth with the seeds' std as
    error bars, and the paper's 64k errors marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, depth in enumerate(sorted({n.depth for n in nets})):
        pts = sorted((n.iters, by_label[n.label]) for n in nets if n.depth == depth and n.label in by_label
                     and by_label[n.label].test_err is not None)
        color = colors[i % len(colors)]
        if pts:
            ax.errorbar([x for x, _ in pts], [s.test_err for _, s in pts], yerr=[s.test_std or 0 for _, s in pts],
                        color=color, marker="o", capsize=3, label=f"ResNet-{depth} (ours)")
        paper = PAPER_TABLE6.get(f"resnet-{depth}")
        if paper:
            ax.scatter([PAPER_ITERS], [float(paper[0].split()[0])], color=color, marker="*", s=140, zorder=3,
                       label=f"ResNet-{depth}, paper (official images)")
    ax.set(xscale="log", xlabel="iterations (batch 128)", ylabel="test error (%)")
    ax.minorticks_off()
    ax.set_xticks([2000, 4000, 8000, 16000, 32000, 64000], ["2k", "4k", "8k", "16k", "32k", "64k"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path, "figure")


RESPONSES_HEADER = ["net", "3x3 layers", "mean std", "median std"]


def responses_table(curves: dict[str, list[float]]) -> list[list[str]]:
    """One row of cells (RESPONSES_HEADER) per net: its 3x3 layers' response strengths summarized."""
    return [[k, str(len(v)), f"{sum(v) / len(v):.3f}", f"{sorted(v)[len(v) // 2]:.3f}"] for k, v in curves.items()]


def responses_findings(curves: dict[str, list[float]], nets: Sequence[Net]) -> list[str]:
    """Figure 7's claims, each with what our responses show."""
    mean = {k: sum(v) / len(v) for k, v in curves.items()}
    out = []
    pairs = [(d, mean[f"plain-{d}"], mean[f"resnet-{d}"]) for d in sorted({n.depth for n in nets})
             if f"plain-{d}" in mean and f"resnet-{d}" in mean]
    if pairs:
        out.append("Paper: ResNets respond more weakly than plain nets of the same depth. Ours (mean std, "
                   "plain -> ResNet): " + ", ".join(f"{d}: {p:.3f} -> {r:.3f}" for d, p, r in pairs)
                   + f"; weaker at {sum(r < p for _, p, r in pairs)} of {len(pairs)} depths.")
    res = [(n.depth, mean[n.label]) for n in nets if n.label.startswith("resnet-") and n.label in mean]
    if len(res) > 1:
        out.append(f"Paper: the deeper the ResNet, the weaker each layer. Ours: mean std {_trend(res, False)}.")
    return out


def run_responses(out: str | Path, depths: Sequence[int] | None = None, batch_size: int = 500,
                  command: str | None = None, progress: bool = True) -> dict[str, list[float]]:
    """Figure 7 from the finished seed-0 runs in out/runs (nothing is trained): the std of each
    3x3 layer's response over the test images. Writes out/responses/{responses.json,
    responses.png, report.md}; returns {net label: [std per layer, in forward order]}."""
    nets = experiment_nets("responses", depths)
    curves: dict[str, list[float]] = {}
    for net in nets:
        path = run_dir(out, net, 0)
        if not RunDir(path).is_finished():
            continue
        trained = load_trained(path)
        curves[net.label] = layer_responses(trained.model, split_loader(trained, split="test",
                                                                        batch_size=batch_size))
        if progress:
            print(f"{net.label}: {len(curves[net.label])} layers, mean std "
                  f"{sum(curves[net.label]) / len(curves[net.label]):.3f}", flush=True)
    if not curves:
        raise ReslabError(f"no finished plain or residual run in {Path(out) / 'runs'}; train the degradation "
                          "or depth experiment there first")
    folder = Path(out) / "responses"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "responses.json").write_text(json.dumps(curves, indent=2) + "\n")
    plot_responses(curves, folder / "responses.png", title="std of each 3x3 layer's response (test images)")
    lines = [f"# {TITLES['responses']}", "", "Reproduce with:", "", "```bash",
             command or f"reslab experiment responses --out {out}", "```", "",
             RESPONSES_NOTE + " Read from the seed-0 runs of the experiment directory (best checkpoint); "
             f"machine: {_environment(run_dir(out, next(n for n in nets if n.label in curves), 0))}.", "",
             *_markdown_table(RESPONSES_HEADER, responses_table(curves))]
    lines += ["", "## Against the paper", ""]
    lines += [f"- {f}" for f in responses_findings(curves, nets)]
    lines += ["", "![responses](responses.png)", ""]
    (folder / "report.md").write_text("\n".join(lines))
    return curves


# --- a written experiment, read back -----------------------------------------------------
@dataclass(frozen=True)
class ExperimentReport:
    """What an experiment directory's report.md says, as data: the sentences, the table's header
    and rows (strings, as report.md shows them), and the figure files."""

    name: str
    folder: Path
    title: str
    data: str | None  # what the nets were trained on, as the report names it
    command: str | None  # reproduces the experiment (None where results.json predates recording it)
    recipe: list[str]  # sentences
    seeds: int | None
    environment: str | None
    header: list[str]
    rows: list[list[str]]
    missing: list[str]  # nets of the experiment not finished yet
    findings: list[str]  # the paper's claims, each with what ours show
    figures: list[Path]
    note: str  # what the figures and the table measure


def is_experiment_dir(path: str | Path) -> bool:
    """A directory `reslab experiment` wrote: results.json (or responses.json for `responses`)."""
    path = Path(path)
    try:
        results = json.loads((path / "results.json").read_text())
        return isinstance(results, dict) and results.get("experiment") in TITLES
    except (OSError, ValueError):
        return (path / "responses.json").is_file()


def _nets(name: str, labels: Sequence[str]) -> list[Net]:
    """The nets of experiment `name` with these labels, in the experiment's order (depths read off the labels)."""
    depths = sorted({int(m.group(1)) for label in labels if (m := re.search(r"-(\d+)", label))})
    return [n for n in experiment_nets(name, depths or None) if n.label in labels]


def read_experiment(folder: str | Path) -> ExperimentReport:
    """The report of the experiment `reslab experiment` wrote into `folder`, read from its
    results.json (responses.json for `responses`) and figures."""
    folder = Path(folder)
    if not is_experiment_dir(folder):
        raise ReslabError(f"{folder} is not an experiment directory (it holds no results.json or responses.json "
                          "that `reslab experiment` wrote)")
    figures = sorted(folder.glob("*.png"))
    if not (folder / "results.json").is_file():
        try:
            curves = json.loads((folder / "responses.json").read_text())
            if not isinstance(curves, dict) or not all(isinstance(v, list) and v for v in curves.values()):
                raise ValueError("not a mapping of nets to response strengths")
        except (OSError, ValueError) as e:
            raise ReslabError(f"cannot read {folder / 'responses.json'}: {e}") from None
        return ExperimentReport("responses", folder, TITLES["responses"], None, None, [], None, None,
                                RESPONSES_HEADER, responses_table(curves), [],
                                responses_findings(curves, _nets("responses", list(curves))), figures,
                                RESPONSES_NOTE)
    results = json.loads((folder / "results.json").read_text())
    name = results["experiment"]
    try:
        summaries = [Summary(**s) for s in results.get("summary", [])]
        base = TrainConfig.from_dict(results["recipe"])
    except (KeyError, TypeError, ReslabError) as e:
        raise ReslabError(f"cannot read {folder / 'results.json'}: {e}") from None
    by_label = {s.label: s for s in summaries}
    nets = _nets(name, results.get("nets") or list(by_label))
    return ExperimentReport(name, folder, TITLES[name], _data_name(base), results.get("command"),
                            recipe_lines(base, nets), results.get("seeds"), results.get("environment"),
                            RESULTS_HEADER, results_table(name, nets, by_label),
                            [n.label for n in nets if n.label not in by_label],
                            findings(name, nets, by_label), figures, FIGURE_NOTE)
