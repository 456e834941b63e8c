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
from .models.flops import check_input_size, count_macs, trace
from .models.registry import create_model, default_input_size


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


__all__ = ["LayerRow", "Summary", "check_input_size", "count_macs", "summary"]


def _shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


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
    records = trace(model, input_shape, device)
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
