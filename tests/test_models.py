"""Every registered model, and the figures of the papers and torchvision."""

from __future__ import annotations

import pickle

import pytest
import torch
import torchvision
from torch import nn

import reslab
from reslab.models import CifarResNet, ResNet, ShortcutA
from reslab.summary import summary

ALL = reslab.list_models()
# The deepest nets (hundreds of blocks of Python dispatch) and the widest
# (over 40M parameters) run their full checks in the slow tier only.
HUGE = {"resnet1202", "preact_resnet1001"}
BIG = {n for n in ALL if reslab.model_info(n).params > 40e6}
FAST = [n for n in ALL if n not in HUGE | BIG]


def slow_unless(fast: list[str]) -> list:
    return [n if n in fast else pytest.param(n, marks=pytest.mark.slow) for n in ALL]


def small_input(name: str, batch: int = 2) -> torch.Tensor:
    """The smallest input a net takes whole: its total stride (32, or 4 for CIFAR nets)."""
    c, h, _ = reslab.model_info(name).input_size
    size = 32 if h > 32 else 16
    return torch.randn(batch, c, size, size)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # Every test compiles new instances of the same classes: start from an empty
    # cache so dynamo's per-function recompile limit is never reached.
    torch._dynamo.reset()
    yield


def test_registry_has_every_paper_name():
    expected = {
        "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
        "resnet50_v1", "resnet101_v1", "resnet152_v1",
        "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
        "wide_resnet50_2", "wide_resnet101_2", "plain18", "plain34",
        "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet1202",
        "plain20", "plain32", "plain44", "plain56", "plain110",
        "preact_resnet18", "preact_resnet34", "preact_resnet50", "preact_resnet101",
        "preact_resnet152", "preact_resnet110", "preact_resnet164", "preact_resnet1001",
    }
    assert expected <= set(ALL)
    assert reslab.list_models("resnet5*") == ["resnet50", "resnet50_v1", "resnet56"]
    assert reslab.list_models("preact_resnet1") == [
        "preact_resnet1001", "preact_resnet101", "preact_resnet110",
        "preact_resnet152", "preact_resnet164", "preact_resnet18",
    ]


def test_unknown_name_lists_closest():
    with pytest.raises(reslab.UnknownModelError, match="did you mean resnet50"):
        reslab.create_model("resnet_50")


def test_duplicate_registration_refused():
    with pytest.raises(ValueError, match="already registered"):
        reslab.register_model("resnet18", (3, 224, 224), "")(lambda: None)


def check_train_and_eval(model: nn.Module, x: torch.Tensor, bf16: bool) -> None:
    """One train step (forward + backward) and one eval forward, fp32 or bf16 autocast."""
    model.train()
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    assert out.shape == (x.shape[0], model.num_classes)
    assert out.dtype == (torch.bfloat16 if bf16 else torch.float32)
    out.float().logsumexp(1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("name", slow_unless([n for n in ALL if n not in HUGE]))
def test_forward_backward_fp32(name):
    torch.manual_seed(0)
    check_train_and_eval(reslab.create_model(name), small_input(name), bf16=False)


@pytest.mark.parametrize("name", slow_unless(FAST))
def test_forward_backward_bf16_channels_last(name):
    torch.manual_seed(0)
    model = reslab.create_model(name).to(memory_format=torch.channels_last)
    x = small_input(name).contiguous(memory_format=torch.channels_last)
    check_train_and_eval(model, x, bf16=True)


@pytest.mark.parametrize("name", sorted(HUGE))
def test_huge_nets_forward(name):
    # Train-mode BN: with fresh running statistics, eval mode lets 600 residual
    # additions grow the activations past float32's range.
    model = reslab.create_model(name).train()
    with torch.no_grad():
        out = model(small_input(name, batch=1))
    assert out.shape == (1, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", slow_unless(FAST))
def test_compiles_without_graph_breaks(name):
    # fullgraph=True fails on any graph break; the eager backend keeps it quick.
    # Zero-initialised branches keep the 1000-layer nets finite in eval mode with
    # fresh BN statistics; the traced graph is the same either way.
    model = reslab.create_model(name, zero_init_residual=name in HUGE).eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = small_input(name)
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x))


