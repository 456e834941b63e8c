"""Inference transforms and exports: BN folding, int8 quantization, ONNX, pt2.

- `fold_bn(model)`: every BatchNorm that directly follows a convolution is
  folded into that convolution's weight and bias (eval statistics), so the
  model computes the same function with fewer kernels.
- `quantize_int8(model, calibration)`: post-training static int8
  quantization, calibrated on real batches (see its docstring for why FX
  graph mode and the x86 engine).
- `export_onnx`, `export_pt2`, `save_safetensors`: files for other runtimes,
  with a dynamic batch axis where the format has one.
- `load(source, name)` / `load_model`: a model from a registered name, a safetensors
  file, a state_dict file or a training checkpoint, for the `reslab export`
  and `reslab bench` commands.
"""

from __future__ import annotations

import copy
import json
import operator
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from .errors import ReslabError
from .outputs import check_output, output_file
from .train.rundir import read_weights

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


def _batches(calibration: Tensor | Iterable) -> Iterable[Tensor]:
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
    for i, batch in enumerate(_batches(calibration)):
        if max_batches is not None and i >= max_batches:
            return
        yield batch.float()


def _quantize_pt2e(model: nn.Module, first: Tensor, rest: Iterator[Tensor]) -> nn.Module:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq

    exported = torch.export.export(_Exportable(model), (first,), dynamic_shapes=_batch_dim(True)).module()
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


# --- files ------------------------------------------------------------------


def _example(model: nn.Module, input_size: tuple[int, int, int] | None, batch: int = 2) -> Tensor:
    """A random (batch, C, H, W) input; input_size defaults to 32x32 for a CIFAR stem, else 224x224."""
    from .models.flops import check_input_size

    if input_size is None:
        input_size = _guess_input_size(model)
    shape = (batch, *input_size)
    check_input_size(model, shape)
    return torch.randn(shape)


def _guess_input_size(model: nn.Module) -> tuple[int, int, int]:
    conv1 = getattr(model, "conv1", None)
    channels = conv1.in_channels if isinstance(conv1, nn.Conv2d) else 3
    # CIFAR nets have a 3x3 stem; ImageNet nets a 7x7/2 stem.
    if isinstance(conv1, nn.Conv2d) and conv1.kernel_size == (3, 3) and conv1.stride == (1, 1):
        return (channels, 32, 32)
    return (channels, 224, 224)


def _batch_dim(dynamic_batch: bool) -> dict | None:
    if not dynamic_batch:
        return None
    # min=1: torch.export would otherwise specialise batch 1 away as a special case.
    return {"x": {0: torch.export.Dim("batch", min=1, max=4096)}}


class _Exportable(nn.Module):
    """Names the input `x` for dynamic_shapes and returns a single tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


PT2_SUFFIXES = (".pt2",)  # torch.export and AOTInductor packages


def export_onnx(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int, int] | None = None,
    dynamic_batch: bool = True,
    fold: bool = True,
    opset: int = 18,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Writes `model` (eval mode, BN folded if `fold`) as ONNX; returns the path.

    Uses the torch.export-based exporter (dynamo=True). Input "input"
    (N, C, H, W) float32, output "logits" (N, num_classes); N is a dynamic
    axis when `dynamic_batch`. The weights are stored inside the .onnx file;
    `metadata` (e.g. `Loaded.metadata`: classes, mean, std, input size) goes
    into its metadata_props.
    """
    path = Path(path)
    model = fold_bn(model) if fold else copy.deepcopy(model).eval()
    x = _example(model, input_size)
    check_output(path, (".onnx",), "ONNX file")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            _Exportable(model), (x,), dynamo=True, opset_version=opset,
            input_names=["input"], output_names=["logits"],
            dynamic_shapes=_batch_dim(dynamic_batch), external_data=False, verbose=False,
        )
    with output_file(path, (".onnx",), "ONNX file") as tmp:
        program.save(str(tmp), external_data=False)
        if metadata:
            import onnx

            proto = onnx.load(str(tmp))
            onnx.helper.set_model_props(proto, {**{p.key: p.value for p in proto.metadata_props}, **metadata})
            onnx.save(proto, str(tmp))
    return path


