"""Per-layer summary of a model: output shapes, parameters and MACs.

MACs are multiply-accumulates of convolutions and linear layers (what the
ResNet paper's Table 1 calls FLOPs); normalization, activations and additions
are not counted. Shapes are traced on the meta device, so summarising even
the largest model allocates nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ._lazy import callable_module
from .errors import ReslabError


@dataclass(frozen=True)
class LayerRow:
    name: str  # module path, e.g. "layer1.0.conv1"
    type: str
    output_shape: tuple[int, ...]
    params: int  # parameters of the module and its children
    macs: int  # multiply-accumulates of the module and its children, whole batch
    depth: int


@dataclass(frozen=True)
class Summary:
    model: str
    input_shape: tuple[int, ...]
    rows: list[LayerRow] = field(default_factory=list)
    params: int = 0
    trainable_params: int = 0
    macs: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def __str__(self) -> str:
        head = ("Layer", "Type", "Output shape", "Params", "MACs")
        body = [
            ("  " * (r.depth - 1) + r.name, r.type, _shape(r.output_shape), f"{r.params:,}", f"{r.macs:,}")
            for r in self.rows
        ]
        widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
        fmt = "  ".join(f"{{:{'<' if i < 3 else '>'}{w}}}" for i, w in enumerate(widths))
        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        lines = [f"{self.model}  input {_shape(self.input_shape)}", rule, fmt.format(*head), rule]
        lines += [fmt.format(*row) for row in body]
        lines += [
            rule,
            f"Total params: {self.params:,} ({self.params / 1e6:.2f} M)",
            f"Trainable params: {self.trainable_params:,}",
            f"Total MACs: {self.macs:,} ({self.macs / 1e9:.3f} G)",
        ]
        return "\n".join(lines)


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


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


def _trace(model: nn.Module, input_shape: tuple[int, ...], device: str | torch.device):
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
    return sum(macs for _, macs in _trace(model, input_shape, device).values())


def summary(
    model: nn.Module | str,
    input_size: tuple[int, int, int] | None = None,
    batch_size: int = 1,
    depth: int = 3,
) -> Summary:
    """Per-layer table of `model` (a module or a registered name).

    input_size: (C, H, W), the model's default when it is a registered name.
    depth: deepest module path shown (1: stages only); totals always cover all.
    """
    from .models.registry import create_model, default_input_size

    name = model if isinstance(model, str) else type(model).__name__
    if isinstance(model, str):
        input_size = input_size or default_input_size(model)
        with torch.device("meta"):
            model = create_model(model)
    if input_size is None:
        raise ReslabError("input_size (C, H, W) is required for a model that is not a registered name")
    if depth < 1:
        raise ReslabError(f"depth must be at least 1, got {depth}")
    device = next(model.parameters()).device
    input_shape = (batch_size, *input_size)
    records = _trace(model, input_shape, device)
    modules = dict(model.named_modules())
    rows = []
    for path, (shape, _) in records.items():
        level = path.count(".") + 1
        if level > depth:
            continue
        module = modules[path]
        macs = sum(m for p, (_, m) in records.items() if p == path or p.startswith(path + "."))
        rows.append(LayerRow(path, type(module).__name__, shape,
                             sum(p.numel() for p in module.parameters()), macs, level))
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total_macs = sum(m for _, m in records.values())
    return Summary(name, input_shape, rows, params, trainable, total_macs)


callable_module(__name__)  # `reslab.summary(...)` is this module's summary()
