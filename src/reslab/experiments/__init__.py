"""The paper's experiments, each one command: degradation, shortcuts, depth.

    reslab experiment degradation --data cifar10 --preset paper-cifar   # Figure 6
    reslab experiment shortcuts --data cifar10 --preset paper-cifar     # options A/B/C
    reslab experiment depth --data cifar10 --preset paper-cifar         # Table 6

Every net of an experiment is trained with the same recipe into a run
directory of its own under `out`; the experiment then measures training error
(eval mode, whole training split), best validation error and test error, and
writes results.md, results.json and a Figure-6-style plot. With the default
`digits` data and its short recipe an experiment finishes in minutes on a CPU;
the CIFAR-10 reproduction with `paper-cifar` is a GPU job (64k iterations per net).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ReslabError
from ..train import TrainConfig, preset, read_metrics, train
from ..train.logging import _curves, _smooth
from ..train.loop import evaluate, load_data, make_loader


@dataclass(frozen=True)
class Net:
    """One network of an experiment: a label, a registered model, overrides."""

    label: str
    model: str
    args: tuple[tuple[str, object], ...] = ()
    group: str = ""  # the plot panel it is drawn in


@dataclass(frozen=True)
class Row:
    label: str
    model: str
    params: int
    train_err: float  # %, eval mode, whole training split, end of training
    val_err: float | None  # %, best validation error over the run
    test_err: float | None  # %, of the checkpoint chosen on validation
    seconds: float


def _cifar(kind: str, depth: int, **args) -> Net:
    """A CIFAR net of any depth 6n+2, registered or not (e.g. plain38)."""
    return Net(f"{kind}-{depth}", f"{kind}20", tuple({"depth": depth, **args}.items()),
               "plain networks" if kind == "plain" else "ResNets")


def degradation(depths: Sequence[int] = (20, 32, 44, 56)) -> list[Net]:
    """Figure 6: plain and residual nets of the same depths (option A)."""
    return [_cifar(kind, d) for kind in ("plain", "resnet") for d in depths]


def shortcuts(depths: Sequence[int] = (32,)) -> list[Net]:
    """Section 4.1 (Table 3) at CIFAR scale: options A, B, C, and no shortcut."""
    nets = []
    for d in depths:
        for option in ("A", "B", "C", None):
            kind = "plain" if option is None else "resnet"
            net = _cifar(kind, d, shortcut=option)
            label = f"{net.label} ({'no shortcut' if option is None else 'option ' + option})"
            nets.append(Net(label, net.model, net.args, f"depth {d}"))
    return nets


def depth(depths: Sequence[int] = (20, 32, 44, 56, 110)) -> list[Net]:
    """Table 6: ResNets of growing depth on CIFAR."""
    return [_cifar("resnet", d) for d in depths]


EXPERIMENTS = {"degradation": degradation, "shortcuts": shortcuts, "depth": depth}


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


def run_experiment(name: str, out: str | Path, base: TrainConfig | None = None,
                   depths: Sequence[int] | None = None, progress: bool = True,
                   figure: str | None = None) -> list[Row]:
    """Trains every net of experiment `name` with recipe `base`; returns one Row per net.

    Runs already in `out` with the same recipe are reused (finished) or
    resumed (interrupted), so an experiment continues where it stopped; a run
    there with another recipe is an error, never overwritten.
    figure: file name of the plot in `out` (default NAME.png).
    """
    if name not in EXPERIMENTS:
        raise ReslabError(f"unknown experiment {name!r}; experiments: {', '.join(EXPERIMENTS)}")
    nets = EXPERIMENTS[name](depths) if depths else EXPERIMENTS[name]()
    base = base or digits_recipe()
    out = Path(out)
    data = load_data(base)
    rows = []
    for net in nets:
        rows.append(_run_net(net, base, data, out / _dirname(net), progress))
    (out / "results.json").write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    (out / "results.md").write_text(format_table(name, rows, base) + "\n")
    plot_experiment(out, nets, out / (figure or f"{name}.png"), title=f"{name} on {base.data}")
    return rows


def _dirname(net: Net) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in net.label).strip("_")


# Fields that change how fast a run goes, not what it computes.
_SPEED_ONLY = ("threads", "device", "compile", "log_every")


def _recipe(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k not in (*_SPEED_ONLY, "env")}


def _run_net(net: Net, base: TrainConfig, data, run_dir: Path, progress: bool) -> Row:
    cfg = base.replace(model=net.model, model_args={**base.model_args, **dict(net.args)})
    saved, done = run_dir / "config.json", run_dir / "row.json"
    if saved.is_file():
        if _recipe(json.loads(saved.read_text())) != _recipe(json.loads(cfg.to_json())):
            raise ReslabError(f"{run_dir} holds a run with another recipe; pass another --out or remove it")
        if done.is_file():
            return Row(**json.loads(done.read_text()))
    result = train(cfg, run_dir, resume=(run_dir / "last.pt").is_file(), progress=progress, data=data)
    from ..predict import load_trained

    trained = load_trained(run_dir / "last.pt")
    device = next(trained.model.parameters()).device
    on_train = evaluate(trained.model, make_loader(data.train, cfg, False, device, 512), len(data.classes))
    row = Row(
        net.label, net.model, sum(p.numel() for p in trained.model.parameters()),
        100 * (1 - on_train.top1),
        None if result.best_val_acc is None else 100 * (1 - result.best_val_acc),
        None if result.test is None else 100 * (1 - result.test.top1),
        result.seconds,
    )
    done.write_text(json.dumps(asdict(row)) + "\n")
    return row


def format_table(name: str, rows: list[Row], base: TrainConfig) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    length = f"{base.iters} iterations" if base.iters else f"{base.epochs} epochs"
    lines = [f"## {name} on {base.data} ({length}, batch {base.batch_size}, lr {base.lr})", "",
             "| net | params | train error % | val error % | test error % | seconds |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r.label} | {r.params / 1e6:.3f}M | {pct(r.train_err)} | {pct(r.val_err)} | "
              f"{pct(r.test_err)} | {r.seconds:.0f} |" for r in rows]
    return "\n".join(lines)


def plot_experiment(out: Path, nets: Sequence[Net], path: Path, title: str = "") -> Path:
    """One panel per group (e.g. plain | ResNets, as the paper's Figure 6):
    training error thin and dashed, validation (or test) error bold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(n.group for n in nets))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), sharey=True, squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    top = 1.0
    for ax, group in zip(axes[0], groups, strict=True):
        for i, net in enumerate(n for n in nets if n.group == group):
            c = _curves(read_metrics(out / _dirname(net)))
            color = colors[i % len(colors)]
            if c["train_err"]:
                xs, ys = zip(*c["train_err"])
                ax.plot(xs, _smooth(ys, 5), color=color, lw=0.8, ls="--")
            if c["val_err"]:
                xs, ys = zip(*c["val_err"])
                ax.plot(xs, ys, color=color, lw=2.2, label=net.label)
                top = max(top, min(100.0, 2 * max(ys[len(ys) // 2:])))
        ax.set(title=group, xlabel="iterations")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0][0].set(ylabel="error (%): train dashed, held-out bold", ylim=(0, top))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


__all__ = ["EXPERIMENTS", "Net", "Row", "base_config", "digits_recipe", "plot_experiment",
           "run_experiment"]