@pytest.mark.parametrize("name", ["resnet20", pytest.param("resnet18", marks=pytest.mark.slow)])
def test_inductor_compile_train_step(name):
    torch.manual_seed(0)
    model = reslab.create_model(name)
    compiled = torch.compile(model)
    x = small_input(name, batch=4)
    out = compiled(x)
    out.sum().backward()
    ref = reslab.create_model(name)
    ref.load_state_dict(model.state_dict())
    torch.testing.assert_close(out, ref(x), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["resnet20", "resnet18", "resnet50"])
def test_torch_export(name):
    model = reslab.create_model(name).eval()
    x = small_input(name)
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    x3 = small_input(name, batch=3)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(x3), model(x3))


# --- exactness against torchvision ---------------------------------------------
TORCHVISION = [
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
    "wide_resnet50_2", "wide_resnet101_2",
]


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_weights_load_strict_and_match(name):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)(weights=None).eval()
    ours = reslab.create_model(name).eval()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [
        (k, v.shape) for k, v in theirs.state_dict().items()
    ]
    ours.load_state_dict(theirs.state_dict(), strict=True)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_timm_resnet50_weights_load():
    timm = pytest.importorskip("timm")
    theirs = timm.create_model("resnet50", pretrained=False).eval()
    ours = reslab.create_model("resnet50").eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), atol=1e-5, rtol=1e-5)


def test_v1_moves_the_stride_to_the_first_1x1():
    v15, v1 = reslab.create_model("resnet50"), reslab.create_model("resnet50_v1")
    assert v15.layer2[0].conv1.stride == (1, 1) and v15.layer2[0].conv2.stride == (2, 2)
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)
    # Same weights, different function.
    v1.load_state_dict(v15.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(v1.eval()(x), v15.eval()(x))


def test_parameter_counts_known():
    assert reslab.model_info("resnet50").params == 25_557_032
    assert reslab.model_info("resnet18").params == 11_689_512
    assert reslab.model_info("resnet101").params == 44_549_160
    assert reslab.model_info("wide_resnet50_2").params == 68_883_240


# Paper, Table 6 (CIFAR-10, option A): millions of parameters, as printed.
CIFAR_PARAMS = {"resnet20": 0.27, "resnet32": 0.46, "resnet44": 0.66, "resnet56": 0.85,
                "resnet110": 1.7, "resnet1202": 19.4}


@pytest.mark.parametrize("name,millions", CIFAR_PARAMS.items())
def test_cifar_params_table6(name, millions):
    digits = 1 if millions >= 1 else 2
    assert round(reslab.model_info(name).params / 1e6, digits) == millions


def test_preact_params_eccv2016():
    # Identity Mappings, Table 2: ResNet-164 1.7M, ResNet-1001 10.2M (the
    # standard 1001-layer construction counts 10.33M, 1.3% above the print).
    assert round(reslab.model_info("preact_resnet164").params / 1e6, 1) == 1.7
    assert reslab.model_info("preact_resnet1001").params == pytest.approx(10.2e6, rel=0.02)
    assert reslab.model_info("resnet20").params == 269_722  # the usual 0.27M implementation


# Paper, Table 1: FLOPs (multiply-adds) of the v1 nets; torchvision's docs: v1.5 GFLOPS.
PAPER_MACS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50_v1": 3.8, "resnet101_v1": 7.6,
              "resnet152_v1": 11.3}
TORCHVISION_GMACS = {"resnet18": 1.81, "resnet34": 3.66, "resnet50": 4.09, "resnet101": 7.8,
                     "resnet152": 11.51, "resnext50_32x4d": 4.23, "resnext101_32x8d": 16.41,
                     "resnext101_64x4d": 15.46, "wide_resnet50_2": 11.4, "wide_resnet101_2": 22.75}


@pytest.mark.parametrize("name,gmacs", [*PAPER_MACS.items(), *TORCHVISION_GMACS.items()])
def test_macs_within_2_percent(name, gmacs):
    assert reslab.model_info(name).macs / 1e9 == pytest.approx(gmacs, rel=0.02)


