"""The training loop on tiny data: loss falls, resume is exact, NaN stops, outputs are complete.

All runs use the embedded digits (8x8) and a handful of steps, so the file
takes well under a minute on 2 CPU cores.
"""

import copy
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import interrupt_at
from reslab.errors import ReslabError
from reslab.runtime import Dist, cpu_has_bf16
from reslab.train import NonFiniteLoss, TrainConfig, TrainingInterrupted, load_checkpoint, train
from reslab.train.splits import load_data


def tiny(**changes) -> TrainConfig:
    # no augmentation: a 4-pixel shift is half of an 8x8 digit; one thread: the test machine is shared
    base = dict(model="resnet20", data="digits", iters=24, batch_size=32, val_size=120, lr=0.1,
                schedule="cosine", warmup_iters=4, log_every=1, compile="off", seed=0, augment=None,
                threads=1, device="cpu")
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def digits_data():
    return load_data(tiny())


def _steps(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_and_outputs_are_complete(tmp_path, digits_data, capsys):
    t0 = time.perf_counter()
    result = train(tiny(iters=40), tmp_path / "run", progress=False, data=digits_data)
    assert 0 < result.seconds < time.perf_counter() - t0  # the loop's time, without setup
    run = tmp_path / "run"
    records = _steps(run)
    losses = [r["loss"] for r in records if r["kind"] == "step"]
    assert len(losses) == 40
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.5 * first, (first, last)  # from ~2.5 to well under half
    assert result.test is not None and result.test.n == 360 and result.test.top1 > 0.5
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "model.safetensors", "curves.png",
                 "summary.json"):
        assert (run / name).exists(), name
    summary = (run / "summary.json").read_text()  # indented for reading; the test figures without the matrix
    assert summary.startswith('{\n  "steps": 40,\n  "best_val_acc": ')
    assert json.loads(summary)["test"] == {"n": 360, "loss": result.test.loss, "top1": result.test.top1,
                                           "top5": result.test.top5, "per_class": result.test.per_class}
    config_text = (run / "config.json").read_text()  # indented for reading too
    assert config_text.startswith('{\n  "model": "resnet20",\n  "data": ')
    config = json.loads(config_text)
    assert config["env"]["torch"] == str(torch.__version__) and config["env"]["device"] == "cpu"
    assert {k: config["env"][k] for k in ("amp", "world_size", "steps_per_epoch", "loader")} == {
        "amp": str(torch.bfloat16) if cpu_has_bf16() else "None", "world_size": 1, "steps_per_epoch": 41,
        "loader": "memory"}
    assert "git_sha" in config["env"]
    assert {r["kind"] for r in records} >= {"step", "epoch", "test"}
    epochs = [r for r in records if r["kind"] == "epoch"]  # 1,317 training images / 32: the run ends in epoch 0
    assert [(r["step"], r["epoch"]) for r in epochs] == [(40, 0)]
    seconds = epochs[0]["seconds"]
    assert 0 < seconds < 600 and seconds == round(seconds, 2) and epochs[0]["img_s"] == pytest.approx(
        40 * 32 / seconds, rel=0.02)
    steps = [r for r in records if r["kind"] == "step"]  # each step's img_s: the epoch's images so far per second
    assert steps[-1]["img_s"] == pytest.approx(epochs[0]["img_s"], rel=0.1) and steps[0]["img_s"] > 0
    # batches of 32 each: the epoch means are the steps' means
    assert epochs[0]["train_loss"] == pytest.approx(sum(r["loss"] for r in steps) / 40, rel=1e-6)
    assert epochs[0]["train_acc"] == pytest.approx(sum(r["acc"] for r in steps) / 40, rel=1e-6)
    # safetensors holds the chosen weights with everything predict needs in its metadata
    from safetensors import safe_open

    with safe_open(run / "model.safetensors", "pt") as f:
        meta = f.metadata()
        assert len(json.loads(meta["classes"])) == 10 and meta["model_name"] == "resnet20"
        best = load_checkpoint(run / "best.pt")
        assert torch.equal(f.get_tensor("fc.weight"), best["model"]["fc.weight"])
    assert load_checkpoint(run / "last.pt")["schedule"] == {"name": "cosine", "step": 40, "total_steps": 40}
    # resuming the finished run trains nothing and returns its figures, read back from summary.json
    again = train(None, run, resume=True, progress=False)
    assert capsys.readouterr() == ("", "")  # progress=False: not even the "nothing to do" line
    assert (again.run_dir, again.steps, again.best_val_acc) == (run, 40, result.best_val_acc)
    assert again.test.to_dict()["confusion"] == []  # summary.json keeps no confusion matrix
    assert (again.test.n, again.test.loss, again.test.top1, again.test.top5, again.test.per_class) == (
        360, result.test.loss, result.test.top1, result.test.top5, result.test.per_class)
    assert (again.seconds, again.images_per_s) == (round(result.seconds, 1), round(result.images_per_s, 1))


def _all_state(ckpt):
    return {**{f"model.{k}": v for k, v in ckpt["model"].items()},
            **{f"ema.{k}": v for k, v in (ckpt["ema"] or {}).items()}}


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory, digits_data):
    out = tmp_path_factory.mktemp("teacher") / "run"
    assert train(tiny(iters=40), out, progress=False, data=digits_data).test.top1 > 0.5
    return str(out)


@pytest.mark.parametrize("changes", [{"amp": "none"}, {"amp": "bf16"}, {"amp": "none", "sam_rho": 0.05},
                                     {"amp": "none", "teacher": "digits_teacher"},
                                     # stochastic depth draws from the global RNG: resume must restore it
                                     {"amp": "none", "model_args": {"drop_path_rate": 0.2}}],
                         ids=["fp32", "bf16", "sam", "distill", "drop_path"])
