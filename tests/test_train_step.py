"""The settings of a recipe reach the optimizer and the loss; evaluation counts right; the end
of a run reports, tests and exports the checkpoint it chose.

The first step of a run is recomputed here by hand, from the same starting weights
(`init`) and the loader's first batch: the loss with the configured label smoothing, the
gradient, clipping of its global norm, weight decay on the right parameters, and SGD's
first momentum step with or without Nesterov. Each expectation is written from the
formulas, not from reslab's own helpers.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from reslab.errors import ReslabError
from reslab.evaluate import evaluate
from reslab.models import create_model
from reslab.train import TrainConfig, load_checkpoint, train
from reslab.train.splits import load_data, make_loader


def _cfg(**changes) -> TrainConfig:
    base = dict(model="resnet20", model_args={"depth": 8}, data="digits", iters=1, batch_size=32, val_size=0,
                lr=0.5, momentum=0.9, schedule="constant", augment=None, amp="none", compile="off",
                threads=1, device="cpu", log_every=1, test=False, channels_last=False, foreach=False)
    return TrainConfig(**{**base, **changes})


def _first_step(tmp_path, cfg: TrainConfig):
    """(weights before, weights after one step of `cfg`, logged loss, the batch), from a run."""
    torch.manual_seed(1)
    start = create_model("resnet20", depth=8, num_classes=10, in_chans=1)
    for m in start.modules():  # non-trivial BN affine: decay on it must show
        if isinstance(m, nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    torch.save(start.state_dict(), tmp_path / "start.pth")
    cfg = cfg.replace(init=str(tmp_path / "start.pth"))
    train(cfg, tmp_path / "run", progress=False)
    after = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    loss = next(r["loss"] for r in logged if r["kind"] == "step")
    data = load_data(cfg, with_test=False)
    loader = make_loader(data.train, cfg, True, torch.device("cpu"))
    x, y = loader.batch(0, 0)
    return start, after, loss, (x, y)


def _expected(start: nn.Module, x, y, *, lr, momentum, wd, nesterov, smoothing, clip, decay_1d):
    model = start.train()
    logits = model(x)
    # label smoothing by its definition: (1 - e) * one-hot + e / K
    k = logits.shape[1]
    target = (1 - smoothing) * F.one_hot(y, k).float() + smoothing / k
    loss = -(target * F.log_softmax(logits, 1)).sum(1).mean()
    grads = torch.autograd.grad(loss, list(model.parameters()))
    if clip is not None:
        norm = torch.sqrt(sum((g * g).sum() for g in grads))
        grads = [g * min(1.0, clip / (norm.item() + 1e-6)) for g in grads]
    new = {}
    for (name, p), g in zip(model.named_parameters(), grads, strict=True):
        d = g + (wd * p.detach() if (p.ndim > 1 or decay_1d) else 0)
        buf = d  # SGD's first step: the momentum buffer is the gradient itself
        step = d + momentum * buf if nesterov else buf
        new[name] = p.detach() - lr * step
    return loss.item(), new


@pytest.mark.parametrize("settings", [
    dict(weight_decay=0.05, decay_norm_and_bias=False, nesterov=True, grad_clip=0.5, label_smoothing=0.3),
    dict(weight_decay=0.05, decay_norm_and_bias=True, nesterov=False, grad_clip=None, label_smoothing=0.0),
], ids=["spare-1d-nesterov-clip-smooth", "decay-all-plain"])
def test_first_step_follows_the_recipe(tmp_path, settings):
    cfg = _cfg(**settings)
    start, after, logged_loss, (x, y) = _first_step(tmp_path, cfg)
    loss, expected = _expected(start, x, y, lr=cfg.lr, momentum=cfg.momentum, wd=cfg.weight_decay,
                               nesterov=cfg.nesterov, smoothing=cfg.label_smoothing, clip=cfg.grad_clip,
                               decay_1d=cfg.decay_norm_and_bias)
    assert logged_loss == pytest.approx(loss, rel=1e-5)
    for name, value in expected.items():
        assert torch.allclose(after[name], value, rtol=1e-4, atol=1e-6), name
    # the settings matter at this size: without them the weights would be elsewhere
    _, other = _expected(start, x, y, lr=cfg.lr, momentum=cfg.momentum, wd=0.0, nesterov=not cfg.nesterov,
                         smoothing=0.0, clip=None, decay_1d=True)
    assert not torch.allclose(after["fc.weight"], other["fc.weight"], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_the_optimizer_gets_every_setting(name):
    """Both optimizers: lr, momentum/Nesterov or betas, foreach, and weight decay on the weights
    only (decay_norm_and_bias=False); AdamW's first step checked by hand, since an omitted
    weight_decay would fall back to AdamW's own default of 0.01, not 0."""
    from reslab.train.step import build_optimizer

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    cfg = _cfg(optimizer=name, lr=0.03, momentum=0.8, nesterov=name == "sgd", betas=(0.8, 0.95),
               weight_decay=0.2, decay_norm_and_bias=False, foreach=False)
    opt = build_optimizer(model, cfg)
    assert type(opt) is {"sgd": torch.optim.SGD, "adamw": torch.optim.AdamW}[name]
    decay, spared = opt.param_groups
    assert [id(p) for p in decay["params"]] == [id(model[0].weight)]
    assert {id(p) for p in spared["params"]} == {id(model[0].bias), id(model[1].weight), id(model[1].bias)}
    assert (decay["weight_decay"], spared["weight_decay"]) == (0.2, 0.0)
    for group in opt.param_groups:
        assert group["lr"] == 0.03 and group["foreach"] is False
        if name == "sgd":
            assert group["momentum"] == 0.8 and group["nesterov"] is True
        else:
            assert group["betas"] == (0.8, 0.95)
    if name == "adamw":
        before = [p.detach().clone() for p in model.parameters()]
        model(torch.randn(8, 3)).square().mean().backward()
        grads = [p.grad.clone() for p in model.parameters()]
        opt.step()
        for p, p0, g in zip(model.parameters(), before, grads, strict=True):
            wd = 0.2 if p.ndim > 1 else 0.0
            # Adam's bias-corrected first step is g / (|g| + eps); the decay is decoupled
            want = p0 * (1 - 0.03 * wd) - 0.03 * g / (g.abs() + 1e-8)
            torch.testing.assert_close(p.detach(), want, rtol=1e-5, atol=1e-6)


