"""Other inference runtimes, driven from a reslab model: OpenVINO and ONNX Runtime.

    fast = reslab.optimize(model, "int8", calibration=images, backend="openvino")
    logits = fast(x)                     # (N, C, H, W) float32 in, float32 logits out

`openvino_model` and `onnxruntime_model` build a `RuntimeModel` with the same
contract as `optimize`'s torch paths, on the same weights:
- OpenVINO: `openvino.convert_model` of the eval-mode model (OpenVINO folds
  BN itself), compiled for the CPU with the thread count and the precision
  asked for (fp32 means f32: on a CPU with AMX, OpenVINO's default
  inference precision is bf16); int8 is NNCF post-training quantization of
  that model, calibrated on the images given.
- ONNX Runtime: reslab's ONNX export (BN folded), run by the CPU execution
  provider with all graph optimizations; int8 is onnxruntime's static QDQ
  quantization (per-channel int8 weights, uint8 activations), calibrated
  on the images given. ONNX Runtime has no bf16 path on the CPU.
`save_openvino` and `load_deployed` write and read an OpenVINO IR (or an
ONNX file) with what a deployer needs stored in it: class names, mean/std
and input size.
"""

from __future__ import annotations

import copy
import importlib
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .errors import ReslabError
from .export import _guess_input_size, export_onnx
from .outputs import check_output, output_file
from .quantize import calibration_batches
from .runtime import cpu_has_bf16
from .train.record import METADATA_KEYS, ModelRecord

BACKENDS = ("torch", "openvino", "onnxruntime")
DTYPES = {"openvino": ("fp32", "bf16", "int8"), "onnxruntime": ("fp32", "int8")}
_EXTRA = {"openvino": "openvino", "nncf": "openvino", "onnxruntime": "onnx", "onnx": "onnx"}


def require(package: str, purpose: str) -> Any:
    """The imported package, or one line saying how to install it."""
    try:
        return importlib.import_module(package)
    except ImportError:
        raise ReslabError(f"{purpose} needs the {package} package: pip install 'reslab[{_EXTRA[package]}]'") from None


def available(backend: str) -> bool:
    """Whether `backend` can run here (its packages import)."""
    needs = {"torch": (), "openvino": ("openvino", "nncf"), "onnxruntime": ("onnxruntime", "onnx")}[backend]
    try:
        for package in needs:
            importlib.import_module(package)
    except ImportError:
        return False
    return True