def test_resume_is_bit_exact(tmp_path, digits_data, changes, request, monkeypatch):
    """N steps, interrupt (as Ctrl-C), resume for N more == 2N uninterrupted steps, to the bit."""
    if "teacher" in changes:
        changes = {**changes, "teacher": request.getfixturevalue(changes["teacher"])}
    cfg = tiny(iters=20, ema_decay=0.9, label_smoothing=0.1, nesterov=True, batch_size=48, **changes)
    # 1437 - 120 images / 48 = 27 batches per epoch: use epochs shorter than the run to cross one
    cfg = cfg.replace(val_size=600)  # 837 train images -> 17 batches per epoch; the stop at 10 is mid-epoch
    train(cfg, tmp_path / "full", progress=False, data=None)
    interrupt_at(cfg, tmp_path / "split", 10)
    mid = load_checkpoint(tmp_path / "split" / "last.pt")
    assert mid["state"]["step"] == 10 and mid["state"]["batch"] == 10
    import reslab.train.setup as setup

    left, compile_wanted = [], setup.compile_wanted  # compile=auto weighs the steps left, not the run's length
    monkeypatch.setattr(setup, "compile_wanted", lambda cfg, steps: left.append(steps) or compile_wanted(cfg, steps))
    train(cfg, tmp_path / "split", resume=True, progress=False)
    assert set(left) == {10}
    events = [(r["step"], r["message"]) for r in _steps(tmp_path / "split") if r["kind"] == "event"]
    assert events == [(10, "interrupted; checkpoint saved"), (10, "resumed")]

    a = load_checkpoint(tmp_path / "full" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 20
    sa, sb = _all_state(a), _all_state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    mom_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    mom_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert all(torch.equal(x, y) for x, y in zip(mom_a, mom_b, strict=True))
    # and the training actually moved the weights (the comparison is not vacuous)
    assert not torch.equal(a["model"]["fc.weight"], mid["model"]["fc.weight"])


def test_a_version_1_checkpoint_resumes_bit_exactly(tmp_path, digits_data):
    """A run whose last.pt an earlier reslab wrote (format 1: no loader in env, Python's RNG state
    as lists) resumes to the weights of the uninterrupted run."""
    from reslab.train.checkpoint import payload_digest

    cfg = tiny(iters=20, batch_size=48, val_size=600, amp="none")
    train(cfg, tmp_path / "full", progress=False)
    interrupt_at(cfg, tmp_path / "split", 10)
    v2 = load_checkpoint(tmp_path / "split" / "last.pt")
    version, internal, gauss = v2["rng"]["python"]
    v1 = {**v2, "format": "reslab-checkpoint-1", "env": {k: v for k, v in v2["env"].items() if k != "loader"},
          "rng": {**v2["rng"], "python": [version, list(internal), gauss]}}
    v1["sha256"] = payload_digest(v1)
    torch.save(v1, tmp_path / "split" / "last.pt")
    train(cfg, tmp_path / "split", resume=True, progress=False)
    a, b = (load_checkpoint(tmp_path / run / "last.pt") for run in ("full", "split"))
    assert b["format"] == "reslab-checkpoint-2" and b["env"]["loader"] == "memory" and b["state"]["step"] == 20
    sa, sb = _all_state(a), _all_state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_killed_run_resumes_to_the_same_weights(tmp_path):
    """kill -9 mid-run (no handler runs, maybe mid-write), then resume == the uninterrupted run, to the bit."""
    cfg = tiny(iters=300, ckpt_every=5, ema_decay=0.999, batch_size=48, val_size=600)
    out = tmp_path / "killed"
    script = ("import json, sys; from reslab.train import TrainConfig, train; "
              "train(TrainConfig.from_dict(json.loads(sys.argv[1])), sys.argv[2], progress=False)")
    proc = subprocess.Popen([sys.executable, "-c", script, cfg.to_json(), str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not ((out / "last.pt").exists() and (out / "metrics.jsonl").exists()
                   and len((out / "metrics.jsonl").read_text().splitlines()) >= 40):
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "the run wrote no checkpoint in 300 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    killed_at = load_checkpoint(out / "last.pt")["state"]["step"]  # whole, and its digest checks
    assert 5 <= killed_at < 300 and killed_at % 5 == 0

    train(cfg, out, resume=True, progress=False)  # val_size differs from digits_data's: load the run's own split
    train(cfg, tmp_path / "full", progress=False)
    a, b = load_checkpoint(out / "last.pt"), load_checkpoint(tmp_path / "full" / "last.pt")
    assert a["state"]["step"] == b["state"]["step"] == 300
    sa, sb = _all_state(a), _all_state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    steps = [r["step"] for r in _steps(out) if r["kind"] == "step"]
    assert steps[-1] == 300


def test_init_starts_from_a_trained_run(tmp_path, digits_data, digits_teacher):
    """init=RUN_DIR: the run starts at the teacher's weights (lr ~0 for one step leaves them there)."""
    from safetensors.torch import load_file

    teacher = load_file(f"{digits_teacher}/model.safetensors")  # the run's chosen weights
    run = train(tiny(iters=1, lr=1e-12, warmup_iters=0, init=digits_teacher, test=False), tmp_path / "ft",
                progress=False, data=digits_data)
    state = load_checkpoint(tmp_path / "ft" / "last.pt")["model"]
    for k, v in teacher.items():
        if v.is_floating_point() and "running" not in k:  # one training step moves BN's running stats
            torch.testing.assert_close(state[k], v, rtol=0, atol=1e-6, msg=k)
    assert run.steps == 1
    events = [(r["step"], r["message"]) for r in _steps(tmp_path / "ft") if r["kind"] == "event"]
    assert events == [(0, f"init from {digits_teacher}/model.safetensors: {len(teacher)} tensors")]


def test_init_with_other_classes_gets_a_new_classifier(tmp_path, digits_data):
    import reslab

    source = reslab.create_model("resnet20", num_classes=7, in_chans=1)
    torch.save(source.state_dict(), tmp_path / "seven.pth")
    cfg = tiny(iters=1, lr=1e-12, warmup_iters=0, init=str(tmp_path / "seven.pth"), test=False)
    train(cfg, tmp_path / "ft", progress=False, data=digits_data)
    state = load_checkpoint(tmp_path / "ft" / "last.pt")["model"]
    torch.testing.assert_close(state["conv1.weight"], source.conv1.weight.detach(), rtol=0, atol=1e-6)
    assert state["fc.weight"].shape == (10, 64) and state["fc.weight"].abs().sum() > 0
    events = [r["message"] for r in _steps(tmp_path / "ft") if r["kind"] == "event"]
    assert events[0] == f"init from {tmp_path / 'seven.pth'}: {len(state)} tensors, new classifier (7 -> 10 classes)"

    # resume takes the weights from the checkpoint: the init file may be gone by then
    def stop_at_1(step):
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(cfg.replace(iters=2), tmp_path / "ft2", progress=False, data=digits_data, on_step=stop_at_1)
    (tmp_path / "seven.pth").unlink()
    assert train(None, tmp_path / "ft2", resume=True, progress=False, data=digits_data).steps == 2

    torch.save(reslab.create_model("resnet32", in_chans=1).state_dict(), tmp_path / "r32.pth")
    with pytest.raises(ReslabError, match=r"init .*r32.pth: weights do not fit this model: .*unexpected keys"):
        train(cfg.replace(init=str(tmp_path / "r32.pth")), tmp_path / "bad", progress=False, data=digits_data)
    assert not (tmp_path / "bad" / "last.pt").exists()
    torch.save(reslab.create_model("resnet20", in_chans=3).state_dict(), tmp_path / "rgb.pth")
    with pytest.raises(ReslabError, match="these weights take 3-channel images, the data has 1 channels"):
        train(cfg.replace(init=str(tmp_path / "rgb.pth")), tmp_path / "bad", progress=False, data=digits_data)


def test_init_from_torchvision_weights_on_an_image_folder(tmp_path, noise_folder):
    """The fine-tuning case: torchvision ImageNet-style weights, 1000 classes, onto a 2-class folder."""
    import torchvision

    imgs = noise_folder(classes=("cat", "dog"))
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "resnet18.pth")
    cfg = tiny(model="resnet18", data=f"imagefolder:{imgs}", val_size=0, test=False, batch_size=8,
               iters=1, lr=1e-12, warmup_iters=0, init=str(tmp_path / "resnet18.pth"))
    train(cfg, tmp_path / "ft", progress=False)
    state = load_checkpoint(tmp_path / "ft" / "last.pt")["model"]
    for k in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.conv2.weight", "layer3.0.downsample.0.weight"):
        torch.testing.assert_close(state[k], tv.state_dict()[k], rtol=0, atol=1e-6, msg=k)
    assert state["fc.weight"].shape == (2, 512)
    events = [r["message"] for r in _steps(tmp_path / "ft") if r["kind"] == "event"]
    assert events[0].endswith("new classifier (1000 -> 2 classes)")

    import reslab  # grayscale weights onto colour photos, and weights without a stem: one line each

    torch.save(reslab.create_model("resnet20", in_chans=1).state_dict(), tmp_path / "gray.pth")
    with pytest.raises(ReslabError, match="these weights take 1-channel images, the data has 3 channels"):
        train(cfg.replace(model="resnet20", init=str(tmp_path / "gray.pth")), tmp_path / "bad", progress=False)
    torch.save({k: v for k, v in tv.state_dict().items() if k.startswith("fc.")}, tmp_path / "head.pth")
    with pytest.raises(ReslabError, match=r"init .*head.pth: weights do not fit this model: .*missing"):
        train(cfg.replace(init=str(tmp_path / "head.pth")), tmp_path / "bad", progress=False)


def test_a_metrics_line_cut_short_is_skipped_and_the_log_goes_on(tmp_path):
    from reslab.train import plot_runs, read_metrics
    from reslab.train.logging import MetricsLog

    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.write("step", step=1, epoch=0, loss=2.0, acc=0.1, lr=0.1)
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"kind": "step", "step": 2, "lo')  # the process died inside this line
    MetricsLog(tmp_path / "metrics.jsonl").write("event", step=1, message="resumed")
    with pytest.warns(UserWarning, match=r"skipped 1 unreadable line\(s\) \(2\)"):
        records = read_metrics(tmp_path)
    assert [(r["kind"], r["step"]) for r in records] == [("step", 1), ("event", 1)]
    with pytest.warns(UserWarning, match="unreadable"):
        assert plot_runs([tmp_path], tmp_path / "curves.png").stat().st_size > 1000


def test_a_runs_curves_are_drawn_train_thin_and_smoothed_held_out_bold():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from reslab.train.logging import curve_series, draw_curves

    records = [{"kind": "step", "step": s, "loss": 1.0, "acc": acc} for s, acc in ((1, 0.5), (2, 0.7), (3, 0.9))]
    records += [{"kind": "epoch", "step": 3, "val_acc": 0.75, "val_loss": 0.5},
                {"kind": "step", "step": 3, "loss": 1.0, "acc": 0.6}]  # after a resume: step 3 again
    c = curve_series(records)
    assert c["train_err"] == [(1, 50.0), (2, pytest.approx(30.0)), (3, pytest.approx(40.0))]
    fig, ax = plt.subplots()
    assert draw_curves(ax, c, "err", "C1", "r20", smooth=2) == [25.0]
    train, held = ax.lines
    assert train.get_linestyle() == "--" and train.get_label().startswith("_") and held.get_label() == "r20"
    assert list(train.get_ydata()) == pytest.approx([50.0, 40.0, 35.0])  # trailing mean of 2
    assert train.get_linewidth() < held.get_linewidth() and list(held.get_xdata()) == [3]
    no_val = curve_series(records[:3])
    assert draw_curves(ax, no_val, "err", "C2", "plain") == [] and ax.lines[-1].get_label() == "plain"
    plt.close(fig)


def test_ema_warms_up_and_averages_bn_statistics():
    from reslab.models import create_model
    from reslab.train.step import EMA

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4)
    ema = EMA(model, decay=0.999)
    assert ema.decay_at(0) == pytest.approx(0.1) and ema.decay_at(10_000) == 0.999
    assert not ema.module.training and not any(p.requires_grad for p in ema.module.parameters())
    assert all(p.requires_grad for p in model.parameters())  # the model's own stay trainable
    start = {k: v.clone() for k, v in ema.module.state_dict().items()}
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.is_floating_point():
                t.add_(1.0)
            else:
                t.add_(3)
    ema.update(model, step=0)  # decay 0.1: the average moves 90% of the way
    new = ema.module.state_dict()
    assert torch.allclose(new["fc.weight"], start["fc.weight"] + 0.9)
    assert torch.allclose(new["bn1.running_var"], start["bn1.running_var"] + 0.9)
    assert torch.equal(new["bn1.num_batches_tracked"], start["bn1.num_batches_tracked"] + 3)


@pytest.mark.parametrize("extras", ["fp32", "bf16, scaled, distilled, smoothed"])
def test_sharpness_aware_pass_takes_the_gradient_at_the_climbed_weights(extras):
    # the second pass is the first one's twin: the same autocast, loss scaling, soft targets and smoothing
    from reslab.models import create_model
    from reslab.train.step import SoftTargets, forward_backward, sharpness_aware_pass

    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=4)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    setting = (0.0, None, None, None)
    if extras != "fp32":
        setting = (0.1, torch.bfloat16, torch.amp.GradScaler("cpu", init_scale=8.0),
                   SoftTargets(torch.randn(16, 4), 0.5, 4.0))
    forward_backward(model, x, y, *setting)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]

    seen = []  # the weights and statistics the second pass runs at
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(copy.deepcopy(m.state_dict())))
    sharpness_aware_pass(model, x, y, 0.05, *setting)
    hook.remove()
    after = model.state_dict()
    for k, v in before.items():  # weights and BN statistics are back, to the bit
        assert torch.equal(after[k], v), k

    # the climb, by hand: w + rho * g / ||g|| (to rounding: a bf16 pass magnifies a last-bit difference)
    (at,) = seen
    norm = torch.cat([g.flatten() for g in grads]).norm()
    for (name, _), g in zip(model.named_parameters(), grads, strict=True):
        torch.testing.assert_close(at[name], before[name] + 0.05 * g / norm, rtol=1e-6, atol=1e-7)
    assert all(torch.equal(at[k], before[k]) for k, _ in model.named_buffers())
    # and the gradient there, with the same autocast, loss scale, soft targets and smoothing
    climbed = copy.deepcopy(model)
    climbed.load_state_dict(at)
    for p in climbed.parameters():
        p.grad = None
    forward_backward(climbed, x, y, *setting)
    for p, q in zip(model.parameters(), climbed.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)
    assert not torch.allclose(model.fc.weight.grad, grads[-2])  # the gradient did change


