"""Files for other runtimes: ONNX, torch.export/AOTInductor, safetensors.

- `export_onnx`, `export_pt2`, `save_safetensors`: with a dynamic batch axis
  where the format has one, BN folded first (`reslab.quantize.fold_bn`).

What is exported is a model rebuilt from a file or a name (`reslab.train.record.load_any`).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from .models.flops import check_input_size
from .outputs import check_output, output_file
from .quantize import fold_bn
from .train.checkpoint import export_safetensors


def _example(model: nn.Module, input_size: tuple[int, int, int] | None, batch: int = 2) -> Tensor:
    """A random (batch, C, H, W) input; input_size defaults to 32x32 for a CIFAR stem, else 224x224."""
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
    `metadata` (e.g. `Trained.metadata`: classes, mean, std, input size) goes
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


def save_safetensors(model: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Writes the model's state_dict (unfolded, as trained) as safetensors, with `metadata`
    (e.g. `Trained.metadata`: the model, its input size, classes, mean, std) in its header,
    so that `reslab predict`, `export` and `train --set init=` read it back."""
    path = Path(path)
    with output_file(path, (".safetensors",), "safetensors file") as tmp:
        export_safetensors(model.state_dict(), tmp, metadata or {})
    return path
