"""Layer responses (He et al. 2015, Figure 7): how strongly each 3x3 layer of a trained
net answers, for plain and residual nets.

The response of a 3x3 layer is the output of its BN, before the ReLU and before
the addition of the shortcut. Its strength is the standard deviation of each
channel over the images and positions, averaged over the layer's channels. The
paper's finding: residual nets answer more weakly than plain ones, and the
deeper the residual net, the weaker each layer, as if each block only nudged
the signal.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor, nn

from ..outputs import save_figure


@torch.no_grad()
def layer_responses(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> list[float]:
    """Std of each 3x3 layer's response over `batches` (x: (N, C, H, W) float), in forward order.

    A response is a BatchNorm2d output whose input is a 3x3 convolution's output:
    post-activation nets have one per 3x3 conv (the stem's included).
    """
    last: list[Tensor | None] = [None]  # the latest 3x3 conv output (a BN right after it reads it)
    stats: dict[nn.Module, list[Tensor]] = {}  # bn -> [count, sum, sum of squares], float64, per channel

    def conv_hook(module: nn.Module, args: tuple, out: Tensor) -> None:
        last[0] = out

    def bn_hook(module: nn.Module, args: tuple, out: Tensor) -> None:
        if args[0] is not last[0]:
            return
        last[0] = None
        y = out.detach().double().transpose(0, 1).flatten(1)  # (C, N*H*W)
        acc = stats.setdefault(module, [torch.zeros((), dtype=torch.float64), 0.0, 0.0])
        acc[0] += y.shape[1]
        acc[1] = acc[1] + y.sum(1)
        acc[2] = acc[2] + (y * y).sum(1)

    hooks = [m.register_forward_hook(conv_hook) for m in model.modules()
             if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    hooks += [m.register_forward_hook(bn_hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    was_training = model.training
    model.eval()
    try:
        for x, _ in batches:
            model(x)
            last[0] = None
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    stds = []
    for n, s, ss in stats.values():  # insertion order is forward order
        mean = s / n
        stds.append((ss / n - mean * mean).clamp(min=0).sqrt().mean().item())
    return stds


def plot_responses(curves: dict[str, list[float]], path: str | Path, title: str = "") -> Path:
    """The paper's Figure 7: std by layer index (top) and sorted by magnitude (bottom);
    plain nets dashed, ResNets solid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7.5, 7))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    depths = sorted({int(label.rsplit("-", 1)[-1]) for label in curves})
    for label, stds in curves.items():
        color = colors[depths.index(int(label.rsplit("-", 1)[-1])) % len(colors)]
        style = "--" if label.startswith("plain") else "-"
        idx = range(1, len(stds) + 1)
        top.plot(idx, stds, style, color=color, lw=1.2, label=label)
        bottom.plot(idx, sorted(stds, reverse=True), style, color=color, lw=1.2, label=label)
    top.set(xlabel="layer index (original)", ylabel="std")
    bottom.set(xlabel="layer index (sorted by magnitude)", ylabel="std")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, "figure")