class _Logits(nn.Module):
    """A 'model' whose input is already its logits."""

    def forward(self, x):
        return x


def test_a_scaled_step_clips_the_unscaled_gradient():
    """fp16's loss scaler (a CPU GradScaler here): the gradient is unscaled before its norm is
    clipped, so the step is the one plain SGD takes from the clipped true gradient."""
    from reslab.train.step import optimizer_step

    torch.manual_seed(0)
    w0, x = torch.randn(4), torch.randn(4)
    grad = 3 * x  # of loss = 3 * (w . x); norm well above the clip
    model = nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(w0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    scaler.scale(3 * model(x[None]).sum()).backward()
    assert torch.allclose(model.weight.grad[0], 1024 * grad)
    optimizer_step(opt, model, _cfg(grad_clip=1.0), scaler)
    want = w0 - 0.1 * grad / grad.norm()
    torch.testing.assert_close(model.weight.detach()[0], want, rtol=1e-5, atol=1e-6)
    assert model.weight.grad is None and scaler.get_scale() == 1024.0  # no inf: the scale stays


@pytest.mark.filterwarnings("error")  # e.g. a softmax without its dim: a warning on every step
def test_one_train_step_by_hand_distilled_scaled_and_non_finite():
    """`train_step` with a teacher's soft targets, with and without fp16's loss scaler (a CPU
    GradScaler) and SAM: the loss and the step are those written from the formulas, and no
    warning is raised; a non-finite loss takes no step and leaves no gradient."""
    from reslab.train.step import SoftTargets, train_step

    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    w0, teacher = torch.randn(3, 4), torch.randn(6, 3)
    t, alpha, rho = 4.0, 0.7, 0.05
    p_teacher = F.softmax(teacher / t, 1)

    def loss_and_grad(w):
        w = w.clone().requires_grad_()
        z = x @ w.T
        kd = (p_teacher * (p_teacher.log() - F.log_softmax(z / t, 1))).sum(1).mean() * t * t
        loss = (1 - alpha) * F.cross_entropy(z, y) + alpha * kd
        return loss.item(), torch.autograd.grad(loss, w)[0], (z.argmax(1) == y).sum().item()

    want_loss, g, want_correct = loss_and_grad(w0)
    want = {None: w0 - 0.1 * g,  # SGD's first step, momentum buffer = gradient
            rho: w0 - 0.1 * loss_and_grad(w0 + rho * g / g.norm())[1]}  # SAM: the gradient up the climb

    def fresh():
        model = nn.Linear(4, 3, bias=False)
        with torch.no_grad():
            model.weight.copy_(w0)
        return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    for sam in (None, rho):
        cfg = _cfg(label_smoothing=0.0, grad_clip=None, sam_rho=sam)
        for scaler in (None, torch.amp.GradScaler("cpu", init_scale=1024.0)):
            model, opt = fresh()
            loss, correct = train_step(model, opt, x, y, cfg, None, scaler, SoftTargets(teacher, alpha, t))
            assert loss == pytest.approx(want_loss, rel=1e-6) and correct.item() == want_correct
            torch.testing.assert_close(model.weight.detach(), want[sam], rtol=1e-5, atol=1e-6)
            assert model.weight.grad is None
    assert not torch.allclose(want[None], want[rho])
    model, opt = fresh()
    loss, _ = train_step(model, opt, torch.full_like(x, float("nan")), y, _cfg(), None, None)
    assert loss != loss and model.weight.grad is None and torch.equal(model.weight.detach(), w0)


def test_a_sharpness_aware_train_step_runs_both_passes_under_the_runs_autocast():
    from reslab.train.step import train_step

    seen = []

    class Probe(nn.Linear):
        def forward(self, x):
            out = super().forward(x)
            seen.append(out.dtype)
            return out

    torch.manual_seed(0)
    model = Probe(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train_step(model, opt, torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2]), _cfg(sam_rho=0.05),
               torch.bfloat16, None)
    assert seen == [torch.bfloat16, torch.bfloat16]  # the step's pass, then SAM's at the climbed weights


