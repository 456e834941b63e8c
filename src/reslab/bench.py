"""Throughput and latency of reslab's fast paths, side by side with the peers.

Everything is measured in one process on one input: the baseline a user
would write (torchvision's model, eager, fp32, NCHW; for the CIFAR nets,
which torchvision lacks, reslab's own model run the same plain way), timm's
model where timm has it, and reslab's configurations (`reslab.optimize`).
The peers get the same weights as reslab (the state-dict keys are equal), so
every configuration's outputs are also compared with the baseline's.

Timing protocol, because the machine may be shared and noisy:
- set-up (build, compile, first calls) is timed separately and reported,
  never mixed into the throughput;
- the timed repeats are interleaved: each round times every configuration
  once, so a slow spell hits all of them alike; the baseline of the first
  round and of the last are reported, to show the drift;
- median and spread (min..max) over the rounds; on CUDA, CUDA events with a
  synchronize, on CPU perf_counter.
Fraction of peak: achieved multiply-adds (2 FLOPs each, from
`reslab.summary.count_macs`) over a matmul peak measured here in the same
dtype (int8: torch._int_mm when the build has it for this device).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from .backends import DTYPES as PEER_DTYPES
from .backends import available
from .data import Dataset, Loader
from .errors import ReslabError, is_whole
from .models import create_model
from .models.flops import count_macs
from .models.registry import default_input_size
from .optimize import DTYPES as OPTIMIZE_DTYPES
from .optimize import bf16_supported, optimize
from .quantize import int8_method
from .runtime import (
    MMAP_THRESHOLD,
    TRIM_THRESHOLD,
    Dist,
    cpu_flags,
    cpu_has_bf16,
    cpu_has_int8_dot,
    cpu_name,
    tune_allocator,
)
from .train import preset
from .train.setup import place, precision, wrap
from .train.step import build_optimizer, train_step

STANDARD_MODELS = ("resnet50", "resnet20")
_TORCHVISION = {"resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
                "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2"}


# --- machine ----------------------------------------------------------------


def machine_info(device: torch.device | str = "cpu") -> dict:
    """What the figures were measured on: CPU/GPU, flags, torch, threads."""
    device = torch.device(device)
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_name(),
        "cpu_flags": list(cpu_flags()),
        "device": str(device),
        "packages": _versions(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda)
    return info


def _versions() -> dict[str, str]:
    """Versions of the installed packages whose paths or rows a report may contain."""
    from importlib import metadata

    found = {}
    for package in ("torchvision", "timm", "torchao", "openvino", "nncf", "onnxruntime", "onnx"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def _process_setup(device: torch.device) -> None:
    """What `reslab train` sets for the whole process, here for every configuration, the baseline too:
    cuDNN autotuning on a GPU, freed memory kept for reuse on a CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        tune_allocator()


