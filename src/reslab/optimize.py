"""`optimize(model, dtype)`: a model made fast for inference, same outputs.

The steps (each measured on CPUs in benchmarks/RESULTS.md): eval mode and conv+BN folding (fewer kernels, nothing lost), channels_last
(oneDNN's native layout: no reorders around every convolution), bf16 weights
and activations (AVX512-BF16 / AMX throughput, half the memory traffic), and
torch.compile with freezing (weights become constants, so Inductor prepacks
them for oneDNN and fuses the elementwise tails into the convolutions).
int8 goes through `reslab.quantize.quantize_int8` instead (PT2E with torchao, then the
same compile with freezing, which lowers it to oneDNN int8 kernels).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor, nn

from . import backends
from ._lazy import callable_module
from .backends import BACKENDS, RuntimeModel
from .errors import ReslabError
from .models import create_model
from .quantize import fold_bn, int8_method, quantize_int8
from .runtime import cpu_has_bf16

Dtype = Literal["fp32", "bf16", "int8"]
DTYPES: tuple[str, ...] = ("fp32", "bf16", "int8")
_TORCH_DTYPE = {"fp32": torch.float32, "bf16": torch.bfloat16}

class _Cast(nn.Module):
    """Casts the input to the model's dtype and layout, and the logits back to
    float32, inside the compiled region so the casts fuse with the first and
    last kernels."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.to(self.dtype, memory_format=self.memory_format)).float()


def _compiling(on: bool):
    """The settings the compilations inside this context need: Inductor's freezing (weights
    become constants: prepacked for oneDNN, BN and quantization folded), its C++ wrapper (the
    per-kernel calls from generated C++ rather than Python; benchmarks/RESULTS.md), and room for every
    optimized model of the process in Dynamo's cache. All InferenceModels share one forward, so
    past Dynamo's default of 8 entries per code object (e.g. a 5th model at 2 batch sizes) it
    would stop compiling that forward and run every later model eagerly, unoptimized."""
    if not on:
        return contextlib.nullcontext()
    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config

    stack = contextlib.ExitStack()
    stack.enter_context(inductor_config.patch(freezing=True, cpp_wrapper=True))
    stack.enter_context(dynamo_config.patch(recompile_limit=_CACHE_ENTRIES, accumulated_recompile_limit=_CACHE_ENTRIES))
    return stack


_CACHE_ENTRIES = 1024


class InferenceModel(nn.Module):
    """What `optimize` returns: call it on (N, C, H, W) float32 images.

    Always runs without autograd and returns float32 logits (N, num_classes),
    whatever the internal dtype. `dtype`, `compiled` and `channels_last` say
    what was done; `model` is the transformed (uncompiled) network.
    """

    def __init__(self, model: nn.Module, dtype: str, compiled: bool, channels_last: bool,
                 int8: str | None = None) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.compiled = compiled
        self.channels_last = channels_last
        self.int8 = int8  # "pt2e" or "fx": how int8 was quantized
        # Kept outside the module tree so state_dict() is not duplicated under _orig_mod.
        run = model
        if compiled:
            # dynamic=False: each batch size gets its own static graph, which is what
            # oneDNN weight prepacking under freezing needs to pick its best kernels.
            # Freezing is switched on around each call (see forward), not through
            # options={"freezing": True}, which Inductor does not apply to a PT2E int8 graph
            # (it fails on onednn.qconv_prepack).
            run = torch.compile(model, dynamic=False)
        object.__setattr__(self, "_run", run)

    def forward(self, x: Tensor) -> Tensor:
        # Freezing only applies to graphs compiled with grad disabled.
        with torch.no_grad(), _compiling(self.compiled):
            return self._run(x)

    def extra_repr(self) -> str:
        int8 = f", int8={self.int8}" if self.int8 else ""
        return f"dtype={self.dtype}{int8}, compiled={self.compiled}, channels_last={self.channels_last}"


_NOTED: set[str] = set()


def _note_once(message: str) -> None:
    """One line on stderr, once per process: which path ran when it is not the best one."""
    if message not in _NOTED:
        _NOTED.add(message)
        print(f"note: {message}", file=sys.stderr)


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether bf16 convolutions have native hardware support on `device`."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def optimize(
    model: nn.Module | str,
    dtype: Dtype = "fp32",
    compile: bool = True,
    calibration: Tensor | Iterable | None = None,
    channels_last: bool = True,
    backend: str = "torch",
    threads: int | None = None,
    input_size: tuple[int, int, int] | None = None,
) -> InferenceModel | RuntimeModel:
    """A fast inference version of `model` (a module or a registered name).

    dtype: "fp32" (same numbers up to rounding), "bf16" (about 1e-2 relative
    on the logits), or "int8" (post-training quantization, CPU only, needs
    `calibration`: real normalized images, a (N, C, H, W) tensor or an
    iterable of batches or (images, labels) pairs).
    compile: torch.compile with freezing; the first call per batch size
    compiles (tens of seconds on CPU), later calls are fast. int8 compiles the
    PT2E graph (torchao installed), or without compile (or torchao) runs FX
    graph mode's eager kernels; `.int8` says which.
    backend: "torch" (the paths above), or "openvino" / "onnxruntime": the model
    converted for that runtime on the CPU, with the same contract (tensor in,
    float32 logits out; see `reslab.backends`); `threads` and `input_size`
    (default: the model's) apply to them.
    The input model is not modified.
    """
    if dtype not in DTYPES:
        raise ReslabError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if isinstance(model, str):
        model = create_model(model)
    if not isinstance(model, nn.Module):
        raise ReslabError(f"optimize needs an nn.Module or a registered model name, got {type(model).__name__}")
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    if backend not in BACKENDS:
        raise ReslabError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend != "torch":
        if device.type != "cpu":
            raise ReslabError(f"the {backend} backend runs on the CPU; the model is on {device}")
        build = {"openvino": backends.openvino_model, "onnxruntime": backends.onnxruntime_model}[backend]
        return build(model, dtype, calibration, threads, input_size)

    if dtype == "int8":
        if calibration is None:
            raise ReslabError("int8 needs calibration images: pass calibration=<(N, C, H, W) tensor or loader>")
        if device.type != "cpu":
            raise ReslabError(f"int8 quantization runs on CPU only; the model is on {device}")
        # PT2E needs Inductor to become int8 kernels; without compiling, FX's eager kernels are the fast path.
        method = int8_method() if compile else "fx"
        if method == "fx" and compile:
            _note_once("int8 through FX graph mode (deprecated in PyTorch): install torchao for the PT2E "
                       "path, pip install 'reslab[int8]'")
        quantized = quantize_int8(model, calibration, method=method)
        # PT2E graphs become int8 oneDNN kernels only under Inductor; FX-quantized modules
        # run their own kernels eagerly (torch.compile cannot lower them: compile is ignored).
        return InferenceModel(_Cast(quantized, torch.float32, channels_last), "int8",
                              compile and method == "pt2e", channels_last, int8=method)

    if calibration is not None:
        warnings.warn("calibration is used only for dtype='int8'; ignoring it", stacklevel=2)
    if dtype == "bf16" and not bf16_supported(device):
        warnings.warn(f"{device} has no native bf16 support: bf16 will be emulated and slow", stacklevel=2)
    net = fold_bn(model).requires_grad_(False)
    net = net.to(dtype=_TORCH_DTYPE[dtype], memory_format=torch.channels_last if channels_last else torch.preserve_format)
    return InferenceModel(_Cast(net, _TORCH_DTYPE[dtype], channels_last), dtype, compile, channels_last)


callable_module(__name__)  # `reslab.optimize(...)` is this module's optimize()
