"""Model rewrites for inference: BN folding and post-training int8 quantization.

- `fold_bn(model)`: every BatchNorm that directly follows a convolution is
  folded into that convolution's weight and bias (eval statistics), so the
  model computes the same function with fewer kernels.
- `quantize_int8(model, calibration)`: post-training static int8
  quantization, calibrated on real batches: torchao's PT2E path when torchao
  is installed, FX graph mode otherwise (see its docstring).

`reslab.optimize` and the exporters build on these.
"""

from __future__ import annotations

import copy
import operator
import warnings
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor, nn

from .errors import ReslabError

# --- BN folding -------------------------------------------------------------


class _BNLeafTracer(torch.fx.Tracer):
    """fx's tracer, keeping every BatchNorm2d (subclasses too) as one call_module node."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, nn.BatchNorm2d) or super().is_leaf_module(m, qualname)


def _conv_bn_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv path, bn path) for every BN whose only input is a conv's output.

    Found by tracing the model with torch.fx, so the model's own forward
    decides what follows what; a conv whose output is also used elsewhere
    (or a module called twice) is left alone, since folding would change it.
    """
    try:
        graph = _BNLeafTracer().trace(model)
    except Exception as e:  # fx raises many types for untraceable Python
        raise ReslabError(
            f"cannot fold BatchNorm in {type(model).__name__}: torch.fx cannot trace its forward ({e})"
        ) from None
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0]
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module"):
            continue
        conv = modules.get(src.target)
        if (
            isinstance(conv, nn.Conv2d)
            and len(src.users) == 1
            and calls[src.target] == 1
            and calls[node.target] == 1
        ):
            pairs.append((src.target, node.target))
    return pairs


def _set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, name, module)


def fold_bn(model: nn.Module) -> nn.Module:
    """A copy of `model` in eval mode with conv->BN pairs folded into the convs.

    The copy keeps the model's class and methods; each folded BN becomes an
    nn.Identity and its conv gains a bias. Outputs equal the eval-mode
    model's up to float rounding (about 1e-6 relative). A BN that follows no
    conv (the first BN of a pre-activation block) stays as it is.
    """
    folded = copy.deepcopy(model).eval()
    for conv_path, bn_path in _conv_bn_pairs(folded):
        conv = folded.get_submodule(conv_path)
        bn = folded.get_submodule(bn_path)
        if bn.running_mean is None:  # track_running_stats=False: batch statistics even in eval
            continue
        _set_module(folded, conv_path, torch.nn.utils.fusion.fuse_conv_bn_eval(conv, bn))
        _set_module(folded, bn_path, nn.Identity())
    return folded


# --- int8 -------------------------------------------------------------------


def calibration_batches(calibration: Tensor | Iterable) -> Iterator[Tensor]:
    """Image batches from a (N, C, H, W) tensor, or from an iterable of tensors
    or of (images, labels) pairs such as a data loader."""
    if isinstance(calibration, Tensor):
        if calibration.ndim != 4:
            raise ReslabError(f"calibration images must be (N, C, H, W), got shape {tuple(calibration.shape)}")
        yield from calibration.split(32)
        return
    for item in calibration:
        batch = item[0] if isinstance(item, list | tuple) else item
        if not isinstance(batch, Tensor) or batch.ndim != 4:
            raise ReslabError("calibration must yield (N, C, H, W) float tensors or (images, labels) pairs")
        yield batch


def int8_method() -> str:
    """Which int8 quantization `quantize_int8` uses here: "pt2e" when torchao is installed, else "fx"."""
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer  # noqa: F401
    except ImportError:
        return "fx"
    return "pt2e"


