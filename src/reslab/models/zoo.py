"""One-line builders for every named network, registered at import."""

from __future__ import annotations

from .registry import register_model
from .resnet import CifarResNet, ResNet

IMAGENET = (3, 224, 224)
CIFAR = (3, 32, 32)

HE2015 = "He et al. 2015, Deep Residual Learning for Image Recognition, arXiv:1512.03385"
HE2016 = "He et al. 2016, Identity Mappings in Deep Residual Networks, arXiv:1603.05027"
XIE2017 = "Xie et al. 2017, Aggregated Residual Transformations (ResNeXt), arXiv:1611.05431"
ZAGORUYKO2016 = "Zagoruyko & Komodakis 2016, Wide Residual Networks, arXiv:1605.07146"

STAGES = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


def _imagenet(name: str, depth: int, reference: str = HE2015, **defaults) -> None:
    block, layers = STAGES[depth]

    @register_model(name, IMAGENET, reference)
    def build(**overrides) -> ResNet:
        return ResNet(**{"block": block, "layers": layers, **defaults, **overrides})

    build.__name__ = name
    globals()[name] = build


def _cifar(name: str, depth: int, reference: str = HE2015, **defaults) -> None:
    @register_model(name, CIFAR, reference)
    def build(**overrides) -> CifarResNet:
        return CifarResNet(**{"depth": depth, **defaults, **overrides})

    build.__name__ = name
    globals()[name] = build


# ImageNet ResNets: v1.5 (stride in the 3x3, torchvision's layout) and v1 (paper).
for _d in (18, 34, 50, 101, 152):
    _imagenet(f"resnet{_d}", _d)
for _d in (50, 101, 152):
    _imagenet(f"resnet{_d}_v1", _d, stride_in="1x1")
for _d in (18, 34):
    _imagenet(f"plain{_d}", _d, shortcut=None)
for _d in (18, 34, 50, 101, 152):
    _imagenet(f"preact_resnet{_d}", _d, HE2016, preact=True)

_imagenet("resnext50_32x4d", 50, XIE2017, groups=32, width_per_group=4)
_imagenet("resnext101_32x8d", 101, XIE2017, groups=32, width_per_group=8)
_imagenet("resnext101_64x4d", 101, XIE2017, groups=64, width_per_group=4)
_imagenet("wide_resnet50_2", 50, ZAGORUYKO2016, width_per_group=128)
_imagenet("wide_resnet101_2", 101, ZAGORUYKO2016, width_per_group=128)

# CIFAR nets of the paper (section 4.2, option A shortcuts) and their plain twins.
for _d in (20, 32, 44, 56, 110, 1202):
    _cifar(f"resnet{_d}", _d)
for _d in (20, 32, 44, 56, 110):
    _cifar(f"plain{_d}", _d, shortcut=None)

# Pre-activation CIFAR nets (He et al. 2016); 164 and 1001 use bottlenecks.
_cifar("preact_resnet110", 110, HE2016, preact=True)
_cifar("preact_resnet164", 164, HE2016, block="bottleneck", preact=True, shortcut="B")
_cifar("preact_resnet1001", 1001, HE2016, block="bottleneck", preact=True, shortcut="B")
