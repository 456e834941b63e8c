"""BatchNorm2d with a training forward that compiles to faster CPU code.

`torch.compile` lowers `nn.BatchNorm2d`'s training forward to a Welford
reduction: one running mean/variance update (with a division) per element,
a long dependency chain per thread, and its backward divides by the element
count inside the per-element loop (what that costs a compiled ResNet-20 step:
benchmarks/RESULTS.md, "BN statistics that compile to cheaper CPU code").

`BatchNorm2d` is `nn.BatchNorm2d` (same parameters, buffers, state_dict,
eval path and results to rounding) whose training forward, when traced by
`torch.compile` for a CPU tensor, computes the statistics as two plain sums
(of d and d*d, d = x - shift, where shift is the first image's per-channel
mean, so E[d*d] - E[d]^2 does not cancel when |mean| >> std) and states the
backward explicitly, with per-channel factors instead of per-element
divisions. Eager mode, CUDA and every unusual configuration (no running
stats, cumulative momentum, no affine) take `nn.BatchNorm2d`'s own path.

Models are built with plain `nn.BatchNorm2d` (torch.fx, quantization and
fusion tools match that type); `compiled_batchnorm(model)` switches a model's
BNs over in place before it is compiled for training, as `reslab train` and
`reslab bench` do.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable


def _c(v: Tensor) -> Tensor:
    return v.view(1, -1, 1, 1)


class _BatchNormTrain(torch.autograd.Function):
    """Training-mode batch norm of a 4-d tensor: returns (y, batch mean, biased batch variance)."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, eps: float):  # type: ignore[override]
        n, _, h, w = x.shape
        inv_m = 1.0 / (n * h * w)
        xf = x.float()
        shift = xf[0].sum((1, 2)) * (1.0 / (h * w))
        d = xf - _c(shift)
        dmean = d.sum((0, 2, 3)) * inv_m
        var = ((d * d).sum((0, 2, 3)) * inv_m - dmean * dmean).clamp_min(0)
        mean = shift + dmean
        invstd = torch.rsqrt(var + eps)
        scale = weight * invstd
        y = xf * _c(scale) + _c(bias - mean * scale)
        ctx.save_for_backward(x, weight, mean, invstd)
        return y.to(x.dtype), mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_y: Tensor, _grad_mean: Tensor, _grad_var: Tensor):  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        n, _, h, w = x.shape
        inv_m = 1.0 / (n * h * w)
        g = grad_y.float()
        xc = x.float() - _c(mean)
        grad_bias = g.sum((0, 2, 3))
        gxc = (g * xc).sum((0, 2, 3))
        scale = weight * invstd
        grad_x = g * _c(scale) - xc * _c(invstd * invstd * gxc * inv_m * scale) - _c(grad_bias * inv_m * scale)
        return grad_x.to(x.dtype), gxc * invstd, grad_bias, None


def batch_norm_train(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> tuple[Tensor, Tensor, Tensor]:
    """Training-mode batch norm (N, C, H, W): (y, batch mean, biased batch variance)."""
    return _BatchNormTrain.apply(x, weight, bias, eps)


class BatchNorm2d(nn.BatchNorm2d):
    """`nn.BatchNorm2d`; compiled for a CPU in training, it runs `batch_norm_train`."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and torch.compiler.is_compiling() and x.device.type == "cpu" and x.dim() == 4
                and x.numel() > x.shape[1] and self.affine and self.track_running_stats
                and self.momentum is not None):
            return super().forward(x)
        y, mean, var = batch_norm_train(x, self.weight, self.bias, self.eps)
        with torch.no_grad():
            m = x.numel() // x.shape[1]
            self.running_mean.lerp_(mean, self.momentum)
            self.running_var.lerp_(var * (m / (m - 1)), self.momentum)
            self.num_batches_tracked.add_(1)
        return y


def compiled_batchnorm(model: nn.Module) -> nn.Module:
    """Switch every `nn.BatchNorm2d` of `model` to `BatchNorm2d`, in place; returns `model`.

    Only the class changes: parameters (and an optimizer holding them),
    buffers, hooks and state_dict keys stay as they are.
    """
    for m in model.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = BatchNorm2d
    return model