def _process_notes(device: torch.device) -> list[str]:
    if device.type == "cuda":
        return [f"cudnn.benchmark={torch.backends.cudnn.benchmark}, "
                f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32} (fp32 convolutions may run as TF32), "
                f"matmul precision {torch.get_float32_matmul_precision()}"]
    kept = (f"freed memory kept for reuse (glibc malloc: mmap threshold {MMAP_THRESHOLD >> 20} MiB, "
            f"trim threshold {TRIM_THRESHOLD >> 20} MiB)")
    return [f"allocator: {kept if tune_allocator() else 'as the process found it'}, every configuration"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(fn: Callable[[], object], device: torch.device, inner: int = 1) -> float:
    """Seconds per call of `fn`, averaged over `inner` back-to-back calls."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1000 / inner
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    return (time.perf_counter() - t0) / inner


def matmul_peak(dtype: str, device: torch.device | str = "cpu", n: int | None = None, seconds: float = 1.0
                ) -> float | None:
    """Measured GFLOP/s (int8: GOP/s) of an n x n x n matmul in `dtype`; None if unsupported,
    or on a CPU without native instructions for it (bf16 without AVX512-BF16/AMX, int8 without
    VNNI/AMX: there torch emulates it, tens of times slower than fp32, and the "peak" would take
    minutes to measure and mean nothing).

    n defaults to 2048 on CPU and 8192 on CUDA (smaller products leave a GPU idle).
    """
    device = torch.device(device)
    native = {"bf16": cpu_has_bf16, "int8": cpu_has_int8_dot}
    if device.type == "cpu" and dtype in native and not native[dtype]():
        return None
    n = n or (8192 if device.type == "cuda" else 2048)
    if dtype == "int8":
        a = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=device)
        b = torch.randint(-128, 127, (n, n), dtype=torch.int8, device=device)

        def fn():
            return torch._int_mm(a, b)
    else:
        tdtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        a = torch.randn(n, n, dtype=tdtype, device=device)
        b = torch.randn(n, n, dtype=tdtype, device=device)

        def fn():
            return a @ b
    try:
        fn()
    except (RuntimeError, NotImplementedError):
        return None
    _sync(device)
    per = _time_call(fn, device)
    reps = max(1, int(seconds / max(per, 1e-6)))
    best = min(_time_call(fn, device, reps) for _ in range(3))
    return 2 * n**3 / best / 1e9


def _peaks(dtypes: tuple[str, ...], device: torch.device, n: int | None, seconds: float
           ) -> tuple[dict[str, float | None], list[str]]:
    """matmul_peak of each dtype, and a note for each that could not be measured (and why)."""
    peaks = {d: matmul_peak(d, device, n, seconds) for d in dtypes}
    why = {"bf16": "this CPU has no native bf16 (AVX512-BF16 or AMX)",
           "int8": "this CPU has no int8 dot product (VNNI or AMX)"} if device.type == "cpu" else {}
    notes = [f"{d} peak not measured: {why.get(d, 'not supported here')}; % peak left out for {d}"
             for d in dtypes if peaks[d] is None and d != "int8"]
    if "int8" in dtypes and peaks["int8"] is None:
        notes.append(f"int8 peak not measured: {why.get('int8', 'no torch._int_mm here')}; "
                     "int8 % peak uses the bf16 peak" + ("" if peaks.get("bf16") else " (none either)"))
    return peaks, notes


# --- configurations ---------------------------------------------------------


@dataclass
class Config:
    """One way to run a model: what it is, and a callable of the input."""

    name: str  # e.g. "torchvision eager fp32"
    source: str  # torchvision | timm | reslab
    dtype: str
    memory_format: str
    compiled: bool
    build: Callable[[], Callable[[Tensor], Tensor]]
    baseline: bool = False


@dataclass
class Result:
    """Measured figures of one configuration (times in seconds, rates per second)."""

    model: str
    config: str
    source: str
    dtype: str
    memory_format: str
    compiled: bool
    batch: int
    input_size: tuple[int, int, int]
    images_per_s: float = 0.0  # median over rounds
    images_per_s_min: float = 0.0
    images_per_s_max: float = 0.0
    setup_s: float = 0.0  # build + compile + warm-up, excluded from the rates
    latency_ms: float | None = None  # batch 1, median
    latency_ms_min: float | None = None
    latency_ms_max: float | None = None
    speedup: float | None = None  # median images/s over the baseline's median
    speedup_paired: float | None = None  # median over rounds of (this / baseline in the same round)
    latency_speedup: float | None = None  # baseline latency over this one
    gflops: float = 0.0  # achieved, 2 x MACs x images/s
    peak_fraction: float | None = None
    max_rel_diff: float | None = None  # max |out - baseline out| / max |baseline out|
    rounds: list[float] = field(default_factory=list)  # images/s per round


@dataclass
class Report:
    machine: dict
    mode: str
    peaks_gflops: dict
    results: list[Result]
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def __str__(self) -> str:
        m = self.machine
        head = (f"{m.get('gpu') or m['cpu']}  |  torch {m['torch']}  |  {m['threads']} threads  |  "
                f"flags {' '.join(m['cpu_flags']) or '-'}  |  peak GFLOP/s "
                + ", ".join(f"{k} {v:.0f}" for k, v in self.peaks_gflops.items() if v))
        lines = [head, "packages: " + (", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items()) or "-")]
        cols = ("model", "config", "batch", "img/s", "min..max", "x base", "paired", "b1 ms", "x base",
                "% peak", "setup s", "max rel diff")
        rows = []
        for r in self.results:
            rows.append((
                r.model, r.config, str(r.batch), f"{r.images_per_s:.1f}",
                f"{r.images_per_s_min:.1f}..{r.images_per_s_max:.1f}",
                _fmt(r.speedup, "{:.2f}x"), _fmt(r.speedup_paired, "{:.2f}x"), _fmt(r.latency_ms, "{:.1f}"), _fmt(r.latency_speedup, "{:.2f}x"),
                _fmt(None if r.peak_fraction is None else 100 * r.peak_fraction, "{:.1f}"),
                f"{r.setup_s:.1f}", _fmt(r.max_rel_diff, "{:.1e}"),
            ))
        widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
        fmt = "  ".join(f"{{:{'<' if i < 2 else '>'}{w}}}" for i, w in enumerate(widths))
        lines += [fmt.format(*cols), fmt.format(*("-" * w for w in widths))]
        lines += [fmt.format(*row) for row in rows]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def _eager(model: nn.Module, dtype: str, channels_last: bool) -> Callable[[Tensor], Tensor]:
    """The plain way: eval mode, no_grad, optional autocast and channels_last."""
    model = model.eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    device = next(model.parameters()).device

    def run(x: Tensor) -> Tensor:
        with torch.no_grad():
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if dtype == "bf16":
                with torch.autocast(device.type, dtype=torch.bfloat16):
                    return model(x).float()
            return model(x)

    return run


def _peer(name: str, source: str, state: dict, device: torch.device) -> nn.Module | None:
    """torchvision's or timm's model of `name` with reslab's weights, or None if it has none."""
    if source == "torchvision":
        import torchvision

        if name not in _TORCHVISION:
            return None
        model = getattr(torchvision.models, name)(num_classes=state["fc.weight"].shape[0])
    else:
        try:
            import timm
        except ImportError:
            return None
        if name not in timm.list_models():
            return None
        model = timm.create_model(name, pretrained=False, num_classes=state["fc.weight"].shape[0])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        return None  # same name, different architecture: not comparable
    return model.to(device).eval()


def inference_configs(
    name: str, model: nn.Module, dtypes: list[str], compile: bool, calibration: Tensor, device: torch.device,
    peers: list[str] | tuple[str, ...] = (),
) -> list[Config]:
    """Baseline, peers and reslab configurations for one model.

    peers: other runtimes ("openvino", "onnxruntime") timed on the same weights in each dtype of
    `dtypes` they run; they are what `optimize(model, dtype, backend=...)` returns.
    """
    state = model.state_dict()
    configs = []
    tv = _peer(name, "torchvision", state, device)
    base_model = tv if tv is not None else model
    configs.append(Config(f"{'torchvision' if tv is not None else 'reslab'} eager fp32", "torchvision"
                          if tv is not None else "reslab", "fp32", "NCHW", False,
                          lambda: _eager(base_model, "fp32", False), baseline=True))
    tm = _peer(name, "timm", state, device)
    if tm is not None:
        configs.append(Config("timm eager fp32", "timm", "fp32", "NCHW", False, lambda: _eager(tm, "fp32", False)))
    for dtype in dtypes:
        if dtype == "int8" and device.type != "cpu":
            continue
        if dtype == "bf16":
            configs.append(Config("reslab eager bf16 autocast CL", "reslab", "bf16", "channels_last", False,
                                  lambda: _eager(model, "bf16", True)))
        for comp in ([False, True] if compile else [False]):
            if dtype == "fp32" and not comp:
                continue  # folded eager fp32 is within noise of the baseline
            label = f"reslab optimize {dtype}{' compiled' if comp else ''}"
            if dtype == "int8":
                label = f"reslab optimize int8 ({int8_method() if comp else 'fx'}{' compiled' if comp else ''})"
            configs.append(Config(label, "reslab", dtype, "channels_last", comp,
                                  lambda d=dtype, c=comp: optimize(model, d, compile=c, calibration=calibration)))
    for backend in peers if device.type == "cpu" else ():
        for dtype in (d for d in dtypes if d in PEER_DTYPES[backend]):
            label = f"{PEER_NAMES[backend]} {dtype}{PEER_INT8[backend] if dtype == 'int8' else ''}"
            configs.append(Config(label, backend, dtype, "NCHW", True,
                                  lambda b=backend, d=dtype: optimize(model, d, calibration=calibration, backend=b,
                                                                      input_size=tuple(calibration.shape[1:]))))
    return configs


PEER_NAMES = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}
PEER_INT8 = {"openvino": " (NNCF)", "onnxruntime": " (QDQ static)"}


