"""Every named network, a registered builder each; keyword arguments override its defaults.

    reslab.create_model("resnet50", num_classes=10)   # == zoo.resnet50(num_classes=10)
"""

from __future__ import annotations

from .registry import register_model
from .resnet import CifarResNet, ResNet

IMAGENET = (3, 224, 224)
CIFAR = (3, 32, 32)

HE2015 = "He et al. 2015, Deep Residual Learning for Image Recognition, arXiv:1512.03385"
HE2016 = "He et al. 2016, Identity Mappings in Deep Residual Networks, arXiv:1603.05027"
XIE2017 = "Xie et al. 2017, Aggregated Residual Transformations (ResNeXt), arXiv:1611.05431"
ZAGORUYKO2016 = "Zagoruyko & Komodakis 2016, Wide Residual Networks, arXiv:1605.07146"

# Block and blocks per stage of the ImageNet nets (Table 1 of He et al. 2015).
BASIC_18 = {"block": "basic", "layers": (2, 2, 2, 2)}
BASIC_34 = {"block": "basic", "layers": (3, 4, 6, 3)}
BOTTLENECK_50 = {"block": "bottleneck", "layers": (3, 4, 6, 3)}
BOTTLENECK_101 = {"block": "bottleneck", "layers": (3, 4, 23, 3)}
BOTTLENECK_152 = {"block": "bottleneck", "layers": (3, 8, 36, 3)}


# ImageNet ResNets: v1.5 (stride in the 3x3, torchvision's layout).
@register_model("resnet18", IMAGENET, HE2015)
def resnet18(**overrides) -> ResNet:
    return ResNet(**{**BASIC_18, **overrides})


@register_model("resnet34", IMAGENET, HE2015)
def resnet34(**overrides) -> ResNet:
    return ResNet(**{**BASIC_34, **overrides})


@register_model("resnet50", IMAGENET, HE2015)
def resnet50(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_50, **overrides})


@register_model("resnet101", IMAGENET, HE2015)
def resnet101(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_101, **overrides})


@register_model("resnet152", IMAGENET, HE2015)
def resnet152(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_152, **overrides})


# v1: the paper's layout, stride in the first 1x1 of the bottleneck.
@register_model("resnet50_v1", IMAGENET, HE2015)
def resnet50_v1(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_50, "stride_in": "1x1", **overrides})


@register_model("resnet101_v1", IMAGENET, HE2015)
def resnet101_v1(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_101, "stride_in": "1x1", **overrides})


@register_model("resnet152_v1", IMAGENET, HE2015)
def resnet152_v1(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_152, "stride_in": "1x1", **overrides})


# Plain twins (no shortcuts), the paper's Table 2.
@register_model("plain18", IMAGENET, HE2015)
def plain18(**overrides) -> ResNet:
    return ResNet(**{**BASIC_18, "shortcut": None, **overrides})


@register_model("plain34", IMAGENET, HE2015)
def plain34(**overrides) -> ResNet:
    return ResNet(**{**BASIC_34, "shortcut": None, **overrides})


# Pre-activation blocks (He et al. 2016).
@register_model("preact_resnet18", IMAGENET, HE2016)
def preact_resnet18(**overrides) -> ResNet:
    return ResNet(**{**BASIC_18, "preact": True, **overrides})


@register_model("preact_resnet34", IMAGENET, HE2016)
def preact_resnet34(**overrides) -> ResNet:
    return ResNet(**{**BASIC_34, "preact": True, **overrides})


@register_model("preact_resnet50", IMAGENET, HE2016)
def preact_resnet50(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_50, "preact": True, **overrides})


@register_model("preact_resnet101", IMAGENET, HE2016)
def preact_resnet101(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_101, "preact": True, **overrides})


@register_model("preact_resnet152", IMAGENET, HE2016)
def preact_resnet152(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_152, "preact": True, **overrides})


# ResNeXt and Wide ResNet: grouped or wider 3x3 convolutions in the bottleneck.
@register_model("resnext50_32x4d", IMAGENET, XIE2017)
def resnext50_32x4d(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_50, "groups": 32, "width_per_group": 4, **overrides})


@register_model("resnext101_32x8d", IMAGENET, XIE2017)
def resnext101_32x8d(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_101, "groups": 32, "width_per_group": 8, **overrides})


@register_model("resnext101_64x4d", IMAGENET, XIE2017)
def resnext101_64x4d(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_101, "groups": 64, "width_per_group": 4, **overrides})


@register_model("wide_resnet50_2", IMAGENET, ZAGORUYKO2016)
def wide_resnet50_2(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_50, "width_per_group": 128, **overrides})


@register_model("wide_resnet101_2", IMAGENET, ZAGORUYKO2016)
def wide_resnet101_2(**overrides) -> ResNet:
    return ResNet(**{**BOTTLENECK_101, "width_per_group": 128, **overrides})


# CIFAR nets of the paper (section 4.2: 6n+2 layers, option A shortcuts).
@register_model("resnet20", CIFAR, HE2015)
def resnet20(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 20, **overrides})


@register_model("resnet32", CIFAR, HE2015)
def resnet32(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 32, **overrides})


@register_model("resnet44", CIFAR, HE2015)
def resnet44(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 44, **overrides})


@register_model("resnet56", CIFAR, HE2015)
def resnet56(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 56, **overrides})


@register_model("resnet110", CIFAR, HE2015)
def resnet110(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 110, **overrides})


@register_model("resnet1202", CIFAR, HE2015)
def resnet1202(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 1202, **overrides})


# Their plain twins (Figure 6).
@register_model("plain20", CIFAR, HE2015)
def plain20(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 20, "shortcut": None, **overrides})


@register_model("plain32", CIFAR, HE2015)
def plain32(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 32, "shortcut": None, **overrides})


@register_model("plain44", CIFAR, HE2015)
def plain44(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 44, "shortcut": None, **overrides})


@register_model("plain56", CIFAR, HE2015)
def plain56(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 56, "shortcut": None, **overrides})


@register_model("plain110", CIFAR, HE2015)
def plain110(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 110, "shortcut": None, **overrides})


# Pre-activation CIFAR nets (He et al. 2016); 164 and 1001 use bottlenecks.
@register_model("preact_resnet110", CIFAR, HE2016)
def preact_resnet110(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 110, "preact": True, **overrides})


@register_model("preact_resnet164", CIFAR, HE2016)
def preact_resnet164(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 164, "block": "bottleneck", "preact": True, "shortcut": "B", **overrides})


@register_model("preact_resnet1001", CIFAR, HE2016)
def preact_resnet1001(**overrides) -> CifarResNet:
    return CifarResNet(**{"depth": 1001, "block": "bottleneck", "preact": True, "shortcut": "B", **overrides})
