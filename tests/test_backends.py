"""OpenVINO and ONNX Runtime driven from reslab: same outputs, files that carry their metadata,
predict on them, and the peer rows of `reslab bench`."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from torch import nn

from helpers import TOLERANCE, rel_err, trained_like
from reslab import backends
from reslab.cli import main
from reslab.errors import ReslabError
from reslab.optimize import optimize
from reslab.runtime import cpu_has_bf16

openvino = pytest.importorskip("openvino", reason="the OpenVINO backend needs openvino (pip install 'reslab[openvino]')")
pytest.importorskip("nncf", reason="OpenVINO int8 needs nncf (pip install 'reslab[openvino]')")
pytest.importorskip("onnxruntime", reason="the ONNX Runtime backend needs onnxruntime (pip install 'reslab[onnx]')")


@pytest.mark.parametrize(("backend", "dtype"), [("openvino", "fp32"), ("openvino", "bf16"), ("onnxruntime", "fp32")])
def test_backend_matches_eager(backend: str, dtype: str) -> None:
    model = trained_like("resnet20")
    x = torch.randn(5, 3, 32, 32)
    native = dtype != "bf16" or cpu_has_bf16()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fast = optimize(model, dtype, backend=backend, threads=1)
    assert native or any("no native bf16: OpenVINO runs the model in f32" in str(w.message) for w in caught)
    with torch.no_grad():
        want = model(x)
    for batch in (x, x[:1]):  # dynamic batch: any size, one compiled model
        got = fast(batch)
        assert got.dtype == torch.float32 and got.shape == (len(batch), 10)
    assert fast.backend == backend and fast.dtype == dtype and fast.threads == 1
    assert rel_err(fast(x), want) < TOLERANCE[dtype]
    if dtype == "bf16" and native:  # really bf16, not f32 under another name
        assert rel_err(fast(x), want) > 1e-5 and "bf16" in fast.detail
    elif dtype == "bf16":  # OpenVINO's choice on a CPU without bf16, and said so
        assert fast.detail == "precision f32" and rel_err(fast(x), want) < 1e-5


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_backend_int8_keeps_the_decisions(backend: str) -> None:
    model = trained_like("resnet20")
    torch.manual_seed(2)
    calib, x = torch.randn(64, 3, 32, 32), torch.randn(32, 3, 32, 32)
    fast = optimize(model, "int8", calibration=calib, backend=backend, threads=1)
    with torch.no_grad():
        want = model(x)
    got = fast(x)
    assert (got.argmax(1) == want.argmax(1)).float().mean().item() >= 0.9
    assert nn.functional.cosine_similarity(got, want, dim=1).min().item() > 0.98
    assert 1e-4 < rel_err(got, want) < 0.2  # quantized: not the float model's numbers


def test_backend_bad_requests_are_one_line() -> None:
    model = trained_like("resnet20")
    with pytest.raises(ReslabError, match="backend must be one of torch, openvino, onnxruntime"):
        optimize(model, backend="tensorrt")
    with pytest.raises(ReslabError, match="onnxruntime runs fp32, int8, not 'bf16'"):
        optimize(model, "bf16", backend="onnxruntime")
    with pytest.raises(ReslabError, match="int8 needs calibration"):
        optimize(model, "int8", backend="openvino")


def test_missing_package_says_how_to_install(monkeypatch) -> None:
    import importlib

    real = importlib.import_module

    def fake(name, *a, **k):
        if name == "openvino":
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(importlib, "import_module", fake)
    assert not backends.available("openvino")
    with pytest.raises(ReslabError, match=r"needs the openvino package: pip install 'reslab\[openvino\]'"):
        optimize(trained_like("resnet20"), backend="openvino")


@pytest.fixture(params=["memory"])
def tiny_run(request, tmp_path, noise_folder, capsys):
    imgs = noise_folder(classes=("cat", "dog", "eel"), per_class=6, side=16)
    run = tmp_path / "run"
    assert main(["train", "--model", "resnet20", "--data", f"imagefolder:{imgs}", "--iters", "2", "--quiet",
                 "--set", "batch_size=4", "--set", "val_size=3", "--set", "threads=1", "--set", "compile=off",
                 "--set", "device=cpu", "--set", f"loader={request.param}", "--set", "workers=0",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    return run, imgs


@pytest.mark.parametrize("tiny_run", ["memory", "stream"], indirect=True)
def test_exports_carry_metadata_and_predict_runs_on_them(tiny_run, tmp_path, capsys) -> None:
    # a streamed run evaluates at resize S/0.875 + center crop S: its exported files say so, and
    # predict on them fits an image as the checkpoint does
    import onnx
    from safetensors import safe_open

    run, imgs = tiny_run
    xml, onx = tmp_path / "out" / "m.xml", tmp_path / "out" / "m.onnx"
    assert main(["export", str(run), "--format", "openvino", "--out", str(xml)]) == 0
    assert main(["export", str(run), "--format", "onnx", "--out", str(onx)]) == 0
    out = capsys.readouterr()
    assert "openvino vs torch: max abs diff" in out.out and "random" not in out.err
    assert xml.with_suffix(".bin").stat().st_size > 1_000_000  # fp32 weights of ResNet-20 (0.27M params)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2
    meta = {p.key: p.value for p in onnx.load(str(onx)).metadata_props}
    ov_model = openvino.Core().read_model(str(xml))
    for key in ("classes", "mean", "std", "input_size", "loader", "preprocess"):
        assert ov_model.get_rt_info(["reslab", key]).astype(str) == meta[key]
    loader = json.loads((run / "config.json").read_text())["env"]["loader"]
    assert loader in ("memory", "stream") and meta["loader"] == loader
    side = 32 if loader == "stream" else 16  # streamed: the model's input size; in memory: the photos' own
    assert meta["preprocess"] == (f"shorter side resized to {37 if loader == 'stream' else 16} px, then the center "
                                  f"{side}x{side}")
    with safe_open(run / "model.safetensors", "pt") as f:
        assert f.metadata()["loader"] == loader
    assert json.loads(meta["classes"]) == ["cat", "dog", "eel"] and json.loads(meta["input_size"]) == [3, side, side]
    deployed = backends.load_deployed(xml)
    assert deployed.record.classes == ["cat", "dog", "eel"] and deployed.record.image_size == (3, side, side)
    assert deployed.record.loader == loader

    results = {}
    for source in (run, xml, onx):
        assert main(["predict", str(source), str(imgs / "dog"), "--json", "--topk", "3"]) == 0
        results[source.suffix] = json.loads(capsys.readouterr().out)
    assert len(results[""]) == 6
    for suffix in (".xml", ".onnx"):
        for want, got in zip(results[""], results[suffix], strict=True):
            assert got["file"] == want["file"]
            assert [t["class"] for t in got["top"]] == [t["class"] for t in want["top"]]
            for a, b in zip(got["top"], want["top"], strict=True):
                assert abs(a["prob"] - b["prob"]) < 1e-4


def test_export_from_a_name_says_weights_are_random(tmp_path, capsys) -> None:
    xml = tmp_path / "r.xml"
    assert main(["export", "--model", "resnet20", "--format", "openvino", "--out", str(xml)]) == 0
    assert "random (untrained) weights" in capsys.readouterr().err
    # no class names or normalization recorded: predict refuses in one line
    img = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32)).save(img)
    assert main(["predict", str(xml), str(img)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no classes, mean, std recorded" in err[0]


def test_openvino_export_never_replaces_a_users_file(tmp_path, capsys) -> None:
    xml = tmp_path / "m.xml"
    (tmp_path / "m.bin").write_text("my notes")
    assert main(["export", "--model", "resnet20", "--format", "openvino", "--out", str(xml)]) == 2
    assert "m.bin exists and is not the weights of an IR named m.xml" in capsys.readouterr().err
    assert (tmp_path / "m.bin").read_text() == "my notes" and not xml.exists()


def test_bench_times_the_peers_on_the_same_weights() -> None:
    from reslab.bench import bench_inference

    report = bench_inference(["resnet20"], batch=4, dtypes=["fp32", "int8"], compile=False, repeats=1,
                             latency=False, min_seconds=0.01, peak_size=64, peak_seconds=0.01,
                             peers=["openvino", "onnxruntime"])
    rows = {r.config: r for r in report.results}
    assert {"OpenVINO fp32", "OpenVINO int8 (NNCF)", "ONNX Runtime fp32", "ONNX Runtime int8 (QDQ static)"} <= set(rows)
    assert rows["OpenVINO fp32"].max_rel_diff < 1e-4 and rows["ONNX Runtime fp32"].max_rel_diff < 1e-4
    assert 1e-4 < rows["OpenVINO int8 (NNCF)"].max_rel_diff < 0.3
    assert rows["OpenVINO fp32"].source == "openvino" and rows["OpenVINO fp32"].images_per_s > 0
    assert {"openvino", "onnxruntime", "torchao"} & set(report.machine["packages"])
    assert "packages: " in str(report)