def test_resume_refuses_to_overwrite_a_run(tmp_path, digits_data):
    train(tiny(iters=3), tmp_path / "r", progress=False, data=digits_data)
    from reslab.errors import ReslabError

    with pytest.raises(ReslabError, match="already holds a run"):
        train(tiny(iters=3), tmp_path / "r", progress=False, data=digits_data)


def test_non_finite_loss_stops_with_the_last_good_step(tmp_path, digits_data, monkeypatch):
    import reslab.train.step as step

    real = step.F.cross_entropy
    calls = {"n": 0}

    def nan_on_sixth(logits, y, **kw):
        calls["n"] += 1
        loss = real(logits, y, **kw)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(step.F, "cross_entropy", nan_on_sixth)
    with pytest.raises(NonFiniteLoss) as e:
        train(tiny(iters=30), tmp_path / "nan", progress=False, data=digits_data)
    assert re.fullmatch(r"loss became nan at step 5 \(lr 0\.\d+\); stopped; last good step saved to "
                        rf"{re.escape(str(tmp_path / 'nan' / 'last.pt'))}; lower lr or set grad_clip", str(e.value))
    ckpt = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert ckpt["state"]["step"] == 5  # the five good steps, not the poisoned sixth
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
    events = [r for r in _steps(tmp_path / "nan") if r["kind"] == "event"]
    assert (events[-1]["step"], events[-1]["message"]) == (5, "non-finite loss nan")


