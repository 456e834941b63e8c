"""`reslab bench`: the measuring machinery (not the speeds, which live in benchmarks/)."""

from __future__ import annotations

import json

import pytest
import torch

import reslab
from reslab import bench
from reslab.bench import _time_call, bench_inference, bench_train, machine_info, matmul_peak
from reslab.cli import main
from reslab.errors import ReslabError
from reslab.runtime import cpu_has_bf16


def test_peers_get_reslab_weights_and_agree() -> None:
    report = bench_inference(["resnet18"], batch=2, dtypes=["bf16"], compile=False, repeats=2,
                             latency=True, input_size=(3, 64, 64), min_seconds=0.01,
                             peak_size=256, peak_seconds=0.02, peers=[])
    by = {r.config: r for r in report.results}
    base = report.results[0]
    assert base.config == "torchvision eager fp32" and base.speedup == 1.0 and base.latency_speedup == 1.0
    # Same weights in torchvision, timm and reslab: the same function.
    assert by["timm eager fp32"].max_rel_diff < 1e-5
    assert 1e-5 < by["reslab optimize bf16"].max_rel_diff < 5e-2  # bf16 really ran, and is close
    for r in report.results:
        assert len(r.rounds) == 2 and r.images_per_s_min <= r.images_per_s <= r.images_per_s_max
        assert r.latency_ms > 0 and r.gflops > 0 and r.setup_s > 0
        assert r.speedup == pytest.approx(r.images_per_s / base.images_per_s)
        # Two rounds: the median of the two same-round ratios is their mean.
        paired = [a / b for a, b in zip(r.rounds, base.rounds, strict=True)]
        assert r.speedup_paired == pytest.approx(sum(paired) / 2)
    assert report.machine["torch"] == torch.__version__ and report.machine["threads"] >= 1
    json.loads(report.to_json())
    assert "timm eager fp32" in str(report)


def test_cifar_baseline_is_reslab_eager_and_int8_runs() -> None:
    report = bench_inference(["resnet20"], batch=4, dtypes=["int8"], compile=False, repeats=1,
                             latency=False, min_seconds=0.01, peak_size=256, peak_seconds=0.02, peers=[])
    names = [r.config for r in report.results]
    assert names == ["reslab eager fp32", "reslab optimize int8 (fx)"]  # without compile: FX's eager kernels
    assert report.results[1].latency_ms is None and report.results[1].max_rel_diff < 0.5


@pytest.mark.parametrize("native_bf16", [True, False])
def test_train_step_is_timed(monkeypatch, native_bf16: bool) -> None:
    # reslab's row takes the precision `reslab train` takes: bf16 autocast only where it is native
    monkeypatch.setattr(bench, "bf16_supported", lambda device: native_bf16)
    report = bench_train("resnet20", batch=8, compile=False, repeats=1, steps=1, peak_size=256, peak_seconds=0.02)
    mixed = "bf16" if native_bf16 else "fp32"
    assert [r.dtype for r in report.results] == ["fp32", mixed] and report.results[1].memory_format == "channels_last"
    assert report.results[1].config == f"reslab loader, {'bf16 autocast' if native_bf16 else 'fp32'}, CL, reslab step"
    no_bf16 = "no bf16 rows: cpu has no native bf16, so `reslab train` runs fp32 here"
    assert (no_bf16 in report.notes) != native_bf16
    assert all(r.images_per_s > 0 for r in report.results)
    from reslab.runtime import tune_allocator

    # the allocator setting applies to the baseline and reslab's rows alike, and the report says which
    allocator = [n for n in report.notes if n.startswith("allocator: ")]
    assert len(allocator) == 1 and ("freed memory kept" in allocator[0]) == tune_allocator()


def test_train_step_of_an_imagenet_net_uses_torchvision_as_baseline() -> None:
    report = bench_train("resnet18", batch=2, compile=False, repeats=1, steps=1, peak_size=256, peak_seconds=0.02)
    base, fast = report.results
    assert base.config == "torchvision eager fp32 NCHW" and base.source == "torchvision"
    assert fast.dtype == ("bf16" if cpu_has_bf16() else "fp32")
    assert fast.memory_format == "channels_last" and fast.input_size == (3, 224, 224)
    assert "no loading" in report.notes[0]


def test_matmul_peak_and_timer() -> None:
    assert matmul_peak("fp32", n=256, seconds=0.05) > 0.1
    assert matmul_peak("bf16", n=64, seconds=0.01) is None if not cpu_has_bf16() else matmul_peak("bf16", n=64) > 0
    assert _time_call(lambda: sum(range(1000)), torch.device("cpu"), 3) > 0
    assert "cpu" in machine_info()


