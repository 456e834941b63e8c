"""TensorBoard and MLflow receive what metrics.jsonl records: read back, value by value."""

import json

import pytest

from reslab.errors import ReslabError
from reslab.train import TrainConfig, train


def _cfg(**changes) -> TrainConfig:
    base = dict(model="resnet20", model_args={"depth": 8}, data="digits", iters=6, batch_size=64, val_size=200,
                lr=0.05, augment=None, amp="none", compile="off", threads=1, device="cpu", log_every=1)
    return TrainConfig(**{**base, **changes})


def _records(run, kind):
    return [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if f'"kind": "{kind}"' in ln]


def test_tensorboard_and_mlflow_hold_the_run(tmp_path):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "runs" / "r8"
    train(_cfg(log="tensorboard,mlflow"), run, progress=False)
    steps, epochs = _records(run, "step"), _records(run, "epoch")

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tb_loss = [(e.step, e.value) for e in events.Scalars("step/loss")]
    assert tb_loss == [(r["step"], pytest.approx(r["loss"], rel=1e-6)) for r in steps]
    assert [e.value for e in events.Scalars("epoch/val_acc")] == pytest.approx([r["val_acc"] for r in epochs])
    assert "config/text_summary" in events.Tags()["tensors"]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    run_id = (run / "mlflow_run_id").read_text().strip()
    mlrun = client.get_run(run_id)
    assert mlrun.info.run_name == "r8" and mlrun.info.status == "FINISHED"
    assert mlrun.data.params["lr"] == "0.05" and mlrun.data.params["model"] == "resnet20"
    assert set(mlrun.data.params) == set(_cfg().to_dict())  # the config's fields; the environment is no parameter
    history = client.get_metric_history(run_id, "step/loss")
    assert sorted((m.step, m.value) for m in history) == [(r["step"], pytest.approx(r["loss"])) for r in steps]
    test = _records(run, "test")[0]
    assert mlrun.data.metrics["test/acc"] == pytest.approx(test["acc"])
    assert [a.path for a in client.list_artifacts(run_id)] == ["model.safetensors"]
    assert (tmp_path / "runs" / "mlartifacts").is_dir()  # beside the runs, not in the working directory


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    from reslab.train import TrainingInterrupted

    monkeypatch.chdir(tmp_path)  # a store named by URI keeps its artifacts under the working directory
    run, store = tmp_path / "r", f"sqlite:///{tmp_path / 'store' / 'runs.db'}"
    (tmp_path / "store").mkdir()

    def stop_at_3(step):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted):
        train(_cfg(log="mlflow", mlflow_uri=store), run, progress=False, on_step=stop_at_3)
    first = (run / "mlflow_run_id").read_text()
    train(None, run, resume=True, progress=False)
    assert (run / "mlflow_run_id").read_text() == first
    assert not (tmp_path / "mlflow.db").exists()  # the store asked for, not the default one beside the run
    client = MlflowClient(tracking_uri=store)
    steps = sorted(m.step for m in client.get_metric_history(first.strip(), "step/loss"))
    assert steps == [1, 2, 3, 4, 5, 6]


def test_bad_log_value_and_missing_package(monkeypatch, tmp_path):
    with pytest.raises(ReslabError, match="log must be none or"):
        _cfg(log="wandb")
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ReslabError, match=r"pip install 'reslab\[tensorboard\]'"):
        train(_cfg(log="tensorboard"), tmp_path / "r", progress=False)