def available_peers() -> list[str]:
    """The runtimes `reslab bench` compares with that are installed here."""
    return [b for b in PEER_NAMES if available(b)]


def bench_inference(
    models: list[str] | tuple[str, ...] = STANDARD_MODELS,
    batch: int = 16,
    dtypes: list[str] | tuple[str, ...] = ("fp32", "bf16", "int8"),
    compile: bool = True,
    repeats: int = 5,
    latency: bool = True,
    device: str | torch.device = "cpu",
    input_size: tuple[int, int, int] | None = None,
    min_seconds: float = 0.3,
    log: Callable[[str], None] | None = None,
    peak_size: int | None = None,
    peak_seconds: float = 1.0,
    peers: list[str] | tuple[str, ...] | None = None,
) -> Report:
    """Images/s at `batch` and batch-1 latency of every configuration of each model.

    peers: the other runtimes to time beside reslab's paths (default: those installed,
    `available_peers()`).
    Each configuration is built and warmed up once per batch size (set-up
    time reported), then `repeats` interleaved rounds are timed; a round of
    a fast model calls it back to back for at least `min_seconds`.
    `peak_size`, `peak_seconds`: the square matmul that measures the peak (default side
    2048 on CPU, 8192 on CUDA), and how long.
    """
    device = torch.device(device)
    _process_setup(device)
    _check(batch, repeats, dtypes)
    log = log or (lambda s: None)
    peaks, notes = _peaks(("fp32", "bf16", "int8"), device, peak_size, peak_seconds)
    results = []
    for name in models:
        size = input_size or default_input_size(name)
        torch.manual_seed(0)
        model = create_model(name).to(device).eval()
        macs = count_macs(model, (1, *size), device=device)
        # Calibration for int8 timing only; accuracy is measured on real images elsewhere.
        calibration = torch.randn(32, *size)
        configs = inference_configs(name, model, list(dtypes), compile, calibration, device,
                                    available_peers() if peers is None else peers)
        x = torch.randn(batch, *size, device=device)
        rows = _measure(name, configs, x, repeats, min_seconds, device, log)
        if latency:
            lat = _measure(name, configs, x[:1], repeats, min_seconds / 3, device, log)
            for r, b1 in zip(rows, lat, strict=True):
                r.latency_ms = 1000 / b1.images_per_s
                r.latency_ms_min, r.latency_ms_max = 1000 / b1.images_per_s_max, 1000 / b1.images_per_s_min
                r.setup_s += b1.setup_s
            for r in rows:
                r.latency_speedup = r.latency_ms and rows[0].latency_ms / r.latency_ms
        for r in rows:
            _speedups(r, rows[0])
            r.gflops = 2 * macs * r.images_per_s / 1e9
            peak = peaks.get(r.dtype) or peaks["bf16"]
            r.peak_fraction = r.gflops / peak if peak else None
        base_rounds = rows[0].rounds
        notes.append(f"{name}: baseline {base_rounds[0]:.1f} img/s in the first round, "
                     f"{base_rounds[-1]:.1f} in the last")
        notes.append(_fastest(name, rows, batch))
        results += rows
    notes += _process_notes(device)
    return Report(machine_info(device), "infer", peaks, results, notes)


