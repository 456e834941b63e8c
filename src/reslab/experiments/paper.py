"""The paper's experiments as lists of networks, and the paper's own figures to compare with.

Each experiment is a function of the depths it covers that returns its `Net`s.
A `Net`'s `run` names its run directory, shared between experiments: the
depth sweep reuses Figure 6's ResNets, the shortcut experiment reuses its
option-A ResNet and its plain net, the pre-activation experiment reuses
ResNet-110, as long as they were trained with the same recipe.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ReslabError


@dataclass(frozen=True)
class Net:
    """One network of an experiment.

    label: as the tables show it; model: a registered name, with `args` as overrides;
    group: the plot panel it is drawn in; run: its run directory's stem (seeds add -s0, -s1, ...).
    """

    label: str
    model: str
    args: tuple[tuple[str, object], ...] = ()
    group: str = ""
    run: str = ""
    depth: int = 0
    recipe: tuple[tuple[str, object], ...] = ()  # recipe fields of this net alone (e.g. its budget)

    @property
    def iters(self) -> int | None:
        """The run length this net overrides (the budget experiment), else None."""
        return dict(self.recipe).get("iters")


def cifar_net(kind: str, depth: int, group: str = "", label: str | None = None, run: str | None = None,
              **args) -> Net:
    """A CIFAR net of any depth: the registered `{kind}{depth}` when there is one, else
    `{kind}20` with `depth` overridden (e.g. plain-38, or depth 8 for quick tests)."""
    # imported here, not at the top: `reslab --help` lists the experiments without importing torch
    from ..models import list_models

    name = f"{kind}{depth}"
    if name in list_models():
        model, extra = name, {}
    else:
        model, extra = f"{kind}110" if kind == "preact_resnet" else f"{kind}20", {"depth": depth}
    stem = f"{kind.replace('_', '-')}-{depth}"
    return Net(label or stem, model, tuple({**extra, **args}.items()), group, run or stem, depth)


def degradation(depths: Sequence[int] = (20, 32, 44, 56)) -> list[Net]:
    """Figure 6: plain and residual nets of the same depths (option A)."""
    return [cifar_net(kind, d, "plain networks" if kind == "plain" else "ResNets")
            for kind in ("plain", "resnet") for d in depths]


def depth(depths: Sequence[int] = (20, 32, 44, 56, 110)) -> list[Net]:
    """Table 6: ResNets of growing depth on CIFAR."""
    return [cifar_net("resnet", d, "ResNets") for d in depths]


def shortcuts(depths: Sequence[int] = (32,)) -> list[Net]:
    """Section 4.1 (Table 3) at CIFAR scale: options A, B, C, and no shortcut."""
    nets = []
    for d in depths:
        group = f"depth {d}"
        nets.append(cifar_net("resnet", d, group, f"resnet-{d} (option A)"))
        for option in ("B", "C"):
            nets.append(cifar_net("resnet", d, group, f"resnet-{d} (option {option})", f"resnet-{d}-{option}",
                                  shortcut=option))
        nets.append(cifar_net("plain", d, group, f"plain-{d} (no shortcut)"))
    return nets


def preact(depths: Sequence[int] = (110, 164)) -> list[Net]:
    """He et al. 2016: the original (post-activation) block against the pre-activation one,
    all else equal. 164 and deeper use bottlenecks with projection shortcuts (as
    `preact_resnet164`); shallower nets basic blocks with option A."""
    nets = []
    for d in depths:
        group = f"depth {d}"
        if d >= 164:  # bottleneck nets: the same constructor with the ordering switched off
            nets.append(cifar_net("preact_resnet", d, group, f"resnet-{d}", f"resnet-{d}-bottleneck",
                                  preact=False, block="bottleneck", shortcut="B"))
            nets.append(cifar_net("preact_resnet", d, group, f"preact-resnet-{d}", f"preact-resnet-{d}-bottleneck",
                                  block="bottleneck", shortcut="B"))
        else:
            nets.append(cifar_net("resnet", d, group))
            nets.append(cifar_net("preact_resnet", d, group, preact=True))
    return nets


def budget_label(iters: int) -> str:
    return f"{iters // 1000}k" if iters % 1000 == 0 else f"{iters}it"


def budget(depths: Sequence[int] = (20, 56), budgets: Sequence[int] = (2000, 4000, 8000, 16000),
           shared: int | None = None) -> list[Net]:
    """The budget at which depth pays: ResNets of each depth trained at each budget (iterations),
    the schedule scaled to each (its milestones are fractions of the run). A run of the
    `shared` length is the depth experiment's own (same run directory); the others are named
    by their budget (resnet-20-2k)."""
    if any(b < 1 for b in budgets):
        raise ValueError(f"budgets must be positive iteration counts, got {list(budgets)}")
    nets = []
    for d in depths:
        for b in sorted(set(budgets)):
            stem = f"resnet-{d}" if b == shared else f"resnet-{d}-{budget_label(b)}"
            net = cifar_net("resnet", d, f"resnet-{d}", f"resnet-{d} @ {budget_label(b)}", stem)
            nets.append(dataclasses.replace(net, recipe=(("iters", b),)))
    return nets


def responses(depths: Sequence[int] = (20, 32, 44, 56, 110)) -> list[Net]:
    """Figure 7: plain and residual nets of the same depths; read from finished runs, not
    trained (those not in the experiment directory are left out of the figure)."""
    return degradation(depths)


EXPERIMENTS = {"degradation": degradation, "depth": depth, "shortcuts": shortcuts, "preact": preact,
               "budget": budget, "responses": responses}
TRAINED = ("degradation", "depth", "shortcuts", "preact", "budget")  # responses reads the others' runs


def experiment_nets(name: str, depths: Sequence[int] | None = None, only: Sequence[str] | None = None,
                    budgets: Sequence[int] | None = None, shared: int | None = None) -> list[Net]:
    """The nets of experiment `name`; `only`: labels or run names to keep (the CLI's --nets);
    budgets, shared: the budget experiment's run lengths and the one it shares with the others."""
    if name not in EXPERIMENTS:
        raise ReslabError(f"unknown experiment {name!r}; experiments: {', '.join(EXPERIMENTS)}")
    if budgets and name != "budget":
        raise ReslabError(f"--budgets is the budget experiment's; {name} trains every net for the recipe's length")
    extra = {"shared": shared, **({"budgets": budgets} if budgets else {})} if name == "budget" else {}
    try:
        nets = EXPERIMENTS[name](depths, **extra) if depths else EXPERIMENTS[name](**extra)
    except ValueError as e:  # e.g. a depth that is not 6n+2
        raise ReslabError(f"{name}: {e}") from None
    if only:
        unknown = [o for o in only if not any(o in (n.label, n.run) for n in nets)]
        if unknown:
            raise ReslabError(f"{name} has no net {', '.join(map(repr, unknown))}; its nets: "
                              f"{', '.join(n.run for n in nets)}")
        nets = [n for n in nets if n.label in only or n.run in only]
    return nets


# --- the papers' figures ------------------------------------------------------------
# He et al. 2015, Table 6: CIFAR-10 test error (%) and parameters; ResNet-110 is
# "best (mean +- std)" over 5 runs.
PAPER_TABLE6 = {
    "resnet-20": ("8.75", 0.27e6), "resnet-32": ("7.51", 0.46e6), "resnet-44": ("7.17", 0.66e6),
    "resnet-56": ("6.97", 0.85e6), "resnet-110": ("6.43 (6.61+-0.16)", 1.7e6), "resnet-1202": ("7.93", 19.4e6),
}
# He et al. 2016 (Identity Mappings), CIFAR-10 test error (%), original vs pre-activation.
PAPER_PREACT = {"resnet-110": "6.61", "preact-resnet-110": "6.37", "resnet-164": "5.93",
                "preact-resnet-164": "5.46", "resnet-1001": "7.61", "preact-resnet-1001": "4.92"}
# He et al. 2015, Table 3: ImageNet top-1 error (%, 10-crop) of 34-layer nets; the paper
# has no CIFAR table for the options, so this is the ordering to compare with.
PAPER_SHORTCUTS = {"A": "25.03", "B": "24.52", "C": "24.19", None: "28.54 (plain-34)"}


def paper_error(name: str, net: Net) -> str:
    """The paper's test error for `net` in experiment `name`, or '' where it has none."""
    if name == "preact":
        return PAPER_PREACT.get(net.label, "")
    if name == "shortcuts":
        option = dict(net.args).get("shortcut", "A") if net.model.startswith("resnet") else None
        return PAPER_SHORTCUTS[option] + " (ImageNet)"
    return PAPER_TABLE6.get(net.label, ("",))[0] if net.label.startswith("resnet") else ""


def paper_params(net: Net) -> float | None:
    return PAPER_TABLE6.get(net.label, (None, None))[1]
