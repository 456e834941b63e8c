"""ResNet (ImageNet stem, 4 stages) and CifarResNet (3 stages of 16/32/64).

Every variant is an argument: block type, stage depths, shortcut option,
bottleneck stride placement, pre-activation, groups and width (ResNeXt, Wide
ResNet), stochastic depth: see `ResNet.__init__` and `CifarResNet.__init__`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..errors import is_whole
from .blocks import NormLayer, block_class, make_shortcut

SHORTCUTS = ("A", "B", "C", None)


class _ResNetBase(nn.Module):
    """Stages, head and feature API shared by both stems."""

    num_features: int
    feature_info: list[dict]

    def _init_common(
        self,
        block: str,
        preact: bool,
        shortcut: str | None,
        stride_in: str,
        groups: int,
        width_per_group: int,
        norm_layer: NormLayer | None,
        drop_path_rate: float,
        shortcut_pad: str = "append",
    ) -> None:
        if shortcut not in SHORTCUTS:
            raise ValueError(f"shortcut must be one of 'A', 'B', 'C' or None (plain), got {shortcut!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate}")
        self.block = block_class(block, preact)
        if stride_in != "3x3" and self.block.expansion == 1:
            raise ValueError(f"stride_in={stride_in!r} applies to bottleneck blocks only (a basic block has no 1x1 conv)")
        self.preact = preact
        self.shortcut = shortcut
        self.shortcut_pad = shortcut_pad
        self.stride_in = stride_in
        self.groups = groups
        self.base_width = width_per_group
        self.norm_layer = norm_layer or nn.BatchNorm2d
        self.drop_path_rate = drop_path_rate

    def _make_stages(
        self, inplanes: int, widths: Sequence[int], layers: Sequence[int], strides: Sequence[int],
        stem_reduction: int,
    ) -> int:
        """Adds layer1..layerK; returns the channel count of the last stage."""
        total = sum(layers)
        index = 0
        reduction = stem_reduction
        for i, (planes, blocks, stride) in enumerate(zip(widths, layers, strides, strict=True), 1):
            # Linearly increasing drop rate from 0 (first block) to drop_path_rate (last).
            rates = [self.drop_path_rate * (index + j) / max(total - 1, 1) for j in range(blocks)]
            index += blocks
            stage, inplanes = self._make_stage(inplanes, planes, blocks, stride, rates)
            self.add_module(f"layer{i}", stage)
            reduction *= stride
            self.feature_info.append({"num_chs": inplanes, "reduction": reduction, "module": f"layer{i}"})
        return inplanes

    def _make_stage(
        self, inplanes: int, planes: int, blocks: int, stride: int, rates: list[float]
    ) -> tuple[nn.Sequential, int]:
        out = planes * self.block.expansion
        # Pre-activation projections are a bare conv: the block already normalised the input.
        shortcut_norm = None if self.preact else self.norm_layer
        layers = []
        for j in range(blocks):
            s = stride if j == 0 else 1
            downsample = make_shortcut(self.shortcut, inplanes, out, s, shortcut_norm, self.shortcut_pad)
            # Only bottlenecks have a 1x1 conv the stride could go in.
            bottleneck = {"stride_in": self.stride_in} if self.block.expansion > 1 else {}
            layers.append(
                self.block(
                    inplanes, planes, s, downsample, self.groups, self.base_width,
                    self.norm_layer, residual=self.shortcut is not None,
                    drop_path=rates[j], **bottleneck,
                )
            )
            inplanes = out
        return nn.Sequential(*layers), inplanes

    def _init_weights(self, zero_init_residual: bool) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d | nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            # Each residual branch starts as zero, so every block starts as an
            # identity (Goyal et al. 2017, "Accurate, Large Minibatch SGD").
            for m in self.modules():
                if hasattr(m, "zero_init_last"):
                    m.zero_init_last()

    # --- head and feature API ---
    def _stages(self) -> list[nn.Module]:
        return [getattr(self, info["module"]) for info in self.feature_info[1:]]

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """x: (N, C, H, W) features -> (N, num_classes) logits, or (N, C) if pre_logits."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """Replaces the classifier with a fresh one for `num_classes` (0: identity)."""
        if not is_whole(num_classes):
            raise ValueError(f"num_classes must be a whole number >= 0 (0: no classifier), got {num_classes!r}")
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_stem(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_features(self, x: Tensor) -> Tensor:
        """x: (N, in_chans, H, W) -> (N, num_features, H/r, W/r) before pooling."""
        x = self.forward_stem(x)
        for stage in self._stages():
            x = stage(x)
        return self.final_act(x)

    def final_act(self, x: Tensor) -> Tensor:
        # Pre-activation nets end with BN-ReLU: the last block's sum is unnormalised.
        if self.preact:
            x = self.relu(self.bn_final(x))
        return x

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        """Outputs of the stem and of every stage (see `feature_info`)."""
        x = self.forward_stem(x)
        feats = [x]
        stages = self._stages()
        for i, stage in enumerate(stages):
            x = stage(x)
            feats.append(self.final_act(x) if i == len(stages) - 1 else x)
        return feats

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        if self.features_only:
            return self.forward_intermediates(x)
        return self.forward_head(self.forward_features(x))

    def _finish(self, num_classes: int, features_only: bool, zero_init_residual: bool) -> None:
        self.num_features = self.feature_info[-1]["num_chs"]
        if self.preact:
            self.bn_final = self.norm_layer(self.num_features)
        self.features_only = features_only
        self.num_classes = num_classes
        if features_only:
            self.avgpool = None
            self.fc = None
        else:
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.reset_classifier(num_classes)
        self._init_weights(zero_init_residual)


class ResNet(_ResNetBase):
    """The ImageNet-style ResNet: 7x7/2 conv stem, 3x3/2 max pool, 4 stages.

    Args:
        block: "basic" (2 x 3x3) or "bottleneck" (1x1-3x3-1x1, expansion 4).
        layers: blocks per stage, e.g. (3, 4, 6, 3) for ResNet-50.
        num_classes: classifier size; in_chans: input channels.
        shortcut: "A" zero-padded identity, "B" projection when the shape
            changes, "C" projection on every block, None plain (no shortcut).
        shortcut_pad: where option A's new channels go: "append" (after the input's, the
            paper's Torch code) or "both" (half before, as akamaster's CIFAR checkpoints).
        stride_in: "3x3" (v1.5) or "1x1" (v1) downsampling in bottlenecks.
        preact: pre-activation blocks (ResNet v2).
        groups, width_per_group: ResNeXt (32, 4) and Wide ResNet (1, 128).
        zero_init_residual: zero the last BN gamma of each residual branch.
        drop_path_rate: stochastic depth rate of the last block (linear).
        norm_layer: normalization constructor, BatchNorm2d by default.
        features_only: forward returns the stem and stage outputs.
    """

    def __init__(
        self,
        block: str = "basic",
        layers: Sequence[int] = (2, 2, 2, 2),
        num_classes: int = 1000,
        in_chans: int = 3,
        shortcut: str | None = "B",
        stride_in: str = "3x3",
        preact: bool = False,
        groups: int = 1,
        width_per_group: int = 64,
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        norm_layer: NormLayer | None = None,
        features_only: bool = False,
        shortcut_pad: str = "append",
    ) -> None:
        super().__init__()
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must be 4 positive stage depths, got {tuple(layers)}")
        self._init_common(block, preact, shortcut, stride_in, groups, width_per_group,
                          norm_layer, drop_path_rate, shortcut_pad)
        self.layers = tuple(layers)
        self.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
        if not preact:
            # Pre-activation nets normalise inside the first block instead.
            self.bn1 = self.norm_layer(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = [{"num_chs": 64, "reduction": 2, "module": "conv1" if preact else "relu"}]
        self._make_stages(64, (64, 128, 256, 512), layers, (1, 2, 2, 2), stem_reduction=4)
        self._finish(num_classes, features_only, zero_init_residual)

    def forward_stem(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if not self.preact:
            x = self.relu(self.bn1(x))
        return self.maxpool(x)

    def forward_intermediates(self, x: Tensor) -> list[Tensor]:
        # The stem feature is taken before the max pool (reduction 2), as in timm.
        x = self.conv1(x)
        if not self.preact:
            x = self.relu(self.bn1(x))
        feats = [x]
        x = self.maxpool(x)
        stages = self._stages()
        for i, stage in enumerate(stages):
            x = stage(x)
            feats.append(self.final_act(x) if i == len(stages) - 1 else x)
        return feats


def cifar_stage_depth(depth: int, block: str) -> int:
    """Blocks per stage n for a CIFAR net of `depth` layers (6n+2 or 9n+2)."""
    per_block = {"basic": 2, "bottleneck": 3}.get(block)
    if per_block is None:
        raise ValueError(f"block must be 'basic' or 'bottleneck', got {block!r}")
    n, rem = divmod(depth - 2, 3 * per_block)
    if rem or n < 1:
        form = "6n+2 (20, 32, 44, 56, 110, ...)" if block == "basic" else "9n+2 (29, 56, 164, 1001, ...)"
        raise ValueError(
            f"a CIFAR net with {block} blocks has depth {form}: 3 stages of n blocks of "
            f"{per_block} layers, plus the first conv and the classifier; got {depth}"
        )
    return n


class CifarResNet(_ResNetBase):
    """The paper's CIFAR network (section 4.2): 3x3 conv, 3 stages of 16/32/64.

    Depth 6n+2 with basic blocks, 9n+2 with bottlenecks (whose stage outputs
    are 64/128/256). Other arguments as in `ResNet`; the shortcut defaults to
    option A as in the paper's CIFAR experiments.
    """

    def __init__(
        self,
        depth: int = 20,
        block: str = "basic",
        num_classes: int = 10,
        in_chans: int = 3,
        shortcut: str | None = "A",
        stride_in: str = "3x3",
        preact: bool = False,
        widths: Sequence[int] = (16, 32, 64),
        zero_init_residual: bool = False,
        drop_path_rate: float = 0.0,
        norm_layer: NormLayer | None = None,
        features_only: bool = False,
        shortcut_pad: str = "append",
    ) -> None:
        super().__init__()
        n = cifar_stage_depth(depth, block)
        self._init_common(block, preact, shortcut, stride_in, 1, 64, norm_layer, drop_path_rate, shortcut_pad)
        self.depth = depth
        self.layers = (n,) * len(widths)
        self.conv1 = nn.Conv2d(in_chans, widths[0], kernel_size=3, padding=1, bias=False)
        if not preact:
            self.bn1 = self.norm_layer(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.feature_info = [{"num_chs": widths[0], "reduction": 1, "module": "conv1" if preact else "relu"}]
        strides = (1,) + (2,) * (len(widths) - 1)
        self._make_stages(widths[0], widths, self.layers, strides, stem_reduction=1)
        self._finish(num_classes, features_only, zero_init_residual)

    def forward_stem(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        if not self.preact:
            x = self.relu(self.bn1(x))
        return x
