"""`reslab.optimize`: each fast path against the eager fp32 model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from helpers import TOLERANCE, rel_err, trained_like
from reslab.errors import ReslabError
from reslab.optimize import InferenceModel, optimize
from reslab.quantize import int8_method, quantize_int8


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("name, size", [("resnet20", 32), ("resnet18", 64)])
def test_eager_paths_within_tolerance(name: str, size: int, dtype: str) -> None:
    model = trained_like(name)
    fast = optimize(model, dtype=dtype, compile=False)
    x = torch.randn(4, 3, size, size)
    with torch.no_grad():
        want = model(x)
    got = fast(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert rel_err(got, want) < TOLERANCE[dtype]
    # The weights really are in the asked dtype and layout, BN folded away.
    conv = fast.model.model.conv1
    assert conv.weight.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())


def test_bf16_is_not_exact() -> None:
    # Guards the tolerance test above against comparing fp32 with itself.
    model = trained_like("resnet20")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    assert rel_err(optimize(model, "bf16", compile=False)(x), want) > 1e-5


def test_compiled_with_freezing_matches_eager() -> None:
    model = trained_like("resnet20")
    fast = optimize(model, dtype="fp32", compile=True)
    assert isinstance(fast, InferenceModel) and fast.compiled
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        want = model(x)
    assert rel_err(fast(x), want) < TOLERANCE["fp32"]


@pytest.mark.slow
def test_compiled_bf16_matches_eager() -> None:
    model = trained_like("resnet18")
    fast = optimize(model, dtype="bf16", compile=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = model(x)
    assert rel_err(fast(x), want) < TOLERANCE["bf16"]


@pytest.mark.parametrize("compile", [True, False])
def test_int8_still_classifies(compile: bool) -> None:
    # Calibrate and test on two clusters of images the model separates clearly:
    # int8 must keep the decisions, and stay close on the logits.
    model = trained_like("resnet20", num_classes=10)
    torch.manual_seed(2)
    calib = torch.randn(64, 3, 32, 32)
    x = torch.randn(32, 3, 32, 32)
    fast = optimize(model, dtype="int8", calibration=calib, compile=compile)
    assert fast.dtype == "int8"
    # compiled: PT2E when torchao is installed; eager: FX graph mode's own int8 kernels
    assert fast.int8 == (int8_method() if compile else "fx")
    with torch.no_grad():
        want = model(x)
    got = fast(x)
    assert got.dtype == torch.float32 and got.shape == want.shape
    agree = (got.argmax(1) == want.argmax(1)).float().mean().item()
    cos = nn.functional.cosine_similarity(got, want, dim=1).min().item()
    assert agree >= 0.9, agree
    assert cos > 0.98, cos
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    if fast.int8 == "fx":
        # Really quantized: int8 convolutions, no float ones left.
        assert any(type(m).__module__.startswith("torch.ao.nn.intrinsic.quantized") for m in fast.modules())
        assert not any(type(m) is nn.Conv2d for m in fast.modules())
    else:
        # Every conv (19) and the classifier reads int8 weights per channel and a quantized input,
        # and conv+add+ReLU was annotated (its output quantized once): Inductor lowers these to int8 kernels.
        graph = fast.model.model.graph
        targets = [str(n.target) for n in graph.nodes if n.op == "call_function"]
        convs = [n for n in graph.nodes if n.op == "call_function" and "conv2d" in str(n.target)]
        assert len(convs) == 19 and not any("batch_norm" in t for t in targets)
        assert targets.count("quantized_decomposed.dequantize_per_channel.default") == 20
        for conv in convs:
            assert "dequantize_per_tensor" in str(conv.args[0].target)
            assert "dequantize_per_channel" in str(conv.args[1].target)


def test_int8_pt2e_annotates_blocks_that_reuse_one_relu() -> None:
    # torchvision's blocks call one nn.ReLU twice; without a source record per node the
    # quantizer stops with "Input partition has more than one output node".
    pytest.importorskip("torchao", reason="PT2E int8 needs torchao (pip install 'reslab[int8]')")
    import torchvision

    model = torchvision.models.resnet18(num_classes=10).eval()
    quantized = quantize_int8(model, torch.randn(4, 3, 64, 64), method="pt2e")
    adds = [n for n in quantized.graph.nodes if n.op == "call_function" and "add" in str(n.target)]
    assert len(adds) == 8  # one per BasicBlock, each between a conv and its ReLU


def test_input_model_is_untouched() -> None:
    model = trained_like("resnet20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimize(model, "bf16", compile=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_bad_arguments() -> None:
    with pytest.raises(ReslabError, match="dtype"):
        optimize("resnet20", dtype="fp16")
    with pytest.raises(ReslabError, match="calibration"):
        optimize("resnet20", dtype="int8")
    with pytest.raises(ReslabError, match="unknown model"):
        optimize("resnet21")
    with pytest.raises(ReslabError, match="empty"):
        optimize("resnet20", dtype="int8", calibration=[])


def test_many_optimized_models_all_stay_compiled() -> None:
    # Every InferenceModel shares one forward; past Dynamo's default 8 cache entries per code
    # object it would silently run every later model eagerly (int8 PT2E then ~10x slower).
    from torch._dynamo.utils import counters

    def tiny() -> nn.Module:
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(2))

    torch.manual_seed(0)
    before = counters["stats"]["unique_graphs"]
    for _ in range(5):
        model = tiny()
        model(torch.randn(1, 3, 6, 6))  # materialize the lazy layer
        fast = optimize(model.eval(), "fp32")
        for batch in (1, 2):
            fast(torch.randn(batch, 3, 6, 6))
    assert counters["stats"]["unique_graphs"] - before == 10
