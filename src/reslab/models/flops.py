"""Multiply-accumulates and input checks of a model, counted from one traced forward pass.

`count_macs` counts conv and linear layers (MACs, not FLOPs: one multiply-add is one);
`check_input_size` refuses an input a network cannot take before anything runs.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ReslabError


def _layer_macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        per_output = (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        return out.numel() * per_output
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    return 0


def check_input_size(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """Raises ReslabError if (N, C, H, W) cannot go through `model`.

    C must equal the model's input channels, and H and W must be at least the
    network's total stride, or the last stage would see less than one pixel.
    """
    if len(input_shape) != 4 or min(input_shape) < 1:
        raise ReslabError(f"input shape must be 4 positive sizes (N, C, H, W), got {tuple(input_shape)}")
    _, c, h, w = input_shape
    conv1 = getattr(model, "conv1", None)
    if isinstance(conv1, nn.Conv2d) and conv1.in_channels != c:
        raise ReslabError(
            f"the model takes {conv1.in_channels}-channel images, got {c} channels; "
            f"pass --input-size {conv1.in_channels} {h} {w} or build it with in_chans={c}"
        )
    info = getattr(model, "feature_info", None)
    if info:
        stride = info[-1]["reduction"]
        if h < stride or w < stride:
            raise ReslabError(
                f"input {h}x{w} is too small: this network downsamples by {stride}, "
                f"so height and width must be at least {stride}"
            )


def trace(model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device):
    """Runs one forward pass; returns {module path: (output shape, own MACs)}."""
    check_input_size(model, input_shape)
    records: dict[str, tuple[tuple[int, ...], int]] = {}
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod, _inp, out, name=name):
            if name in records:  # a module reused in one pass (e.g. a shared ReLU)
                shape, macs = records[name]
                records[name] = (shape, macs + _layer_macs(mod, out))
                return
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else ()
            records[name] = (shape, _layer_macs(mod, out) if isinstance(out, torch.Tensor) else 0)

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return records


def count_macs(model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device = "meta") -> int:
    """Multiply-accumulates of one forward pass of a (N, C, H, W) input."""
    return sum(macs for _, macs in trace(model, input_shape, device).values())