def onnx_max_abs_diff(path: str | Path, model: nn.Module, x: Tensor) -> float:
    """Largest |onnxruntime(path)(x) - model(x)| over all logits (model in eval mode)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = torch.from_numpy(session.run(None, {name: x.numpy()})[0])
    model = copy.deepcopy(model).eval()
    with torch.no_grad():
        want = model(x)
    return (got - want).abs().max().item()


def export_pt2(
    model: nn.Module,
    path: str | Path,
    input_size: tuple[int, int, int] | None = None,
    dynamic_batch: bool = True,
    aoti: bool = True,
    fold: bool = True,
) -> Path:
    """Writes a torch.export package; returns the path (conventionally *.pt2).

    aoti=True: an AOTInductor package (compiled C++/kernels plus weights, with
    freezing), loaded with `torch._inductor.aoti_load_package(path)` and
    called as `package(x)`, from Python or C++. aoti=False: the portable
    ExportedProgram (`torch.export.load(path).module()(x)`), which compiles
    in seconds instead of minutes. Batch is dynamic when `dynamic_batch`.
    """
    path = Path(path)
    model = fold_bn(model) if fold else copy.deepcopy(model).eval()
    x = _example(model, input_size)
    check_output(path, PT2_SUFFIXES, "torch.export package")
    with torch.no_grad():
        program = torch.export.export(_Exportable(model), (x,), dynamic_shapes=_batch_dim(dynamic_batch))
        with output_file(path, PT2_SUFFIXES, "torch.export package") as tmp:
            if aoti:
                torch._inductor.aoti_compile_and_package(
                    program, package_path=str(tmp), inductor_configs={"freezing": True}
                )
            else:
                torch.export.save(program, str(tmp))
    return path


def save_safetensors(model: nn.Module, path: str | Path) -> Path:
    """Writes the model's state_dict (unfolded, as trained) as safetensors."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with output_file(path, (".safetensors",), "safetensors file") as tmp:
        save_file(state, str(tmp))
    return path


# --- loading ----------------------------------------------------------------

@dataclass(frozen=True)
class Loaded:
    """A model built from a file or a name, and what the file said about it (None: not recorded)."""

    model: nn.Module
    name: str
    input_size: tuple[int, int, int] | None  # (C, H, W) the model was trained at
    classes: list[str] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    random: bool = False  # built from a name alone: fresh, untrained weights

    def metadata(self, input_size: tuple[int, int, int]) -> dict[str, str]:
        """What a deployer needs beside the graph, as strings (ONNX metadata_props, OpenVINO rt_info)."""
        meta = {"model_name": self.name, "input_size": json.dumps(list(input_size)),
                "input_layout": "NCHW, RGB (L for 1 channel), float32: (pixel / 255 - mean) / std"}
        for key in ("classes", "mean", "std"):
            if getattr(self, key) is not None:
                meta[key] = json.dumps(list(getattr(self, key)))
        return meta


def load(source: str | Path | None = None, name: str | None = None) -> Loaded:
    """Builds a model in eval mode from a weights/checkpoint file and/or a registered name.

    source: a .safetensors file, a state_dict file, a reslab training
    checkpoint, or a run directory (its model.safetensors, else last.pt);
    None builds `name` with fresh weights. `name` overrides the recorded
    model; without a record the classifier size and input channels follow
    the stored `fc.weight` and `conv1.weight`.
    """
    from .models import create_model
    from .models.convert import load_weights

    if source is None:
        if name is None:
            raise ReslabError("give a checkpoint file or --model NAME")
        return Loaded(create_model(name).eval(), name, None, random=True)
    weights = read_weights(source)
    name, args, state = name or weights.name, dict(weights.args), weights.state
    if name is None:
        raise ReslabError(f"{weights.path} does not record its model; pass --model NAME")
    if not args:
        if "fc.weight" in state:
            args["num_classes"] = state["fc.weight"].shape[0]
        if "conv1.weight" in state:
            args["in_chans"] = state["conv1.weight"].shape[1]
    model = create_model(name, **args)
    try:
        load_weights(model, state)
    except ReslabError as e:
        raise ReslabError(f"{weights.path} does not fit model {name!r}: {e}") from None
    return Loaded(model.eval(), name, weights.image_size, weights.classes, weights.mean, weights.std)


def load_model(source: str | Path | None = None, name: str | None = None) -> nn.Module:
    """The model of `load(source, name)`: see there for what `source` may be."""
    return load(source, name).model