class RuntimeModel:
    """A compiled model of another runtime: call it on (N, C, H, W) float images, get float32
    logits (N, num_classes) as a torch tensor on the CPU."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], backend: str, dtype: str, threads: int,
                 detail: str = "") -> None:
        self._run = run
        self.backend = backend
        self.dtype = dtype
        self.threads = threads
        self.detail = detail

    def __call__(self, x: Tensor) -> Tensor:
        out = self._run(np.ascontiguousarray(x.detach().cpu().float().numpy()))
        return torch.from_numpy(np.array(out, dtype=np.float32, copy=True))

    def __repr__(self) -> str:
        detail = f", {self.detail}" if self.detail else ""
        return f"RuntimeModel(backend={self.backend}, dtype={self.dtype}, threads={self.threads}{detail})"


def _numpy_batches(calibration: Tensor | Iterable, max_images: int = 512) -> list[np.ndarray]:
    batches, seen = [], 0
    for batch in calibration_batches(calibration):
        batches.append(batch.detach().cpu().float().numpy())
        seen += len(batch)
        if seen >= max_images:
            break
    if not batches:
        raise ReslabError("calibration data is empty: int8 quantization needs real images to set its ranges")
    return batches


def _check(backend: str, dtype: str, calibration: Any) -> None:
    if dtype not in DTYPES[backend]:
        raise ReslabError(f"{backend} runs {', '.join(DTYPES[backend])}, not {dtype!r}")
    if dtype == "int8" and calibration is None:
        raise ReslabError("int8 needs calibration images: pass calibration=<(N, C, H, W) tensor or loader>")


def _input_size(model: nn.Module, input_size: tuple[int, int, int] | None) -> tuple[int, int, int]:
    return tuple(input_size) if input_size else _guess_input_size(model)


# --- OpenVINO -----------------------------------------------------------------


def to_openvino(model: nn.Module, input_size: tuple[int, int, int] | None = None,
                calibration: Tensor | Iterable | None = None) -> Any:
    """An `openvino.Model` of `model` (eval mode, dynamic batch); int8 (NNCF) when `calibration`."""
    ov = require("openvino", "the OpenVINO backend")
    c, h, w = _input_size(model, input_size)
    model = copy.deepcopy(model).eval().float()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        ov_model = ov.convert_model(model, example_input=torch.randn(2, c, h, w), input=[-1, c, h, w])
    if calibration is not None:
        nncf = require("nncf", "int8 with OpenVINO")
        batches = _numpy_batches(calibration)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ov_model = nncf.quantize(ov_model, nncf.Dataset(batches), subset_size=len(batches))
    return ov_model


def compile_openvino(ov_model: Any, dtype: str, threads: int | None = None) -> Any:
    """A CompiledModel for the CPU at `threads` threads; fp32 runs in f32, bf16 and int8 in bf16
    where not quantized (OpenVINO's own choice on an AMX CPU)."""
    ov = require("openvino", "the OpenVINO backend")
    config = {"INFERENCE_NUM_THREADS": threads or torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_PRECISION_HINT": "f32" if dtype == "fp32" else "bf16"}
    if dtype == "int8" and not _cpu_bf16():
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return ov.Core().compile_model(ov_model, "CPU", config)


def _cpu_bf16() -> bool:
    return cpu_has_bf16()


def _openvino_runner(compiled: Any) -> Callable[[np.ndarray], np.ndarray]:
    request = compiled.create_infer_request()

    def run(x: np.ndarray) -> np.ndarray:
        return request.infer({0: x})[0]

    return run


def openvino_model(model: nn.Module, dtype: str = "fp32", calibration: Tensor | Iterable | None = None,
                   threads: int | None = None, input_size: tuple[int, int, int] | None = None) -> RuntimeModel:
    """`model` compiled by OpenVINO for the CPU (see the module docstring)."""
    _check("openvino", dtype, calibration)
    if dtype == "bf16" and not _cpu_bf16():
        warnings.warn("this CPU has no native bf16: OpenVINO runs the model in f32", stacklevel=2)
    ov_model = to_openvino(model, input_size, calibration if dtype == "int8" else None)
    threads = threads or torch.get_num_threads()
    compiled = compile_openvino(ov_model, dtype, threads)
    precision = compiled.get_property("INFERENCE_PRECISION_HINT")
    detail = f"precision {precision.get_type_name()}" + (", NNCF int8" if dtype == "int8" else "")
    return RuntimeModel(_openvino_runner(compiled), "openvino", dtype, threads, detail)


def save_openvino(model: nn.Module, path: str | Path, metadata: dict[str, str],
                  input_size: tuple[int, int, int] | None = None) -> Path:
    """Writes an OpenVINO IR (PATH.xml and PATH.bin, fp32 weights, dynamic batch) with `metadata`
    stored in its rt_info under "reslab"; returns the .xml path."""
    ov = require("openvino", "--format openvino")
    path = Path(path)
    check_output(path, (".xml",), "OpenVINO IR")
    weights = check_output(path.with_suffix(".bin"), (".bin",), "OpenVINO weights")
    if weights.exists() and not path.exists():
        raise ReslabError(f"{weights} exists and is not the weights of an IR named {path.name}; reslab does not "
                          "replace it: choose another name")
    ov_model = to_openvino(model, input_size)
    for key, value in metadata.items():
        ov_model.set_rt_info(value, ["reslab", key])
    with tempfile.TemporaryDirectory() as tmp:
        ov.save_model(ov_model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        for suffix in (".bin", ".xml"):  # the weights first: the .xml is what names the pair
            with output_file(path.with_suffix(suffix), (suffix,), "OpenVINO IR") as out:
                shutil.copyfile(Path(tmp, "model" + suffix), out)
    return path


# --- ONNX Runtime -------------------------------------------------------------


def _session(path: Path, threads: int) -> Any:
    ort = require("onnxruntime", "the ONNX Runtime backend")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_runner(session: Any) -> Callable[[np.ndarray], np.ndarray]:
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {name: x})[0]

    return run


def quantize_onnx(source: Path, target: Path, calibration: Tensor | Iterable) -> Path:
    """onnxruntime's static int8 quantization of an ONNX file: QDQ format, per-channel int8
    weights, uint8 activations (MinMax ranges over the calibration images)."""
    require("onnxruntime", "int8 with ONNX Runtime")
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = _numpy_batches(calibration)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"input": b} for b in batches])

        def get_next(self) -> dict | None:
            return next(self.items, None)

    prepared = target.with_name(target.stem + "-prep.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return target


def onnxruntime_model(model: nn.Module, dtype: str = "fp32", calibration: Tensor | Iterable | None = None,
                      threads: int | None = None, input_size: tuple[int, int, int] | None = None) -> RuntimeModel:
    """`model` exported to ONNX and run by ONNX Runtime on the CPU (see the module docstring)."""
    _check("onnxruntime", dtype, calibration)
    require("onnxruntime", "the ONNX Runtime backend")
    threads = threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, Path(tmp) / "model.onnx", _input_size(model, input_size))
        if dtype == "int8":
            path = quantize_onnx(path, Path(tmp) / "model-int8.onnx", calibration)
        session = _session(path, threads)  # reads the file whole: the directory may go
    return RuntimeModel(_onnx_runner(session), "onnxruntime", dtype, threads,
                        "QDQ int8" if dtype == "int8" else "")


