"""Helpers shared by the test modules (import as `from helpers import ...`)."""

from __future__ import annotations

import torch
from torch import nn


def randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    """Every BatchNorm2d as after training: statistics away from 0/1 and a trained affine (gamma,
    beta), so that BN folding that drops any of the four is caught. Returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) * 0.4 - 0.2)
    return model.eval()


def trained_like(name: str, **kw) -> nn.Module:
    """reslab.create_model(name, **kw), seeded, with `randomize_bn`."""
    import reslab

    torch.manual_seed(0)
    return randomize_bn(reslab.create_model(name, **kw))


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude of `want`."""
    return ((got - want).abs().max() / want.abs().max()).item()