def test_a_run_prints_plain_progress_lines_and_its_result(tmp_path, digits_data, capsys):
    """Off a terminal (logs, CI, pipes): a line every log_every steps and one per epoch on
    stderr, the result on stdout; resuming a finished run says so."""
    out = tmp_path / "r"
    result = train(tiny(iters=16, log_every=8), out, data=digits_data)
    printed = capsys.readouterr()
    num = r"\d+\.\d+(?:e-\d+)?"
    lines = printed.err.splitlines()
    assert len(lines) == 3, lines
    for line, step in zip(lines[:2], (8, 16), strict=True):
        assert re.fullmatch(rf"r {step}/16  loss {num}  lr {num}  epoch 0", line), line
    assert re.fullmatch(rf"epoch 0  step 16  loss {num}  train_acc {num}  val_acc {num}  \d+ img/s", lines[2])
    assert f"val_acc {result.best_val_acc:.4f}" in lines[2]
    assert printed.out == (f"done: 16 steps in {result.seconds:.0f} s ({result.images_per_s:.0f} img/s), "
                           f"test acc {result.test.top1:.4f}; weights {out / 'model.safetensors'}\n")
    train(None, out, resume=True)
    assert capsys.readouterr().out == f"{out} is finished (16 steps); nothing to do\n"
    # without validation or test split: the lines leave those figures out
    result = train(tiny(iters=8, log_every=8, val_size=0, test=False), tmp_path / "bare")
    printed = capsys.readouterr()
    assert re.fullmatch(rf"epoch 0  step 8  loss {num}  train_acc {num}  \d+ img/s", printed.err.splitlines()[-1])
    assert printed.out == (f"done: 8 steps in {result.seconds:.0f} s ({result.images_per_s:.0f} img/s); "
                           f"weights {tmp_path / 'bare' / 'model.safetensors'}\n")


@pytest.mark.parametrize("signals", [1, 2])
def test_ctrl_c_stops_at_the_step_boundary_and_twice_at_once(tmp_path, digits_data, monkeypatch, signals, capsys):
    """SIGINT while step 3 is computed: once, the step completes and the run is checkpointed
    after it; twice, the run stops at once, keeping step 2. Either way the line says how to resume."""
    import reslab.train.loop as loop

    real, calls = loop.train_step, {"n": 0}

    def interrupted_third_step(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            for _ in range(signals):
                os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kw)

    monkeypatch.setattr(loop, "train_step", interrupted_third_step)
    out, handler = tmp_path / "r", signal.getsignal(signal.SIGINT)
    with pytest.raises(TrainingInterrupted) as e:
        train(tiny(iters=10), out, progress=False, data=digits_data)
    kept = 3 if signals == 1 else 2
    assert str(e.value) == (f"interrupted at step {kept}; checkpoint {out / 'last.pt'}; "
                            f"resume with: reslab train --resume {out}")
    assert load_checkpoint(out / "last.pt")["state"]["step"] == kept
    events = [(r["step"], r["message"]) for r in _steps(out) if r["kind"] == "event"]
    assert events == [(kept, "interrupted; checkpoint saved")]
    assert signal.getsignal(signal.SIGINT) is handler  # put back as it was
    assert capsys.readouterr() == ("", "")  # progress=False prints nothing
    # resumed, the progress lines count on from the kept step
    monkeypatch.setattr(loop, "train_step", real)
    train(None, out, resume=True, data=digits_data)
    counted = [line.split()[1] for line in capsys.readouterr().err.splitlines() if line.startswith("r ")]
    assert counted == [f"{n}/10" for n in range(kept + 1, 11)]