# --- deployed files -----------------------------------------------------------

DEPLOYED_SUFFIXES = (".xml", ".onnx")


@dataclass(frozen=True)
class Deployed:
    """An OpenVINO IR or ONNX file ready to run, and what reslab stored in it."""

    model: RuntimeModel
    record: ModelRecord  # classes, normalization and input size always; "stream": resize S/0.875 + center crop S


def read_deployed(path: str | Path, threads: int | None = None) -> tuple[RuntimeModel, dict[str, str]]:
    """An .xml (OpenVINO IR) or .onnx file compiled for the CPU in fp32, and the metadata reslab stored in it."""
    path = Path(path)
    if path.suffix not in DEPLOYED_SUFFIXES:
        raise ReslabError(f"{path} is not an OpenVINO IR (.xml) or ONNX file")
    if not path.is_file():
        raise ReslabError(f"no such model file: {path}")
    threads = threads or torch.get_num_threads()
    if path.suffix == ".xml":
        ov = require("openvino", f"running {path.name}")
        try:
            ov_model = ov.Core().read_model(str(path))
        except RuntimeError as e:
            raise ReslabError(f"cannot read OpenVINO IR {path}: {str(e).strip().splitlines()[0]}") from None
        meta = {k: ov_model.get_rt_info(["reslab", k]).astype(str) for k in METADATA_KEYS
                if ov_model.has_rt_info(["reslab", k])}
        run = _openvino_runner(compile_openvino(ov_model, "fp32", threads))
        return RuntimeModel(run, "openvino", "fp32", threads), meta
    onnx = require("onnx", f"running {path.name}")
    try:
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        session = _session(path, threads)
    except Exception as e:  # onnx and onnxruntime raise their own types for a damaged file
        raise ReslabError(f"cannot read ONNX file {path}: {str(e).strip().splitlines()[0]}") from None
    return RuntimeModel(_onnx_runner(session), "onnxruntime", "fp32", threads), meta


def load_deployed(path: str | Path, threads: int | None = None) -> Deployed:
    """An exported .xml or .onnx file with the class names, normalization and input size that
    `reslab export` stores in it, ready to predict."""
    run, meta = read_deployed(path, threads)
    record = ModelRecord.from_metadata(meta)
    if lacks := record.lacks():
        raise ReslabError(f"{path} has no {', '.join(lacks)} recorded: export it with `reslab export` from a "
                          "checkpoint or run directory")
    return Deployed(run, record)
