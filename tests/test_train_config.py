"""TrainConfig validation, presets and LR schedules: pure functions, no training."""

import math
from types import SimpleNamespace

import pytest

from reslab.errors import ReslabError
from reslab.train import PRESETS, TrainConfig, lr_at, lr_curve, preset


def test_paper_cifar_preset_has_the_published_numbers():
    cfg = preset("paper-cifar")
    assert (cfg.lr, cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert cfg.iters == 64000 and cfg.val_size == 5000 and cfg.augment == "cifar"
    # lr /10 at 32k and 48k of 64k iterations
    assert lr_at(cfg, 31999, 64000) == pytest.approx(0.1)
    assert lr_at(cfg, 32000, 64000) == pytest.approx(0.01)
    assert lr_at(cfg, 47999, 64000) == pytest.approx(0.01)
    assert lr_at(cfg, 48000, 64000) == pytest.approx(0.001)
    assert cfg.warmup_lr is None  # resnet20 needs no warm-up


def test_paper_cifar_warms_up_the_deep_nets():
    cfg = preset("paper-cifar", model="resnet110")
    assert (cfg.warmup_lr, cfg.warmup_until_error) == (0.01, 0.8)


def test_every_preset_builds():
    for name in PRESETS:
        assert isinstance(preset(name), TrainConfig)
    d2l = preset("d2l-fashion")
    assert (d2l.lr, d2l.batch_size, d2l.resize, d2l.epochs) == (0.05, 256, 96, 10)


@pytest.mark.parametrize("changes, field", [
    ({"lr": -0.1}, "lr"), ({"momentum": 1.0}, "momentum"), ({"batch_size": 0}, "batch_size"),
    ({"optimizer": "lion"}, "optimizer"), ({"milestones": (0.75, 0.5)}, "milestones"),
    ({"epochs": None, "iters": None}, "epochs or iters"), ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"warmup_lr": 0.01}, "warmup_lr"), ({"nesterov": True, "momentum": 0.0}, "nesterov"),
    ({"sam_rho": 0.0}, "sam_rho"), ({"distill_alpha": 1.5}, "distill_alpha"),
    ({"distill_temperature": 0}, "distill_temperature"),
    ({"model_args": "{bad"}, "model_args must be a JSON object"), ({"milestones": 0.5}, "milestones must be a list"),
    ({"betas": ["a", "b"]}, "betas must be two numbers"),
    ({"loader": "disk"}, "loader must be one of"), ({"workers": -1}, "workers must be"),
    ({"loader": "stream", "data": "cifar10"}, "loader=stream reads image folders"),
])
def test_bad_values_name_the_field(changes, field):
    with pytest.raises(ReslabError, match=field):
        TrainConfig(**changes)


def test_overrides_parse_json_and_reject_unknown_fields():
    cfg = TrainConfig().with_overrides(["lr=0.05", "milestones=[0.3,0.6]", "amp=none", "nesterov=true",
                                        "grad_clip=null", "data=imagefolder:/x"])
    assert cfg.lr == 0.05 and cfg.milestones == (0.3, 0.6) and cfg.amp == "none" and cfg.nesterov
    assert cfg.data == "imagefolder:/x" and cfg.grad_clip is None
    with pytest.raises(ReslabError, match="unknown config field"):
        TrainConfig().with_overrides(["learning_rate=0.1"])
    with pytest.raises(ReslabError, match="key=value"):
        TrainConfig().with_overrides(["lr"])


def test_giving_one_run_length_clears_the_other():
    # The defaults and paper-cifar set iters=64000, which would otherwise win over a given epochs
    cfg = TrainConfig().with_overrides(["epochs=6"])
    assert (cfg.epochs, cfg.iters) == (6, None)
    assert preset("paper-cifar", epochs=3).iters is None
    assert preset("fast-cifar").with_overrides(["iters=100"]).epochs is None
    assert TrainConfig().replace(iters=500).iters == 500
    both = TrainConfig().with_overrides(["epochs=2", "iters=50"])
    assert (both.epochs, both.iters) == (2, 50)  # both given: iters wins, as documented


