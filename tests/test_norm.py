"""reslab's BatchNorm2d: nn.BatchNorm2d's results, a faster compiled CPU training path."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import reslab
from reslab.models import BatchNorm2d, batch_norm_train, compiled_batchnorm
from reslab.models import norm as norm_module


def _pair(offset: float = 0.0, momentum: float | None = 0.1):
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(16, momentum=momentum)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
        ref.bias.uniform_(-0.5, 0.5)
        ref.running_mean.fill_(offset / 2)
    new = BatchNorm2d(16, momentum=momentum)
    new.load_state_dict(ref.state_dict())
    x = torch.randn(8, 16, 6, 6) * 3 + offset
    return ref, new, x


@pytest.mark.parametrize("offset", [0.0, 50.0])
def test_batch_norm_train_matches_functional(offset):
    # A mean 17 standard deviations from zero must not cancel in E[d^2] - E[d]^2.
    _, new, x = _pair(offset)
    g = torch.randn_like(x)
    outs, grads = [], []
    for fn in (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
               lambda x, w, b: batch_norm_train(x, w, b)[0]):
        xi = x.clone().requires_grad_()
        w = new.weight.detach().clone().requires_grad_()
        b = new.bias.detach().clone().requires_grad_()
        y = fn(xi, w, b)
        y.backward(g)
        outs.append(y)
        grads.append((xi.grad, w.grad, b.grad))
    torch.testing.assert_close(outs[1], outs[0], atol=2e-5, rtol=1e-5)
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    _, mean, var = batch_norm_train(x, new.weight, new.bias)
    torch.testing.assert_close(mean, x.mean((0, 2, 3)), atol=1e-5, rtol=1e-6)
    torch.testing.assert_close(var, x.var((0, 2, 3), unbiased=False), atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_compiled_training_matches_nn_batchnorm(dtype):
    ref, new, x = _pair(offset=5.0)
    x = x.to(dtype).contiguous(memory_format=torch.channels_last)
    g = torch.randn_like(x)
    compiled = torch.compile(new)
    for _ in range(2):  # the second step starts from updated running statistics
        outs = []
        for mod in (ref, compiled):
            xi = x.clone().requires_grad_()
            y = mod(xi)
            y.backward(g)
            outs.append((y, xi.grad))
        tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 0.05, "rtol": 0.02}
        torch.testing.assert_close(outs[1][0], outs[0][0], **tol)
        torch.testing.assert_close(outs[1][1], outs[0][1], **tol)
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(new, name).grad, getattr(ref, name).grad, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(new.running_mean, ref.running_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new.running_var, ref.running_var, atol=1e-4, rtol=1e-4)
    assert new.num_batches_tracked.item() == ref.num_batches_tracked.item() == 2


def test_eager_and_unusual_configurations_take_nn_path(monkeypatch):
    def refuse(*args):
        raise AssertionError("fast path taken")

    monkeypatch.setattr(norm_module, "batch_norm_train", refuse)
    _, new, x = _pair()
    new(x)  # eager: nn.BatchNorm2d's own forward
    new.eval()
    torch.compile(new, backend="eager")(x)
    cumulative = BatchNorm2d(16, momentum=None)  # cumulative moving average
    torch.compile(cumulative, backend="eager")(x)
    assert cumulative.num_batches_tracked.item() == 1


def test_fast_path_is_traced_without_graph_breaks(monkeypatch):
    model = compiled_batchnorm(reslab.create_model("resnet20")).train()
    calls, real = [], norm_module.batch_norm_train
    monkeypatch.setattr(norm_module, "batch_norm_train", lambda *args: calls.append(1) or real(*args))
    torch.compile(model, backend="eager", fullgraph=True)(torch.randn(2, 3, 32, 32))
    assert len(calls) == 19  # every BN of ResNet-20, traced once


def test_compiled_batchnorm_switches_class_only():
    model = reslab.create_model("resnet20")
    assert all(type(m) is nn.BatchNorm2d for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    params, keys = list(model.parameters()), list(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    assert compiled_batchnorm(model) is model
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 19 and all(type(m) is BatchNorm2d for m in bns)
    assert all(a is b for a, b in zip(model.parameters(), params, strict=True))
    assert list(model.state_dict()) == keys
    assert opt.param_groups[0]["params"][1] is model.bn1.weight
    # BN folding still finds every conv->BN pair through the subclass
    from reslab.quantize import fold_bn

    folded = fold_bn(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())


def test_second_derivative_refused():
    _, new, x = _pair()
    xi = x.clone().requires_grad_()
    y = batch_norm_train(xi, new.weight, new.bias)[0]
    (gx,) = torch.autograd.grad((y * y).sum(), xi, create_graph=True)
    with pytest.raises(RuntimeError):
        gx.sum().backward()