def test_model_info_is_frozen():
    info = reslab.model_info("resnet20")
    assert info.input_size == (3, 32, 32) and info.num_classes == 10
    assert "1512.03385" in info.reference
    with pytest.raises(AttributeError):
        info.params = 0


# --- shortcuts and variants -----------------------------------------------------
def test_shortcut_options_a_b_c_and_plain():
    counts = {}
    for option in ("A", "B", "C", None):
        model = CifarResNet(20, shortcut=option)
        counts[option] = sum(p.numel() for p in model.parameters())
        kinds = {type(b.downsample).__name__ for s in (model.layer1, model.layer2, model.layer3) for b in s}
        if option == "A":
            assert kinds == {"NoneType", "ShortcutA"}
        elif option == "B":
            assert kinds == {"NoneType", "Sequential"}
        elif option == "C":
            assert kinds == {"Sequential"}
        else:
            assert kinds == {"NoneType"} and not any(b.residual for b in model.layer1)
    # A adds nothing; B adds 2 projections (conv + BN); C a projection in all 9 blocks.
    assert counts["A"] == counts[None] == 269_722
    assert counts["B"] - counts["A"] == (16 * 32 + 64) + (32 * 64 + 128)
    identity = 3 * (16 * 16 + 32) + 2 * (32 * 32 + 64) + 2 * (64 * 64 + 128)
    assert counts["C"] - counts["B"] == identity


def test_shortcut_a_pads_zeros_and_subsamples():
    x = torch.arange(2 * 16 * 4 * 4, dtype=torch.float32).reshape(2, 16, 4, 4)
    y = ShortcutA(16, 32, stride=2)(x)
    assert y.shape == (2, 32, 2, 2)
    torch.testing.assert_close(y[:, :16], x[:, :, ::2, ::2])
    assert (y[:, 16:] == 0).all()
    torch.testing.assert_close(ShortcutA(16, 16, stride=2)(x), x[:, :, ::2, ::2])  # subsampling alone
    torch.testing.assert_close(ShortcutA(16, 32)(x)[:, :16], x)  # stride 1 by default: new channels alone
    with pytest.raises(ValueError, match=r"shortcut A can only add channels \(32 -> 16\); use 'B' or 'C'"):
        ShortcutA(32, 16)
    with pytest.raises(ValueError, match="shortcut_pad must be 'append' or 'both', got 'left'"):
        ShortcutA(16, 32, pad="left")


def test_make_shortcut_builds_each_option():
    from reslab.models.blocks import make_shortcut

    bn = nn.BatchNorm2d
    assert make_shortcut(None, 16, 32, 2, bn) is None  # a plain network has no shortcut at all
    assert make_shortcut("A", 16, 16, 1, bn) is None and make_shortcut("B", 16, 16, 1, bn) is None  # identity
    a = make_shortcut("A", 16, 32, 2, bn)
    assert isinstance(a, ShortcutA) and (a.in_planes, a.out_planes, a.stride, a.pad) == (16, 32, 2, "append")
    assert make_shortcut("A", 16, 16, 2, bn, pad="both").pad == "both"  # the shape changes by the stride alone
    for option, planes, stride in [("B", 32, 1), ("B", 16, 2), ("C", 16, 1)]:  # C projects even the identity
        conv, norm = make_shortcut(option, 16, planes, stride, bn)
        assert (conv.in_channels, conv.out_channels) == (16, planes)
        assert conv.kernel_size == (1, 1) and conv.stride == (stride, stride)
        assert conv.bias is None and isinstance(norm, bn) and norm.num_features == planes
    bare = make_shortcut("B", 16, 32, 2, None)  # pre-activation: the block's BN-ReLU comes first
    assert len(bare) == 1 and isinstance(bare[0], nn.Conv2d) and bare[0].out_channels == 32
    with pytest.raises(ValueError) as e:
        make_shortcut("D", 16, 32, 2, bn)
    assert str(e.value) == "shortcut must be 'A', 'B', 'C' or None (plain), got 'D'"