def test_evaluate_counts_by_hand():
    # 4 classes, 6 samples; rows of the confusion matrix are the true classes
    logits = torch.tensor([[9., 1., 0., 0.],   # true 0, predicted 0
                           [1., 9., 0., 0.],   # true 0, predicted 1
                           [0., 9., 1., 0.],   # true 1, predicted 1
                           [0., 0., 1., 9.],   # true 2, predicted 3; 2 ranks second
                           [9., 0., 0., 1.],   # true 3, predicted 0; 3 ranks second
                           [0., 0., 9., 1.]])  # true 2, predicted 2
    y = torch.tensor([0, 0, 1, 2, 3, 2])
    r = evaluate(_Logits(), [(logits[:4], y[:4]), (logits[4:], y[4:])], num_classes=4)
    assert r.confusion.tolist() == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [1, 0, 0, 0]]
    assert r.top1 == pytest.approx(3 / 6) and r.top5 == 1.0  # counted over both batches
    assert r.per_class == pytest.approx([0.5, 1.0, 0.5, 0.0])
    # top-5 with 4 classes is every hit; check top-k on a 7-class case where the truth ranks 2nd-5th or 6th
    logits7 = torch.tensor([[7., 6., 5., 4., 3., 2., 1.]] * 3)
    y7 = torch.tensor([1, 4, 5])  # ranks 2, 5, 6
    r7 = evaluate(_Logits(), [(logits7, y7)], num_classes=7)
    assert r7.top1 == 0 and r7.top5 == pytest.approx(2 / 3)
    expected_loss = F.cross_entropy(torch.cat([logits, ]), y).item()
    assert r.loss == pytest.approx(expected_loss, rel=1e-6)