def _fastest(name: str, rows: list[Result], batch: int) -> str:
    """Which configuration led, at `batch` and at batch 1 (a peer runtime's row is what
    `reslab.optimize(..., backend=...)` returns)."""
    best = max(rows, key=lambda r: r.images_per_s)
    line = f"{name}: fastest at batch {batch}: {best.config} ({best.speedup:.2f}x)"
    timed = [r for r in rows if r.latency_ms]
    if timed:
        quick = min(timed, key=lambda r: r.latency_ms)
        line += f"; at batch 1: {quick.config} ({quick.latency_ms:.1f} ms)"
    return line


def _speedups(r: Result, base: Result) -> None:
    # The paired ratio cancels load that changes between rounds but not within one.
    r.speedup = r.images_per_s / base.images_per_s
    r.speedup_paired = statistics.median(a / b for a, b in zip(r.rounds, base.rounds, strict=True))


def _check(batch: int, repeats: int, dtypes) -> None:
    if not (is_whole(batch, 1) and is_whole(repeats, 1)):
        raise ReslabError(f"batch and repeats must be positive, got {batch} and {repeats}")
    bad = [d for d in dtypes if d not in OPTIMIZE_DTYPES]
    if bad:
        raise ReslabError(f"unknown dtype {bad[0]!r}; choose from {', '.join(OPTIMIZE_DTYPES)}")