def test_block_class_by_name_and_activation_order():
    from reslab.models.blocks import (
        BasicBlock,
        Bottleneck,
        PreActBasicBlock,
        PreActBottleneck,
        block_class,
    )

    assert [block_class(b, p) for b in ("basic", "bottleneck") for p in (False, True)] == [
        BasicBlock, PreActBasicBlock, Bottleneck, PreActBottleneck]
    with pytest.raises(ValueError) as e:
        block_class("wide", False)
    assert str(e.value) == "block must be 'basic' or 'bottleneck', got 'wide'"


def test_models_pickle():
    # Option A is a module, not a lambda: the whole model pickles.
    model = reslab.create_model("resnet20")
    clone = pickle.loads(pickle.dumps(model))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(x), model.eval()(x))


def test_plain_block_has_no_shortcut_path():
    model = reslab.create_model("plain20").eval()
    block = model.layer1[0]
    # Zeroing the branch's last BN makes the block output zero (no identity added).
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)
    with torch.no_grad():
        assert (block(torch.randn(1, 16, 8, 8)) == 0).all()


def test_zero_init_residual_makes_blocks_identity():
    model = reslab.create_model("resnet20", zero_init_residual=True).eval()
    assert all((b.bn2.weight == 0).all() for b in model.layer1)
    x = torch.randn(1, 16, 8, 8).relu()
    with torch.no_grad():
        torch.testing.assert_close(model.layer1(x), x)
    pre = reslab.create_model("preact_resnet164", zero_init_residual=True).eval()
    with torch.no_grad():
        x = torch.randn(1, 64, 8, 8)
        torch.testing.assert_close(pre.layer1[1](x), x)


def test_preact_identity_path_is_clean():
    model = reslab.create_model("preact_resnet110").eval()
    block = model.layer1[1]
    assert not hasattr(block, "bn3") and block.downsample is None
    nn.init.zeros_(block.conv2.weight)
    x = torch.randn(1, 16, 8, 8)  # negative values survive: no ReLU after the addition
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)
    assert hasattr(model, "bn_final")


def test_drop_path_linear_and_eval_deterministic():
    model = reslab.create_model("resnet56", drop_path_rate=0.2)
    blocks = [b for s in (model.layer1, model.layer2, model.layer3) for b in s]
    rates = [getattr(b.drop_path, "p", 0.0) for b in blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)
    assert all(a < b for a, b in zip(rates[1:], rates[2:], strict=False))
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
        assert model.train()(x).shape == (2, 10)  # per-sample ("row") drops in training
    with pytest.raises(reslab.ReslabError, match="bad argument for model 'resnet20': drop_path_rate"):
        reslab.create_model("resnet20", drop_path_rate=1.5)


def test_cifar_depth_validation():
    assert CifarResNet(29, block="bottleneck").layers == (3, 3, 3)
    assert CifarResNet(8).layers == (1, 1, 1)
    with pytest.raises(ValueError, match="6n\\+2"):
        CifarResNet(21)
    with pytest.raises(ValueError, match="9n\\+2"):
        CifarResNet(21, block="bottleneck")
    with pytest.raises(ValueError, match="shortcut"):
        CifarResNet(20, shortcut="D")


def test_in_chans_num_classes_and_classifier_reset():
    model = reslab.create_model("resnet18", in_chans=1, num_classes=7)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 7)
    model.reset_classifier(3)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
    model.reset_classifier(0)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 512)


def test_forward_features_and_head():
    model = reslab.create_model("resnet50").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (1, 2048, 2, 2)
        assert model.forward_head(feats, pre_logits=True).shape == (1, 2048)
        torch.testing.assert_close(model.forward_head(feats), model(x))


