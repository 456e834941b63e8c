"""Residual blocks and the shortcut options of He et al. 2015, section 4.1.

Key names follow torchvision (conv1, bn1, ..., downsample.0/1) so that
torchvision and timm weights load into the post-activation blocks unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import StochasticDepth

NormLayer = Callable[[int], nn.Module]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1 and no bias (a BN follows)."""
    return nn.Conv2d(
        in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False
    )


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution with no bias."""
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


class ShortcutA(nn.Module):
    """Option A: parameter-free identity shortcut.

    When the shape changes, the input is subsampled by `stride` (every
    `stride`-th pixel, as a strided 1x1 identity would) and the extra channels
    are zeros: (N, C_in, H, W) -> (N, C_out, H/stride, W/stride).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1, pad: str = "append") -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(
                f"shortcut A can only add channels ({in_planes} -> {out_planes}); use 'B' or 'C'"
            )
        if pad not in SHORTCUT_PADS:
            raise ValueError(f"shortcut_pad must be 'append' or 'both', got {pad!r}")
        self.in_planes, self.out_planes, self.stride, self.pad = in_planes, out_planes, stride, pad

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_planes - self.in_planes
        if extra:
            # F.pad pads the last dims first: (W, W, H, H, C_before, C_after).
            before = extra // 2 if self.pad == "both" else 0
            x = F.pad(x, (0, 0, 0, 0, before, extra - before))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_planes}, {self.out_planes}, stride={self.stride}, pad={self.pad!r}"


# Where option A's new channels go: after the input's ("append", the paper's Torch code) or
# half before and half after ("both", akamaster/pytorch_resnet_cifar10, whose checkpoints need it).
SHORTCUT_PADS = ("append", "both")


def make_shortcut(
    option: str | None,
    in_planes: int,
    out_planes: int,
    stride: int,
    norm_layer: NormLayer | None,
    pad: str = "append",
) -> nn.Module | None:
    """The `downsample` module of a block for a shortcut option.

    Returns None for an identity shortcut (and for a plain network, where the
    block itself knows it has no shortcut). `norm_layer=None` gives a bare
    projection conv, as in the pre-activation networks.
    """
    changes = stride != 1 or in_planes != out_planes
    if option is None or (option in ("A", "B") and not changes):
        return None
    if option == "A":
        return ShortcutA(in_planes, out_planes, stride, pad)
    if option in ("B", "C"):
        conv = conv1x1(in_planes, out_planes, stride)
        return nn.Sequential(conv, norm_layer(out_planes)) if norm_layer else nn.Sequential(conv)
    raise ValueError(f"shortcut must be 'A', 'B', 'C' or None (plain), got {option!r}")


def _drop_path(rate: float) -> nn.Module:
    # Row mode drops the whole residual branch per sample (Huang et al. 2016).
    return StochasticDepth(rate, "row") if rate > 0 else nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convolutions; post-activation (ReLU after the addition)."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        norm_layer: NormLayer = nn.BatchNorm2d,
        residual: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("the basic block supports only groups=1 and width_per_group=64")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.residual = residual
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            shortcut = x if self.downsample is None else self.downsample(x)
            out = self.drop_path(out) + shortcut
        return self.relu(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn2.weight)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4); post-activation.

    `stride_in="3x3"` downsamples in the 3x3 conv (v1.5, torchvision's
    default); `"1x1"` in the first 1x1 conv (v1, as in the paper).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        norm_layer: NormLayer = nn.BatchNorm2d,
        residual: bool = True,
        drop_path: float = 0.0,
        stride_in: str = "3x3",
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        s1, s3 = _bottleneck_strides(stride, stride_in)
        self.conv1 = conv1x1(inplanes, width, s1)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, s3, groups)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            shortcut = x if self.downsample is None else self.downsample(x)
            out = self.drop_path(out) + shortcut
        return self.relu(out)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.bn3.weight)


class PreActBasicBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016): BN-ReLU-conv twice.

    Nothing follows the addition, so the identity path stays clean. A
    projection shortcut takes the pre-activated input, as in the authors' code.
    """

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        norm_layer: NormLayer = nn.BatchNorm2d,
        residual: bool = True,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("the basic block supports only groups=1 and width_per_group=64")
        self.bn1 = norm_layer(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = norm_layer(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        if not self.residual:
            return out
        return self.drop_path(out) + _preact_shortcut(self.downsample, x, pre)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (He et al. 2016): BN-ReLU-conv x3, expansion 4."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        norm_layer: NormLayer = nn.BatchNorm2d,
        residual: bool = True,
        drop_path: float = 0.0,
        stride_in: str = "3x3",
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        s1, s3 = _bottleneck_strides(stride, stride_in)
        self.bn1 = norm_layer(inplanes)
        self.conv1 = conv1x1(inplanes, width, s1)
        self.bn2 = norm_layer(width)
        self.conv2 = conv3x3(width, width, s3, groups)
        self.bn3 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.residual = residual
        self.drop_path = _drop_path(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv1(pre)
        out = self.conv2(self.relu(self.bn2(out)))
        out = self.conv3(self.relu(self.bn3(out)))
        if not self.residual:
            return out
        return self.drop_path(out) + _preact_shortcut(self.downsample, x, pre)

    def zero_init_last(self) -> None:
        nn.init.zeros_(self.conv3.weight)


def _preact_shortcut(downsample: nn.Module | None, x: Tensor, pre: Tensor) -> Tensor:
    if downsample is None:
        return x
    # Option A stays an identity of the raw input; a projection sees BN-ReLU(x).
    return downsample(x if isinstance(downsample, ShortcutA) else pre)


def _bottleneck_strides(stride: int, stride_in: str) -> tuple[int, int]:
    if stride_in == "3x3":
        return 1, stride
    if stride_in == "1x1":
        return stride, 1
    raise ValueError(f"stride_in must be '3x3' (v1.5) or '1x1' (v1), got {stride_in!r}")


BLOCKS: dict[tuple[str, bool], type[nn.Module]] = {
    ("basic", False): BasicBlock,
    ("bottleneck", False): Bottleneck,
    ("basic", True): PreActBasicBlock,
    ("bottleneck", True): PreActBottleneck,
}


def block_class(block: str, preact: bool) -> type[nn.Module]:
    """The block class for `block` in {"basic", "bottleneck"} and `preact`."""
    try:
        return BLOCKS[(block, bool(preact))]
    except KeyError:
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}") from None


__all__ = [
    "BasicBlock",
    "Bottleneck",
    "PreActBasicBlock",
    "PreActBottleneck",
    "ShortcutA",
    "block_class",
    "conv1x1",
    "conv3x3",
    "make_shortcut",
]