def quantize_int8(
    model: nn.Module, calibration: Tensor | Iterable, max_batches: int | None = None, method: str | None = None
) -> nn.Module:
    """Post-training static int8 quantization for CPU inference.

    Weights int8 per output channel, activations uint8 per tensor; the
    ranges come from running `calibration` (real, normalized images: a
    (N, C, H, W) tensor or an iterable of batches or (images, labels) pairs;
    `max_batches` caps how many are used). The input is float (N, C, H, W),
    the output float logits.

    method "pt2e" (the default when torchao is installed): torch.export +
    torchao's X86InductorQuantizer; the result is an exported graph of
    quantize/dequantize around float ops, which Inductor (torch.compile with
    freezing, as `optimize` does) lowers to oneDNN int8 kernels with VNNI/AMX
    and conv+add+ReLU fused; called eagerly it is slow. method "fx": FX graph
    mode with the "x86" engine, deprecated in PyTorch, kept as the fallback
    without torchao; its kernels run eagerly.
    """
    method = method or int8_method()
    if method not in ("pt2e", "fx"):
        raise ReslabError(f"int8 method must be pt2e or fx, got {method!r}")
    model = copy.deepcopy(model).eval().float()
    batches = _calibration_batches(calibration, max_batches)
    first = next(batches, None)
    if first is None:
        raise ReslabError("calibration data is empty: int8 quantization needs real images to set its ranges")
    if method == "pt2e":
        return _quantize_pt2e(model, first, batches)
    return _quantize_fx(model, first, batches)


def _calibration_batches(calibration: Tensor | Iterable, max_batches: int | None) -> Iterator[Tensor]:
    for i, batch in enumerate(calibration_batches(calibration)):
        if max_batches is not None and i >= max_batches:
            return
        yield batch.float()


def _quantize_pt2e(model: nn.Module, first: Tensor, rest: Iterator[Tensor]) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    # min=1: torch.export would otherwise specialise batch 1 away as a special case.
    batch = torch.export.Dim("batch", min=1, max=4096)
    exported = torch.export.export(model, (first,), dynamic_shapes=({0: batch},)).module()
    _tag_sources(exported)
    quantizer = xiq.X86InductorQuantizer().set_global(xiq.get_default_x86_inductor_quantization_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_pt2e(exported, quantizer)  # folds BN into the convs itself
        with torch.no_grad():
            prepared(first)
            for batch in rest:
                prepared(batch)
        return convert_pt2e(prepared)


def _tag_sources(graph_module: torch.fx.GraphModule) -> None:
    """Gives each conv, add, ReLU, linear and pooling node its own source record.

    The quantizer finds conv+ReLU and conv+add+ReLU by the module each node came
    from. A ResNet block calls one nn.ReLU twice (as torchvision's does), so both
    calls share one record, the matcher sees a two-output "partition" and stops
    with "Input partition has more than one output node". One record per node,
    keyed by the op, is what the matcher expects from single-call modules.
    """
    aten = torch.ops.aten
    kinds = {aten.conv2d.default: nn.Conv2d, aten.relu.default: nn.ReLU, aten.relu_.default: nn.ReLU,
             aten.add.Tensor: operator.add, aten.add_.Tensor: operator.add, aten.linear.default: nn.Linear,
             aten.max_pool2d.default: nn.MaxPool2d, aten.adaptive_avg_pool2d.default: nn.AdaptiveAvgPool2d}
    for node in graph_module.graph.nodes:
        if node.op == "call_function" and node.target in kinds:
            node.meta["source_fn_stack"] = [(node.name, kinds[node.target])]


def _quantize_fx(model: nn.Module, first: Tensor, rest: Iterator[Tensor]) -> nn.Module:
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    if "x86" not in torch.backends.quantized.supported_engines:
        raise ReslabError("this torch build has no x86 quantized engine; int8 needs an x86 CPU build")
    torch.backends.quantized.engine = "x86"
    with warnings.catch_warnings():
        # FX quantization warns on every call that it is deprecated in favour of torchao.
        warnings.simplefilter("ignore")
        # prepare_fx folds BN and fuses conv+BN+ReLU itself (into one int8 kernel), so
        # the model goes in unfolded.
        observed = prepare_fx(model, get_default_qconfig_mapping("x86"), (first[:1],))
        with torch.no_grad():
            observed(first)
            for batch in rest:
                observed(batch)
        return convert_fx(observed)