@pytest.mark.parametrize(
    "name,shapes",
    [
        ("resnet18", [(64, 32), (64, 16), (128, 8), (256, 4), (512, 2)]),
        ("resnet50", [(64, 32), (256, 16), (512, 8), (1024, 4), (2048, 2)]),
        ("resnet20", [(16, 64), (16, 64), (32, 32), (64, 16)]),
        ("preact_resnet164", [(16, 64), (64, 64), (128, 32), (256, 16)]),
    ],
)
def test_features_only(name, shapes):
    model = reslab.create_model(name, features_only=True).eval()
    size = 64
    with torch.no_grad():
        feats = model(torch.randn(1, 3, size, size))
    assert [(f.shape[1], f.shape[2]) for f in feats] == shapes
    assert [(i["num_chs"], size // i["reduction"]) for i in model.feature_info] == shapes
    assert model.fc is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="layers"):
        ResNet(layers=(2, 2, 2))
    with pytest.raises(ValueError, match="stride_in"):
        ResNet("bottleneck", (1, 1, 1, 1), stride_in="2x2")
    with pytest.raises(ValueError, match="groups=1"):
        ResNet("basic", groups=32)
    with pytest.raises(reslab.ReslabError, match="bad argument"):
        reslab.create_model("resnet18", widht=3)
    with pytest.raises(reslab.ReslabError, match="bad argument for model 'resnet20': shortcut must be one of"):
        reslab.create_model("resnet20", shortcut="D")


# --- summary ---------------------------------------------------------------------
def test_summary_resnet34_stage_shapes():
    s = summary("resnet34", depth=1)
    shapes = {r.name: r.output_shape for r in s.rows}
    assert shapes["conv1"] == (1, 64, 112, 112)
    assert shapes["maxpool"] == (1, 64, 56, 56)
    assert shapes["layer1"] == (1, 64, 56, 56)
    assert shapes["layer2"] == (1, 128, 28, 28)
    assert shapes["layer3"] == (1, 256, 14, 14)
    assert shapes["layer4"] == (1, 512, 7, 7)
    assert s.params == 21_797_672
    assert s.macs == reslab.model_info("resnet34").macs
    assert sum(r.params for r in s.rows) == s.params  # depth-1 rows partition the model


def test_summary_resnet50_ends_at_7x7_and_scales_with_batch():
    s = summary("resnet50", batch_size=4, depth=2)
    rows = {r.name: r for r in s.rows}
    assert rows["layer4"].output_shape == (4, 2048, 7, 7)
    assert rows["layer4.2"].depth == 2
    assert s.macs == 4 * reslab.model_info("resnet50").macs


def test_summary_rejects_bad_input():
    with pytest.raises(reslab.ReslabError, match="at least 32"):
        summary("resnet50", input_size=(3, 8, 8))
    with pytest.raises(reslab.ReslabError, match="3-channel"):
        summary("resnet20", input_size=(1, 32, 32))


def test_stride_in_is_refused_where_there_is_no_1x1_conv() -> None:
    # a basic block has only 3x3 convs: "1x1" used to be accepted and ignored
    with pytest.raises(reslab.ReslabError, match="applies to bottleneck blocks only"):
        reslab.create_model("resnet18", stride_in="1x1")
    v1 = reslab.create_model("resnet50_v1")
    assert v1.layer2[0].conv1.stride == (2, 2) and v1.layer2[0].conv2.stride == (1, 1)


BLOCK_CLASSES = ["BasicBlock", "Bottleneck", "PreActBasicBlock", "PreActBottleneck"]


@pytest.mark.parametrize("name", BLOCK_CLASSES)
def test_a_block_by_default_keeps_its_input_and_adds_its_branch_to_it(name):
    # defaults: stride 1, identity shortcut, residual, no drop path, groups 1, width 64
    from reslab.models import blocks

    block_cls = getattr(blocks, name)
    inplanes = 16 * block_cls.expansion
    torch.manual_seed(0)
    block = block_cls(inplanes, 16).train()
    x = torch.randn(4, inplanes, 8, 8)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.stride == (1, 1) and c.groups == 1 for c in convs)
    identity = x if name.startswith("PreAct") else torch.relu(x)  # post-activation ends in a ReLU
    out = block(x)
    assert out.shape == x.shape
    assert ((out - identity).flatten(1).abs().amax(1) > 1e-3).all()  # every sample gets its branch
    block.zero_init_last()
    torch.testing.assert_close(block(x), identity, rtol=0, atol=0)  # a zero branch leaves the shortcut