def _measure(name: str, configs: list[Config], x: Tensor, repeats: int, min_seconds: float,
             device: torch.device, log: Callable[[str], None]) -> list[Result]:
    runs, results, outputs = [], [], []
    for cfg in configs:
        log(f"{name} b{x.shape[0]}: setting up {cfg.name}")
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fn = cfg.build()
            out = fn(x)  # compiles, for compiled configurations
            fn(x)
        _sync(device)
        setup = time.perf_counter() - t0
        per_call = _time_call(lambda fn=fn: fn(x), device)
        inner = max(1, int(min_seconds / max(per_call, 1e-6)))
        runs.append((fn, inner))
        outputs.append(out.float())
        results.append(Result(name, cfg.name, cfg.source, cfg.dtype, cfg.memory_format, cfg.compiled,
                              x.shape[0], tuple(x.shape[1:]), setup_s=setup))
    base = outputs[0]
    for r, out in zip(results, outputs, strict=True):
        r.max_rel_diff = ((out - base).abs().max() / base.abs().max()).item()
    for i in range(repeats):
        for r, (fn, inner) in zip(results, runs, strict=True):
            r.rounds.append(x.shape[0] / _time_call(lambda fn=fn: fn(x), device, inner))
        log(f"{name} b{x.shape[0]}: round {i + 1}/{repeats}: "
            + ", ".join(f"{r.config} {r.rounds[-1]:.1f}" for r in results))
    for r in results:
        r.images_per_s = statistics.median(r.rounds)
        r.images_per_s_min, r.images_per_s_max = min(r.rounds), max(r.rounds)
    return results


# --- training step ----------------------------------------------------------