def test_paper_warmup_holds_low_lr_until_error_drops(tmp_path, digits_data):
    cfg = tiny(iters=30, warmup_lr=0.01, warmup_until_error=0.8, lr=0.1, schedule="constant", warmup_iters=0)
    train(cfg, tmp_path / "w", progress=False, data=digits_data)
    lrs = [r["lr"] for r in _steps(tmp_path / "w") if r["kind"] == "step"]
    assert lrs[0] == 0.01 and lrs[-1] == 0.1
    switch = lrs.index(0.1)
    assert all(v == 0.01 for v in lrs[:switch]) and all(v == 0.1 for v in lrs[switch:])
    err = 1.0  # the warm-up ends once a 20-step running mean of the batch error is under 0.8
    accs = [r["acc"] for r in _steps(tmp_path / "w") if r["kind"] == "step"]
    ended = next(i for i, acc in enumerate(accs) if (err := 0.95 * err + 0.05 * (1 - acc)) < 0.8)
    assert switch == ended + 1 and load_checkpoint(tmp_path / "w" / "last.pt")["state"]["warmup_done"]


def test_validation_every_other_epoch_and_at_the_end(tmp_path, digits_data):
    # 1,317 training images in batches of 128: 10 steps an epoch; 35 steps end a fourth epoch early
    result = train(tiny(iters=35, batch_size=128, eval_every=2), tmp_path / "run", progress=False, data=digits_data)
    assert result.images_per_s * result.seconds == pytest.approx(35 * 128)  # every epoch's images
    epochs = [r for r in _steps(tmp_path / "run") if r["kind"] == "epoch"]
    assert [(r["step"], r["epoch"], "val_acc" in r) for r in epochs] == [(10, 0, False), (20, 1, True),
                                                                        (30, 2, False), (35, 3, True)]
    steps = [r for r in _steps(tmp_path / "run") if r["kind"] == "step"]  # step s is in epoch (s - 1) // 10
    assert [(r["step"], r["epoch"]) for r in steps] == [(s, (s - 1) // 10) for s in range(1, 36)]
    state = load_checkpoint(tmp_path / "run" / "last.pt")["state"]
    assert (state["epoch"], state["batch"]) == (3, 5)
    best = max((r for r in epochs if "val_acc" in r), key=lambda r: r["val_acc"])
    assert (state["best_step"], state["best_acc"]) == (best["step"], best["val_acc"])


def test_distillation_loss_matches_its_definition():
    from reslab.train.step import SoftTargets, batch_loss

    torch.manual_seed(0)
    s, t, y = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5), torch.randint(0, 5, (8,))
    ce = torch.nn.functional.cross_entropy(s, y, label_smoothing=0.1)
    assert torch.equal(batch_loss(s, y, 0.1), ce)
    assert torch.allclose(batch_loss(s, y, 0.1, SoftTargets(t, 0.0, 4.0)), ce)
    # by hand: T^2 * mean over the batch of sum_k p_t log(p_t / p_s), at temperature T
    p_t, log_p_s = (t / 4).softmax(1), (s / 4).log_softmax(1)
    kd = 16 * (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    torch.testing.assert_close(batch_loss(s, y, 0.1, SoftTargets(t, 0.9, 4.0)), 0.1 * ce + 0.9 * kd)
    # a student that already equals its teacher gets no gradient from the soft targets
    same = t.clone().requires_grad_(True)
    batch_loss(same, y, 0.0, SoftTargets(t, 1.0, 4.0)).backward()
    assert same.grad.abs().max() < 1e-6


def test_distillation_from_a_trained_run(tmp_path, digits_data, digits_teacher):
    from reslab.errors import ReslabError

    student = train(tiny(iters=40, teacher=digits_teacher), tmp_path / "student", progress=False, data=digits_data)
    losses = [r["loss"] for r in _steps(tmp_path / "student") if r["kind"] == "step"]
    assert sum(losses[-5:]) < 0.5 * sum(losses[:5])
    assert student.test.top1 > 0.5
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["teacher"] == digits_teacher and config["env"]["teacher"]["arch"] == "CifarResNet"
    # alpha 0 ignores the teacher: the same weights as a run without one
    plain = train(tiny(iters=6), tmp_path / "plain", progress=False, data=digits_data)
    ignored = train(tiny(iters=6, teacher=digits_teacher, distill_alpha=0.0), tmp_path / "ignored",
                    progress=False, data=digits_data)
    a, b = (load_checkpoint(r.run_dir / "last.pt")["model"] for r in (plain, ignored))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ReslabError, match="teacher: no checkpoint"):
        train(tiny(iters=3, teacher=str(tmp_path / "nothing")), tmp_path / "x", progress=False, data=digits_data)
    renamed = dataclasses.replace(digits_data, classes=[f"c{i}" for i in range(10)])
    with pytest.raises(ReslabError, match="trained on other classes"):
        train(tiny(iters=3, teacher=digits_teacher), tmp_path / "y", progress=False, data=renamed)


def test_the_teacher_is_frozen_in_eval_mode_and_laid_out_as_the_student(tmp_path, digits_data, digits_teacher):
    from torch._dynamo.eval_frame import OptimizedModule

    from reslab.train.setup import load_teacher

    cpu = torch.device("cpu")
    cfg = tiny(teacher=digits_teacher, channels_last=True)
    teacher = load_teacher(cfg, digits_data, cpu, compiled=False)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    convs = [p for p in teacher.parameters() if p.ndim == 4 and p.shape[1] > 1]  # 1 channel: both layouts
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    assert not isinstance(teacher, OptimizedModule)
    assert isinstance(load_teacher(cfg, digits_data, cpu, compiled=True), OptimizedModule)
    # a run long enough for compile=auto compiles its teacher too; config.json names the teacher's own class
    from reslab.train.setup import setup

    run = setup(cfg.replace(compile="auto", iters=2000), tmp_path / "run", False, digits_data, Dist())
    assert isinstance(run.model, OptimizedModule) and isinstance(run.teacher, OptimizedModule)
    assert run.env["teacher"] == {"model": digits_teacher, "arch": "CifarResNet"}
    renamed = dataclasses.replace(digits_data, classes=[f"c{i}" for i in range(10)])
    with pytest.raises(ReslabError) as e:
        load_teacher(cfg, renamed, cpu, compiled=False)
    assert str(e.value) == (f"teacher {digits_teacher} was trained on other classes (10: 0, 1, 2, 3, 4...); "
                            "distill from a run on the same data")
    resized = dataclasses.replace(digits_data, image_size=(1, 16, 16))
    with pytest.raises(ReslabError) as e:
        load_teacher(cfg, resized, cpu, compiled=False)
    assert str(e.value) == (f"teacher {digits_teacher} expects other inputs (size {digits_data.image_size}, mean "
                            f"{digits_data.mean}, std {digits_data.std}) than this run; distill from a run on "
                            "the same data and resize")


def test_setup_counts_the_steps_of_a_run_set_in_epochs(tmp_path, digits_data, monkeypatch):
    from reslab.train import setup

    tuned = []  # a CPU run keeps freed memory in the process for the next step's activations
    monkeypatch.setattr(setup, "tune_allocator", lambda: tuned.append(True))
    run = setup.setup(tiny(iters=None, epochs=3, batch_size=658), tmp_path / "runs" / "two", False, digits_data, Dist())
    assert (tmp_path / "runs" / "two" / "config.json").is_file()  # the directory made with its parents
    assert (run.total_steps, run.env["steps_per_epoch"], tuned) == (6, 2, [True])  # 1,317 training images
    assert run.device == torch.device("cpu") and run.env["device"] == "cpu"
    assert run.scaler is None  # only float16 autocast needs its loss scaled
    monkeypatch.setattr(setup, "amp_dtype", lambda cfg, device: torch.float16)  # as a GPU's fp16 would
    run = setup.setup(tiny(amp="fp16"), tmp_path / "fp16", False, digits_data, Dist())
    assert run.amp == torch.float16 and isinstance(run.scaler, torch.amp.GradScaler) and run.scaler._device == "cpu"


@pytest.mark.parametrize("compile, steps_left, compiled", [
    ("on", 1, True), ("off", 10**6, False), ("auto", 1999, False), ("auto", 2000, True)])
def test_the_compile_setting_decides_whether_the_model_is_compiled(compile, steps_left, compiled):
    # auto compiles once 2,000 steps are left (COMPILE_AUTO_MIN_STEPS), enough to win the compile time back
    from reslab.train import setup

    model = torch.nn.Linear(2, 2)
    wrapped = setup.wrap(model, tiny(compile=compile), steps_left, Dist(), torch.device("cpu"))
    assert (wrapped is not model) == compiled
    if compiled:  # torch.compile's lazy wrapper: nothing is compiled until the first call
        assert isinstance(wrapped, torch._dynamo.eval_frame.OptimizedModule) and wrapped._orig_mod is model


def test_compiled_run_matches_eager(tmp_path, digits_data, monkeypatch):
    # compile=on on a CPU switches the BNs to reslab's compiled BatchNorm2d: the same losses and
    # statistics. Compiled or not, float rounding grows over these steps on 8x8 digits (compiled
    # nn.BatchNorm2d ends 2e-3 from eager too), so only the first steps are held to 1e-4.
    cfg = dict(iters=6, amp="none", val_size=0, test=False, lr=0.01)
    train(tiny(**cfg), tmp_path / "eager", progress=False, data=digits_data)
    from reslab.models import BatchNorm2d
    from reslab.train import setup

    switched, real = [], setup.compiled_batchnorm
    monkeypatch.setattr(setup, "compiled_batchnorm", lambda m: switched.append(real(m)))
    train(tiny(**cfg, compile="on"), tmp_path / "compiled", progress=False, data=digits_data)
    assert len(switched) == 1
    assert sum(type(m) is BatchNorm2d for m in switched[0].modules()) == 19  # every BN of ResNet-20
    losses = [[r["loss"] for r in _steps(tmp_path / run) if r["kind"] == "step"] for run in ("eager", "compiled")]
    assert len(losses[1]) == 6
    torch.testing.assert_close(losses[1][:3], losses[0][:3], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(losses[1], losses[0], atol=1e-2, rtol=1e-2)
    eager, compiled = (load_checkpoint(tmp_path / run / "last.pt")["model"] for run in ("eager", "compiled"))
    assert list(compiled) == list(eager)
    for key in ("bn1.running_mean", "bn1.running_var", "layer3.2.bn2.running_var"):
        torch.testing.assert_close(compiled[key], eager[key], atol=1e-3, rtol=1e-2)
    assert compiled["bn1.num_batches_tracked"].item() == 6


def _poison_fifth_update(monkeypatch):
    """The update of step 5 sets a weight to inf; the loss shows it at step 6."""
    import reslab.train.step as step

    real = step.optimizer_step
    calls = {"n": 0}

    def poison_fifth(opt, model, cfg, scaler):
        real(opt, model, cfg, scaler)
        calls["n"] += 1
        if calls["n"] == 5:
            with torch.no_grad():
                next(model.parameters()).fill_(float("inf"))

    monkeypatch.setattr(step, "optimizer_step", poison_fifth)


def test_diverged_weights_are_not_saved_over_the_last_good_checkpoint(tmp_path, digits_data, monkeypatch):
    """Weights that went to inf before the loss did: last.pt keeps the last finite step."""
    _poison_fifth_update(monkeypatch)
    with pytest.raises(NonFiniteLoss, match="the weights had diverged: .*keeps step 4"):
        train(tiny(iters=30, ckpt_every=2), tmp_path / "inf", progress=False, data=digits_data)
    ckpt = load_checkpoint(tmp_path / "inf" / "last.pt")
    assert ckpt["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_a_diverged_ema_is_not_saved_over_the_last_good_checkpoint(tmp_path, digits_data, monkeypatch):
    """The EMA is checked as the weights are: an average gone to inf keeps last.pt at the last finite step."""
    import reslab.train.loop as loop
    import reslab.train.step as step

    real_update, real_step = step.EMA.update, loop.train_step
    done = {"steps": 0}

    def poison_fifth(self, model, at):
        real_update(self, model, at)
        if at == 4:  # the average after step 5; the model itself stays finite
            with torch.no_grad():
                next(self.module.parameters()).fill_(float("inf"))

    def nan_sixth(model, opt, x, y, cfg, *args):
        loss, correct = real_step(model, opt, x, y, cfg, *args)
        return (float("nan") if done["steps"] == 5 else loss), correct

    monkeypatch.setattr(step.EMA, "update", poison_fifth)
    monkeypatch.setattr(loop, "train_step", nan_sixth)
    with pytest.raises(NonFiniteLoss, match="the weights had diverged: .*keeps step 4"):
        train(tiny(iters=30, ckpt_every=2, ema_decay=0.9), tmp_path / "ema", progress=False, data=digits_data,
              on_step=lambda n: done.update(steps=n))
    ckpt = load_checkpoint(tmp_path / "ema" / "last.pt")
    assert ckpt["state"]["step"] == 4
    assert all(torch.isfinite(v).all() for sd in (ckpt["model"], ckpt["ema"]) for v in sd.values()
               if v.is_floating_point())


def test_weights_diverged_before_any_checkpoint_leave_nothing_to_resume(tmp_path, digits_data, monkeypatch):
    _poison_fifth_update(monkeypatch)
    with pytest.raises(NonFiniteLoss) as e:
        train(tiny(iters=30), tmp_path / "inf", progress=False, data=digits_data)
    assert "; stopped; the weights had diverged before the first checkpoint: nothing to resume; lower lr" in str(e.value)
    assert not (tmp_path / "inf" / "last.pt").exists()


def test_init_from_a_missing_file_names_the_option(tmp_path, digits_data):
    missing = tmp_path / "missing.pt"
    with pytest.raises(ReslabError) as e:
        train(tiny(init=str(missing)), tmp_path / "run", progress=False, data=digits_data)
    assert str(e.value) == f"init: no checkpoint, weights file or run directory at {missing}"


def test_teacher_targets_run_under_the_runs_autocast():
    from types import SimpleNamespace

    from reslab.models import create_model
    from reslab.train.step import teacher_targets

    torch.manual_seed(0)
    teacher = create_model("resnet20", num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32)
    soft = teacher_targets(teacher, x, SimpleNamespace(distill_alpha=0.7, distill_temperature=3.0), torch.bfloat16)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        want = teacher(x).float()
    assert torch.equal(soft.logits, want) and soft.logits.dtype == torch.float32 and not soft.logits.requires_grad
    with torch.no_grad():
        assert not torch.equal(soft.logits, teacher(x))  # bf16 logits, not fp32 ones
    assert (soft.alpha, soft.temperature) == (0.7, 3.0)


def test_resuming_a_finished_run_without_a_test_split_returns_no_test_figures(tmp_path, digits_data):
    first = train(tiny(iters=4, test=False), tmp_path / "run", progress=False, data=digits_data)
    summary = tmp_path / "run" / "summary.json"
    written = summary.read_bytes()
    again = train(None, tmp_path / "run", resume=True, progress=False)
    assert first.test is None and (again.steps, again.test) == (4, None)
    assert summary.read_bytes() == written  # read back, not finished a second time
    older = {k: v for k, v in json.loads(summary.read_text()).items() if k != "train_img_s"}
    summary.write_text(json.dumps(older))  # a summary without a field: finished again, not trusted
    assert train(None, tmp_path / "run", resume=True, progress=False).steps == 4
    assert "train_img_s" in json.loads(summary.read_text())


def test_a_rank_other_than_the_first_writes_nothing(tmp_path, digits_data):
    from reslab.train.setup import setup

    out = tmp_path / "run"
    run = setup(tiny(), out, resume=False, splits=digits_data, dist=Dist(rank=1))
    assert run.save("last.pt") is None
    run.log.write("event", step=0, message="not written")
    assert not out.exists()  # no directory, config.json, metrics.jsonl or checkpoint on rank 1
    main = setup(tiny(), out, resume=False, splits=digits_data, dist=Dist(rank=0))
    assert main.save("last.pt") == out / "last.pt"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "last.pt"]


def test_the_loss_scale_of_an_fp16_run_is_checkpointed_and_restored(tmp_path, digits_data):
    # fp16 autocast, and with it a GradScaler, needs CUDA; the scaler's state round-trips the same on CPU
    from reslab.train.record import Checkpoint
    from reslab.train.setup import setup

    run = setup(tiny(amp="fp16"), tmp_path / "run", resume=False, splits=digits_data, dist=Dist())
    assert (run.amp, run.scaler) == (None, None)  # no fp16 autocast on a CPU, so no scaler
    run.scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)
    ckpt = Checkpoint.read(run.save("last.pt"))
    assert (ckpt.scaler["scale"], ckpt.scaler["growth_interval"]) == (1024.0, 7)
    other = setup(tiny(), tmp_path / "other", resume=False, splits=digits_data, dist=Dist())
    other.scaler = torch.amp.GradScaler("cpu")  # 65536 and 2000 until restored
    other.restore(ckpt)
    assert (other.scaler.get_scale(), other.scaler.get_growth_interval()) == (1024.0, 7)
    other.scaler = None  # a run without a scaler ignores the checkpoint's
    other.restore(ckpt)


def test_the_first_epoch_to_reach_the_best_validation_accuracy_is_chosen(tmp_path, digits_data, monkeypatch):
    import reslab.train.loop as loop

    figures = iter([0.5, 0.7, 0.7, 0.6])  # epochs 0-3 (10 steps each): a tie for the best at steps 20 and 30
    monkeypatch.setattr(loop, "_validate", lambda run: {"val_loss": 1.0, "val_acc": next(figures), "val_top5": 1.0})
    result = train(tiny(iters=40, batch_size=128, test=False), tmp_path / "run", progress=False, data=digits_data)
    assert result.best_val_acc == 0.7
    state = load_checkpoint(tmp_path / "run" / "last.pt")["state"]
    assert (state["best_step"], state["best_acc"], load_checkpoint(tmp_path / "run" / "best.pt")["state"]["step"]) == (
        20, 0.7, 20)


def test_validation_and_test_figures_are_the_emas_under_the_runs_autocast(tmp_path, digits_data, monkeypatch):
    import reslab.train.loop as loop
    from reslab.evaluate import evaluate
    from reslab.train.record import load_trained
    from reslab.train.splits import make_loader

    plots = []
    monkeypatch.setattr(loop, "plot_runs", lambda runs, out, title: plots.append((runs, out, title)))
    cfg = tiny(iters=20, ema_decay=0.9, amp="bf16")
    result = train(cfg, tmp_path / "run", progress=False, data=digits_data)
    run = tmp_path / "run"
    ema = load_trained(run / "last.pt").model  # the EMA's weights, as kept
    assert not torch.equal(ema.state_dict()["fc.weight"], load_checkpoint(run / "last.pt")["model"]["fc.weight"])

    if cfg.channels_last:  # as the loop holds it: bf16 kernels differ with the memory format on some CPUs
        ema = ema.to(memory_format=torch.channels_last)

    def figures(ds, amp):
        return evaluate(ema, make_loader(ds, cfg, False, torch.device("cpu"), batch_size=512), 10, amp)

    # bf16 kernels may differ between the run's process and this one (an AMD EPYC Zen 4 measured 6e-5
    # relative on the loss): the same figures to within 5e-4, a fifth of the gap between bf16 and fp32 here (2.6e-3)
    bf16_rel = 5e-4

    val, val_fp32 = figures(digits_data.val, torch.bfloat16), figures(digits_data.val, None)
    assert val.loss != pytest.approx(val_fp32.loss, rel=1e-5)  # bf16 figures are not fp32's
    epoch = [r for r in _steps(run) if r["kind"] == "epoch"][-1]
    assert (epoch["val_acc"], epoch["val_top5"]) == (val.top1, val.top5)
    assert epoch["val_loss"] == pytest.approx(val.loss, rel=bf16_rel)
    assert abs(val.loss - val_fp32.loss) > 2 * bf16_rel * val.loss  # the tolerance still tells bf16 from fp32
    test = figures(digits_data.test, torch.bfloat16)  # best.pt is last.pt: one validation
    assert (result.test.n, result.test.top1, result.test.top5) == (360, test.top1, test.top5)
    assert result.test.loss == pytest.approx(test.loss, rel=bf16_rel)
    records = [{k: v for k, v in r.items() if k != "time"} for r in _steps(run) if r["kind"] == "test"]
    assert records == [{"kind": "test", "step": 20, "checkpoint": "best.pt", "loss": result.test.loss,
                        "acc": result.test.top1, "top5": result.test.top5}]
    assert plots == [([run], run / "curves.png", "resnet20 on digits")]


def test_the_runs_autocast_and_the_teachers_targets_reach_every_step(tmp_path, digits_data, digits_teacher,
                                                                    monkeypatch):
    import reslab.train.loop as loop

    calls = []  # (who, its autocast, the soft targets)

    def targets(teacher, x, cfg, amp):
        calls.append(("teacher", amp, soft := loop_targets(teacher, x, cfg, amp)))
        return soft

    def step(model, opt, x, y, cfg, amp, scaler, soft):
        calls.append(("step", amp, soft))
        return loop_step(model, opt, x, y, cfg, amp, scaler, soft)

    loop_targets, loop_step = loop.teacher_targets, loop.train_step
    monkeypatch.setattr(loop, "teacher_targets", targets)
    monkeypatch.setattr(loop, "train_step", step)
    for amp, dtype in (("bf16", torch.bfloat16), ("none", None)):
        calls.clear()
        train(tiny(iters=2, teacher=digits_teacher, amp=amp), tmp_path / amp, progress=False, data=digits_data)
        assert [(who, a) for who, a, _ in calls] == [("teacher", dtype), ("step", dtype)] * 2
        assert all(calls[i][2] is not None and calls[i][2] is calls[i + 1][2] for i in (0, 2))


def test_without_a_validation_split_the_test_split_is_monitored_but_never_chosen_on(tmp_path):
    cfg = tiny(iters=10, val_size=0)
    result = train(cfg, tmp_path / "run", progress=False)
    epoch = [r for r in _steps(tmp_path / "run") if r["kind"] == "epoch"][-1]
    assert not any(k.startswith("val_") for k in epoch)
    assert (epoch["test_acc"], epoch["test_top5"]) == (result.test.top1, result.test.top5)  # last.pt: the same weights
    assert epoch["test_loss"] == pytest.approx(result.test.loss, rel=1e-6)
    assert result.best_val_acc is None and not (tmp_path / "run" / "best.pt").exists()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["chosen"] == "last.pt"


def test_a_batch_of_every_training_image_is_one_step_an_epoch(tmp_path, digits_data):
    n = len(digits_data.train)  # 1,317
    out = tmp_path / "runs" / "one"  # its parent is made too
    train(tiny(iters=2, batch_size=n, test=False), out, progress=False, data=digits_data)
    assert [r["epoch"] for r in _steps(out) if r["kind"] == "epoch"] == [0, 1]
    with pytest.raises(ReslabError, match=f"batch_size {n + 1} leaves no batch of the {n} images"):
        train(tiny(iters=2, batch_size=n + 1), tmp_path / "none", progress=False, data=digits_data)


def test_train_refuses_what_is_not_a_run_in_one_line(tmp_path):
    """A config that is not a TrainConfig, an `out` that is not a path, or resume=True on a
    directory without last.pt: each is the one line the CLI prints, naming what to give."""
    def line(call) -> str:
        with pytest.raises(ReslabError) as e:
            call()
        return str(e.value)

    needs = "train needs a TrainConfig (e.g. preset('fast-cifar')), got {}; only resume=True may leave it None"
    assert line(lambda: train({"model": "resnet20"}, tmp_path / "a")) == needs.format("dict")
    assert line(lambda: train(None, tmp_path / "a")) == needs.format("NoneType")
    assert line(lambda: train(tiny(), 42)) == "out must be a directory path, got int"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert line(lambda: train(None, empty, resume=True)) == \
        f"no checkpoint {empty / 'last.pt'} to resume: {empty} holds no reslab run"
    assert sorted(tmp_path.iterdir()) == [empty] and not any(empty.iterdir())  # nothing written


def test_train_uses_the_splits_it_is_given(tmp_path, digits_data):
    """`data` is what the run trains, validates and tests on, not cfg's data loaded again:
    64 training images in batches of 32 are 2 steps an epoch, so 4 steps end epoch 1."""
    small = dataclasses.replace(digits_data, train=digits_data.train.subset(range(64)),
                                test=digits_data.test.subset(range(50)))
    result = train(tiny(iters=4), tmp_path / "run", progress=False, data=small)
    epochs = [r for r in _steps(tmp_path / "run") if r["kind"] == "epoch"]
    assert [(r["epoch"], r["step"]) for r in epochs] == [(0, 2), (1, 4)]
    assert result.test.n == 50 and len(digits_data.train) > 1000