def test_config_round_trips_through_dict():
    cfg = preset("fast-cifar", model="resnet32")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_onecycle_warms_up_linearly_then_decays_to_zero():
    cfg = TrainConfig(schedule="onecycle", lr=0.4, warmup_iters=100, warmup_start=0.1, iters=1000)
    curve = lr_curve(cfg, 1000)
    assert curve[0] == pytest.approx(0.04)
    assert curve[50] == pytest.approx(0.04 + 0.36 * 0.5)
    assert max(curve) == pytest.approx(0.4) and curve.index(max(curve)) == 100
    assert curve[-1] == pytest.approx(0.4 / 900)
    assert lr_at(cfg, 1000, 1000) == 0.0
    assert all(a >= b for a, b in zip(curve[100:], curve[101:], strict=False))


def test_cosine_is_half_way_at_the_middle():
    cfg = TrainConfig(schedule="cosine", lr=0.2, iters=200)
    assert lr_at(cfg, 0, 200) == pytest.approx(0.2)
    assert lr_at(cfg, 100, 200) == pytest.approx(0.1)
    assert lr_at(cfg, 200, 200) == pytest.approx(0.0, abs=1e-12)
    assert not any(math.isnan(v) for v in lr_curve(cfg, 200))


def test_schedule_edges_clamp_and_refuse():
    constant = TrainConfig(schedule="constant", lr=0.3, warmup_iters=10, warmup_start=0.5, iters=40)
    assert lr_curve(constant, 40)[10:] == [0.3] * 30 and lr_at(constant, 5, 40) == pytest.approx(0.225)
    # a warm-up longer than the run ends one step before it, and steps outside the run are clamped
    long_warm = TrainConfig(schedule="cosine", lr=0.1, warmup_iters=50, warmup_start=0.0, iters=5)
    assert lr_curve(long_warm, 5) == pytest.approx([0.0, 0.025, 0.05, 0.075, 0.1])
    assert lr_at(long_warm, -3, 5) == 0.0 and lr_at(long_warm, 99, 5) == lr_at(long_warm, 5, 5)
    # the one step after that warm-up is the whole decay: 0 at the end, for either decaying schedule
    for schedule in ("cosine", "onecycle"):
        assert lr_at(TrainConfig(**{**long_warm.to_dict(), "schedule": schedule}), 5, 5) == pytest.approx(0.0, abs=1e-12)
    one = TrainConfig(schedule="cosine", lr=0.1, iters=1)
    assert lr_curve(one, 1) == [pytest.approx(0.1)]  # a one-step run starts at the full lr
    with pytest.raises(ValueError) as e:
        lr_at(one, 0, 0)
    assert str(e.value) == "total_steps must be >= 1, got 0"
    with pytest.raises(ValueError, match="^unknown schedule 'linear'$"):
        lr_at(SimpleNamespace(**{**one.to_dict(), "schedule": "linear"}), 0, 1)  # past TrainConfig's check


def test_the_papers_warm_up_is_one_rule_for_presets_and_experiments():
    from reslab.experiments import cifar_net, net_config
    from reslab.train.config import paper_warmup

    on = {"warmup_lr": 0.01, "warmup_until_error": 0.8}
    assert paper_warmup("resnet110", {}, 0.1, "multistep") == on == paper_warmup("resnet20", {"depth": 110}, 0.1,
                                                                                    "multistep")
    assert paper_warmup("resnet56", {}, 0.1, "multistep") == {} == paper_warmup("resnet152", {}, 0.1, "multistep")
    assert paper_warmup("resnet110", {}, 0.05, "multistep") == {} == paper_warmup("resnet110", {}, 0.1, "cosine")
    assert preset("paper-cifar", model="preact_resnet110").warmup_lr == 0.01
    assert preset("paper-cifar", model="resnet110", warmup_lr=0.02, warmup_until_error=0.5).warmup_lr == 0.02
    base = preset("paper-cifar")
    assert net_config(base, cifar_net("resnet", 110), 0).warmup_lr == 0.01
    assert net_config(base, cifar_net("plain", 56), 0).warmup_lr is None