def _synthetic_cifar(n: int = 2048, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    return Dataset(images, labels, [str(i) for i in range(10)], (0.49, 0.48, 0.45), (0.25, 0.24, 0.26),
                   "synthetic-cifar", "train")


def _plain_batches(ds, batch: int):
    """The typical CIFAR input pipeline: per-image torchvision transforms in a DataLoader."""
    from torchvision.transforms import v2

    transform = v2.Compose([
        v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
        v2.ToDtype(torch.float32, scale=True), v2.Normalize(ds.mean, ds.std),
    ])

    class _Set(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(ds)

        def __getitem__(self, i: int):
            return transform(ds.images[i]), ds.labels[i]

    while True:
        yield from torch.utils.data.DataLoader(_Set(), batch_size=batch, shuffle=True, drop_last=True)


def _fast_batches(ds, batch: int, channels_last: bool, device: torch.device):
    # The whole uint8 set lives on the device; augmentation happens there, batched.
    loader = Loader(ds, batch_size=batch, train=True, channels_last=channels_last, drop_last=True,
                    device=device)
    while True:
        yield from loader


def train_step_fn(model: nn.Module, batches, fast: bool, compile: bool, bf16: bool) -> Callable[[], Tensor]:
    """One step on the next batch; returns the loss.

    fast=True: the step `reslab train` takes (`reslab.train.step.train_step` with the
    paper-cifar recipe's optimizer: SGD momentum 0.9, weight decay 1e-4, foreach), channels_last,
    bf16 autocast if `bf16`, and with `compile` torch.compile of the model (on a CPU with reslab's
    compiled BatchNorm2d, as `reslab train` does). fast=False: the plain fp32 NCHW eager PyTorch
    step (SGD, momentum 0.9, weight decay 1e-4) it is compared with.
    """
    device = next(model.parameters()).device
    model.train()
    if not fast:
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        loss_fn = nn.CrossEntropyLoss()

        def plain_step() -> Tensor:
            x, y = next(batches)
            loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss.detach()

        return plain_step
    cfg = preset("paper-cifar", amp="bf16" if bf16 else "none", compile="on" if compile else "off")
    model = place(model, cfg, device)
    optimizer = build_optimizer(model, cfg)
    amp, scaler = precision(cfg, device)
    forward = wrap(model, cfg, 0, Dist(), device)

    def step() -> Tensor:
        x, y = next(batches)
        return torch.tensor(train_step(forward, optimizer, x, y, cfg, amp, scaler)[0])

    return step


def _device_batches(batch: int, size: tuple[int, int, int], num_classes: int, channels_last: bool,
                    device: torch.device, n: int = 4):
    """A few fixed random batches already on `device`, cycled: the model's work alone, no loading."""
    g = torch.Generator().manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    xs = [torch.randn(batch, *size, generator=g).to(device, memory_format=fmt) for _ in range(n)]
    ys = [torch.randint(0, num_classes, (batch,), generator=g).to(device) for _ in range(n)]
    while True:
        yield from zip(xs, ys, strict=True)


def bench_train(
    model_name: str = "resnet20",
    batch: int = 128,
    compile: bool = True,
    repeats: int = 5,
    steps: int = 5,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] | None = None,
    peak_size: int | None = None,
    peak_seconds: float = 1.0,
) -> Report:
    """Training images/s of one step, plain fp32 eager vs reslab's switches.

    CIFAR nets (32x32): the loader is included; synthetic uint8 images (its
    work does not depend on the pixels) through the typical per-image
    transforms for the baseline and reslab's batched loader for the rest.
    Larger nets (ImageNet-sized, e.g. for a GPU table): a few random batches
    already on the device, the model's step alone, and torchvision's model as
    the baseline where it has one. `steps` steps per timed round, rounds
    interleaved. `peak_size`: side of the matmul that measures the peak
    (default 2048 on CPU, 8192 on CUDA).
    """
    device = torch.device(device)
    _process_setup(device)
    _check(batch, repeats, ["fp32"])
    log = log or (lambda s: None)
    size = default_input_size(model_name)
    cifar = size[1:] == (32, 32)
    ds = _synthetic_cifar() if cifar else None
    # (label, fast: channels_last + the step `reslab train` takes (+ reslab loader for CIFAR), compiled, dtype)
    plain = "plain fp32 eager NCHW, per-image transforms" if cifar else "eager fp32 NCHW"
    fast = "reslab loader, " if cifar else "reslab "
    # the precision `reslab train` takes here: bf16 autocast where the hardware runs it natively
    native = bf16_supported(device)
    mixed = "bf16" if native else "fp32"
    variants = [(plain, False, False, "fp32"),
                (f"{fast}{'bf16 autocast' if native else 'fp32'}, CL, reslab step", True, False, mixed)]
    if compile:
        variants += [(f"{fast}fp32, CL, reslab step, compiled", True, True, "fp32")]
        variants += [(f"{fast}bf16 autocast, CL, reslab step, compiled", True, True, "bf16")] if native else []
    results, steppers = [], []
    for label, is_fast, comp, dtype in variants:
        fmt = "channels_last" if is_fast else "NCHW"
        torch.manual_seed(0)
        model = create_model(model_name).to(device)
        source = "reslab" if is_fast else "plain"
        if not is_fast and not cifar:
            peer = _peer(model_name, "torchvision", model.state_dict(), device)
            if peer is not None:
                model, source = peer, "torchvision"
        label = label if is_fast or cifar else f"{source} {label}"
        if cifar:
            batches = _fast_batches(ds, batch, True, device) if is_fast else _plain_batches(ds, batch)
            if not is_fast and device.type != "cpu":
                batches = ((x.to(device, non_blocking=True), y.to(device)) for x, y in batches)
        else:
            batches = _device_batches(batch, size, model.fc.out_features, is_fast, device)
        log(f"train {model_name}: setting up {label}")
        t0 = time.perf_counter()
        step = train_step_fn(model, batches, is_fast, comp, dtype == "bf16")
        for _ in range(2):
            step()
        _sync(device)
        steppers.append(step)
        results.append(Result(model_name, label, source, dtype, fmt, comp, batch,
                              size, setup_s=time.perf_counter() - t0))
    for i in range(repeats):
        for r, step in zip(results, steppers, strict=True):
            r.rounds.append(batch / _time_call(step, device, steps))
        log(f"train round {i + 1}/{repeats}: " + ", ".join(f"{r.config} {r.rounds[-1]:.0f}" for r in results))
    macs = count_macs(create_model(model_name), (1, *size), device="cpu")
    peaks, peak_notes = _peaks(("fp32", "bf16"), device, peak_size, peak_seconds)
    for r in results:
        r.images_per_s = statistics.median(r.rounds)
        r.images_per_s_min, r.images_per_s_max = min(r.rounds), max(r.rounds)
        _speedups(r, results[0])
        r.gflops = 3 * 2 * macs * r.images_per_s / 1e9  # backward costs about twice the forward
        peak = peaks.get(r.dtype)
        r.peak_fraction = r.gflops / peak if peak else None
    data = ("loader batch" if cifar else "a batch already on the device (no loading)")
    notes = [f"train step = {data} + forward + backward + SGD (paper-cifar: momentum 0.9, weight decay 1e-4), {steps} steps per round",
             f"baseline {results[0].rounds[0]:.0f} img/s in the first round, {results[0].rounds[-1]:.0f} in the last"]
    if not native:
        notes.append(f"no bf16 rows: {device.type} has no native bf16, so `reslab train` runs fp32 here")
    notes += peak_notes + _process_notes(device)
    return Report(machine_info(device), "train", peaks, results, notes)