@pytest.mark.parametrize("name", ["PreActBasicBlock", "BasicBlock"])
def test_basic_blocks_refuse_groups_and_width(name):
    from reslab.models import blocks

    for kw in ({"groups": 2}, {"base_width": 128}):
        with pytest.raises(ValueError, match="^the basic block supports only groups=1 and width_per_group=64$"):
            getattr(blocks, name)(16, 16, **kw)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50_32x4d", "resnet50_v1"])
def test_module_tree_prints_as_torchvisions(name):
    # every layer's settings (ReLU in place, bias-free convs, BN eps and momentum) as torchvision
    # has them; reslab's blocks add only an unused drop-path slot
    import re

    tv = getattr(torchvision.models, name.removesuffix("_v1"))()
    if name.endswith("_v1"):  # the paper's v1 strides in the first 1x1 conv of a bottleneck
        for block in (tv.layer2[0], tv.layer3[0], tv.layer4[0]):
            block.conv1.stride, block.conv2.stride = (2, 2), (1, 1)
    ours = re.sub(r"\n *\(drop_path\): Identity\(\)", "", repr(reslab.create_model(name)))
    assert ours == repr(tv)


@pytest.mark.parametrize("name", ["preact_resnet18", "preact_resnet50", "preact_resnet110"])
def test_preact_activations_run_in_place(name):
    relus = [m for m in reslab.create_model(name).modules() if isinstance(m, nn.ReLU)]
    assert relus and all(m.inplace for m in relus)


@pytest.mark.parametrize("name", ["Bottleneck", "PreActBottleneck"])
def test_bottleneck_width_groups_and_where_it_strides(name):
    from reslab.models import blocks

    cls = getattr(blocks, name)
    assert cls(256, 64).conv1.out_channels == 64  # by default the inner width is planes
    wide = cls(64, 16, base_width=128)  # Wide ResNet: twice the inner width
    grouped = cls(64, 16, groups=4, base_width=4)  # ResNeXt 4x4d: width 16 * 4/64 * 4 = 4
    assert (wide.conv1.out_channels, wide.conv2.groups) == (32, 1)
    assert (grouped.conv1.out_channels, grouped.conv2.groups) == (4, 4)
    down = nn.Sequential(nn.Conv2d(64, 64, 1, stride=2, bias=False), nn.BatchNorm2d(64))
    v15, v1 = cls(64, 16, stride=2, downsample=down), cls(64, 16, stride=2, downsample=down, stride_in="1x1")
    assert (v15.conv1.stride, v15.conv2.stride) == ((1, 1), (2, 2))  # v1.5: the 3x3 strides
    assert (v1.conv1.stride, v1.conv2.stride) == ((2, 2), (1, 1))  # v1, the paper's: the first 1x1
    assert v15(torch.randn(2, 64, 8, 8)).shape == v1(torch.randn(2, 64, 8, 8)).shape == (2, 64, 4, 4)


@pytest.mark.parametrize("option", ["A", "B"])
def test_a_preact_shortcut_projects_the_preactivated_input_and_option_a_the_raw_one(option):
    # He et al. 2016's code: a projection shortcut takes BN-ReLU(x); option A (zero padding) stays x's identity
    from reslab.models.blocks import PreActBasicBlock

    torch.manual_seed(0)
    if option == "A":
        down = ShortcutA(16, 32, 2)
    else:
        down = nn.Sequential(nn.Conv2d(16, 32, 1, stride=2, bias=False), nn.BatchNorm2d(32))
    block = PreActBasicBlock(16, 32, stride=2, downsample=down).eval()
    nn.init.uniform_(block.bn1.weight, 0.5, 1.5)
    nn.init.uniform_(block.bn1.bias, -0.5, 0.5)
    block.zero_init_last()  # the output is the shortcut alone
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        want = down(x if option == "A" else torch.relu(block.bn1(x)))
        torch.testing.assert_close(block(x), want, rtol=0, atol=0)