def test_peaks_a_cpu_lacks_are_left_out_with_the_reason(monkeypatch) -> None:
    # an emulated bf16 or int8 matmul is tens of times slower than fp32: its "peak" means nothing
    monkeypatch.setattr(bench, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(bench, "cpu_has_int8_dot", lambda: False)
    assert matmul_peak("bf16", n=64) is None and matmul_peak("int8", n=64) is None
    report = bench_inference(["resnet20"], batch=2, dtypes=["fp32", "int8"], compile=False, repeats=1,
                             latency=False, min_seconds=0.01, peak_size=64, peak_seconds=0.01, peers=[])
    assert report.peaks_gflops["fp32"] > 0 and report.peaks_gflops["bf16"] is None
    assert "bf16 peak not measured: this CPU has no native bf16 (AVX512-BF16 or AMX); % peak left out for bf16" \
        in report.notes
    assert "int8 peak not measured: this CPU has no int8 dot product (VNNI or AMX); int8 % peak uses the bf16 peak " \
        "(none either)" in report.notes
    assert [r.peak_fraction is None for r in report.results] == [False, True]
    monkeypatch.setattr(bench, "cpu_has_int8_dot", lambda: True)
    assert matmul_peak("int8", n=64, seconds=0.01) > 0


def test_bad_arguments() -> None:
    with pytest.raises(ReslabError, match="dtype"):
        bench_inference(["resnet20"], dtypes=["fp16"])
    with pytest.raises(ReslabError, match="positive"):
        bench_inference(["resnet20"], batch=0)


def test_cli_bench_writes_json(tmp_path, capsys, monkeypatch) -> None:
    # by default every dtype, less bf16 on a CPU that would only emulate it
    import reslab.optimize

    monkeypatch.setattr(reslab.optimize, "bf16_supported", lambda device: False)
    out = tmp_path / "b.json"
    rc = main(["bench", "--models", "resnet20", "--batch", "2", "--no-compile",
               "--repeats", "1", "--no-latency", "--peers", "none", "--json", str(out)])
    assert rc == 0
    data = json.loads(out.read_text())
    assert data[0]["mode"] == "infer" and data[0]["results"][0]["batch"] == 2
    assert [r["dtype"] for r in data[0]["results"]] == ["fp32", "int8"]
    assert "resnet20" in capsys.readouterr().out
    assert main(["bench", "--models", "nope"]) == 2


def test_cli_export_onnx_from_safetensors(tmp_path, capsys) -> None:
    import reslab
    from reslab.export import save_safetensors

    weights = save_safetensors(reslab.create_model("resnet20", num_classes=3), tmp_path / "w.safetensors")
    rc = main(["export", str(weights), "--model", "resnet20", "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    assert rc == 0 and (tmp_path / "m.onnx").stat().st_size > 100_000
    diff = float(capsys.readouterr().out.split("max abs diff ")[1].split()[0])
    assert diff < 1e-4


def test_bench_times_the_step_that_train_takes(tmp_path):
    """`reslab bench --mode train` times `reslab train`'s own step: from the same weights and
    batches, three bench steps end where a three-step training run ends."""
    from reslab.bench import train_step_fn
    from reslab.train import load_checkpoint, preset, train
    from reslab.train.splits import load_data, make_loader

    torch.manual_seed(0)
    start = reslab.create_model("resnet20", depth=8, num_classes=10, in_chans=1)
    torch.save(start.state_dict(), tmp_path / "start.pth")
    cfg = preset("paper-cifar", data="digits", iters=3, milestones=[0.9, 0.95], amp="none", compile="off",
                 batch_size=32, val_size=0, augment=None, threads=1, device="cpu", model="resnet20",
                 model_args={"depth": 8}, init=str(tmp_path / "start.pth"), test=False)
    train(cfg, tmp_path / "run", progress=False)
    trained = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    loader = make_loader(load_data(cfg, with_test=False).train, cfg, True, torch.device("cpu"))
    batches = iter([loader.batch(0, i) for i in range(3)])
    step = train_step_fn(start, batches, fast=True, compile=False, bf16=False)
    for _ in range(3):
        step()
    for name, p in start.state_dict().items():
        torch.testing.assert_close(p, trained[name], rtol=1e-5, atol=1e-6, msg=name)