def test_evaluate_averages_mirrors_keeps_rows_in_order_and_restores_the_mode():
    class FirstRow(nn.Module):
        """Logits = the image's first row plus a class bias; doubled in training mode."""

        def forward(self, x):
            return (x[:, 0, 0, :] + torch.tensor([0.0, 0.1, 0.2])) * (2.0 if self.training else 1.0)

    x = torch.tensor([[4.0, 0.0, 1.0], [0.0, 1.0, 3.0], [0.0, 5.0, 0.0]]).view(3, 1, 1, 3)
    y = torch.tensor([0, 0, 1])
    rows = x[:, 0, 0, :]
    want = (rows + rows.flip(1)) / 2 + torch.tensor([0.0, 0.1, 0.2])  # eval mode, mirror averaged
    for mode in (True, False):
        model = FirstRow().train(mode)
        r = evaluate(model, [(x[:2], y[:2]), (x[2:], y[2:])], 3, flip_tta=True, keep_logits=True)
        assert model.training is mode
        torch.testing.assert_close(r.logits, want, rtol=0, atol=1e-6)
        assert torch.equal(r.labels, y) and r.n == 3
        assert r.loss == pytest.approx(F.cross_entropy(want, y).item(), rel=1e-6)
        # predictions 2, 2, 1: class 2 never true, so its per-class accuracy is 0 (not a 0/0)
        assert r.confusion.tolist() == [[0, 0, 2], [0, 1, 0], [0, 0, 0]] and r.per_class == [0.0, 1.0, 0.0]
    plain = evaluate(FirstRow(), [(x, y)], 3)
    assert plain.top1 == pytest.approx(2 / 3) and plain.logits is None and plain.labels is None
    assert plain.loss == pytest.approx(F.cross_entropy(rows + torch.tensor([0.0, 0.1, 0.2]), y).item(), rel=1e-6)
    assert list(plain.to_dict()) == ["n", "loss", "top1", "top5", "per_class", "confusion"]
    assert plain.to_dict()["confusion"] == plain.confusion.tolist() and plain.to_dict()["n"] == 3
    with pytest.raises(ReslabError, match="^nothing to evaluate: the split is empty$"):
        evaluate(FirstRow(), [], 3)


def test_evaluate_runs_the_model_under_the_given_autocast():
    """bf16 evaluation: the model runs under autocast (a Linear's output is bf16 there), and the
    figures are computed from the logits cast back to float32."""
    seen = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            out = self.fc(x.flatten(1))
            seen.append(out.dtype)
            return out

    torch.manual_seed(0)
    model, x, y = Probe(), torch.randn(4, 3, 1, 1), torch.tensor([0, 1, 2, 0])
    r = evaluate(model, [(x, y)], 3, amp=torch.bfloat16, keep_logits=True)
    assert seen == [torch.bfloat16] and r.logits.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = model(x).float()
    torch.testing.assert_close(r.logits, want, rtol=0, atol=0)
    seen.clear()
    evaluate(model, [(x, y)], 3)
    assert seen == [torch.float32]


def test_a_run_that_peaks_early_reports_tests_and_exports_best(tmp_path):
    """The lr climbs to a value that wrecks the net: validation peaks early, so best.pt is not
    last.pt, and the test figure, summary and model.safetensors must all come from best.pt."""
    cfg = TrainConfig(model="resnet20", model_args={"depth": 8}, data="digits", epochs=4, iters=None,
                      batch_size=64, val_size=300, lr=8.0, momentum=0.9, schedule="constant",
                      warmup_iters=80, warmup_start=0.01, grad_clip=1.0, augment=None, amp="none",
                      compile="off", threads=1, device="cpu", log_every=5)
    result = train(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "last.pt")
    assert best["state"]["step"] < last["state"]["step"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["chosen"] == "best.pt"
    # the test figure is best.pt's, recomputed here
    from reslab.predict import evaluate_checkpoint

    on_best, _ = evaluate_checkpoint(run / "best.pt")
    on_last, _ = evaluate_checkpoint(run / "last.pt")
    assert abs(on_best.top1 - on_last.top1) > 0.05  # the two checkpoints really differ
    assert result.test.top1 == pytest.approx(on_best.top1) and summary["test"]["top1"] == pytest.approx(on_best.top1)
    from safetensors.torch import load_file

    exported = load_file(run / "model.safetensors")
    for k, v in best["model"].items():
        assert torch.equal(exported[k], v), k
