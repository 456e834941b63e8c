"""The run directory's one owner: its file names, the typed summary, the chosen checkpoint and
the rules for writing into it (without training: the files are written by hand)."""

import json
import multiprocessing
from pathlib import Path

import pytest

from reslab.errors import ReslabError
from reslab.rundir import BEST, LAST, RunDir, Summary, prev_path

SUMMARY = Summary(steps=30, best_val_acc=0.5, chosen=BEST,
                  test={"n": 10, "loss": 1.0, "top1": 0.7, "top5": 1.0, "per_class": [0.7]},
                  train_seconds=1.5, train_img_s=100.0)


def _run(tmp_path: Path, *files: str) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.path.mkdir(parents=True)
    for name in files:
        (run.path / name).write_text(name)
    return run


def test_the_names_of_a_run_directory(tmp_path):
    run = RunDir(tmp_path)
    assert [p.name for p in (run.config_file, run.metrics, run.last, run.best, run.weights, run.summary_file,
                             run.curves, run.job, run.row)] == [
        "config.json", "metrics.jsonl", "last.pt", "best.pt", "model.safetensors", "summary.json", "curves.png",
        "job.json", "row.json"]
    assert prev_path(run.last).name == "prev.pt" and prev_path(run.best).name == "best.prev.pt"


def test_a_summary_round_trips_and_marks_the_run_finished(tmp_path):
    run = _run(tmp_path)
    assert not run.is_finished() and run.summary() is None
    run.write_summary(SUMMARY)
    assert run.is_finished() and run.summary() == SUMMARY and run.summary().test_acc == 0.7
    assert json.loads(run.summary_file.read_text())["chosen"] == "best.pt"
    assert sorted(p.name for p in run.path.iterdir()) == ["summary.json"]  # no temporary file left


@pytest.mark.parametrize("text", ["{not json", "[]", '{"steps": 3}', json.dumps({**SUMMARY.to_dict(), "steps": "3"}),
                                  json.dumps({**SUMMARY.to_dict(), "test": {"n": 3}})])
def test_a_summary_this_version_does_not_write_reads_as_none(tmp_path, text):
    run = _run(tmp_path)
    run.summary_file.write_text(text)
    assert run.is_finished() and run.summary() is None


def test_the_chosen_checkpoint(tmp_path):
    run = _run(tmp_path, LAST)
    assert run.chosen("model") == run.chosen("weights") == run.chosen("resume") == run.last
    (run.path / BEST).write_text("b")
    (run.path / "model.safetensors").write_text("w")
    assert run.chosen("model") == run.best and run.chosen("weights") == run.weights and run.chosen("resume") == run.last
    run.write_summary(Summary(**{**SUMMARY.to_dict(), "chosen": LAST}))  # the finished run tested last.pt
    assert run.chosen("model") == run.last
    run.write_summary(Summary(**{**SUMMARY.to_dict(), "chosen": "../elsewhere.pt"}))  # only its own files
    assert run.chosen("model") == run.best
    assert run.choose(validated=True) == run.best and run.choose(validated=False) == run.last
    run.best.unlink()
    assert run.choose(validated=True) == run.last


def test_what_a_directory_holds(tmp_path):
    run = _run(tmp_path, "config.json")
    assert not run.is_run() and run.is_listed() and not run.has_checkpoint() and not run.has_log()
    (run.path / "metrics.jsonl").write_text("")
    assert run.is_run() and run.has_log()
    queued = _run(tmp_path / "q", "job.json")
    assert queued.is_listed() and not queued.is_run()


def test_check_new(tmp_path):
    same, other = (lambda saved: []), (lambda saved: ["lr"])
    RunDir(tmp_path / "new").check_new(same)  # not there yet
    run = _run(tmp_path, "config.json", "metrics.jsonl")
    run.config_file.write_text("{}")
    with pytest.raises(ReslabError, match="the start of another run"):
        run.check_new(other)
    run.check_new(same)  # the same recipe, killed before its first checkpoint: starts over
    assert not run.has_log() and run.config_file.is_file()
    (run.path / "job.json").write_text("{}")
    run.check_new(same)  # the job's record does not count
    (run.path / LAST).write_text("x")
    with pytest.raises(ReslabError, match="already holds a run; resume it with --resume"):
        run.check_new(same)
    mine = _run(tmp_path / "u", "notes.txt", "a.csv", "b.csv", "c.csv")
    with pytest.raises(ReslabError, match=r"files that are not a reslab run \(a.csv, b.csv, c.csv, \.\.\.\)"):
        mine.check_new(same)
    assert (mine.path / "notes.txt").read_text() == "notes.txt"
    (tmp_path / "f").write_text("mine")
    with pytest.raises(ReslabError, match="is a file; --out takes a directory"):
        RunDir(tmp_path / "f").check_new(same)


def test_check_recipe(tmp_path):
    run = _run(tmp_path)
    run.check_recipe(lambda saved: ["lr"], {"lr": 0.1})  # nothing saved: nothing to differ from
    run.write_config({"lr": 0.2, "env": {}})
    run.check_recipe(lambda saved: [], {"lr": 0.2})
    with pytest.raises(ReslabError, match=r"another recipe \(lr 0.2 there, 0.1 here\)"):
        run.check_recipe(lambda saved: ["lr"] if saved["lr"] != 0.1 else [], {"lr": 0.1})
    run.config_file.write_text("{cut")
    with pytest.raises(ReslabError, match=f"cannot read run {run.path}: its config.json is unreadable"):
        run.check_recipe(lambda saved: [], {})


def _hold(path: str, ready, release) -> None:
    with RunDir(path).exclusive():
        ready.set()
        release.wait(30)


def test_one_process_at_a_time(tmp_path):
    run = RunDir(tmp_path / "a" / "run")
    ctx = multiprocessing.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold, args=(str(run.path), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(ReslabError, match="another process is training into"), run.exclusive():
            pass
        with run.exclusive(main=False):  # ranks > 0 take no lock
            pass
    finally:
        release.set()
        holder.join(30)
    with run.exclusive():  # the lock went with its process
        assert run.path.is_dir()


def test_a_directory_that_cannot_be_made_is_one_line(tmp_path):
    (tmp_path / "f").write_text("mine")
    with pytest.raises(ReslabError, match="cannot write the run directory"), RunDir(tmp_path / "f" / "r").exclusive():
        pass
    assert (tmp_path / "f").read_text() == "mine"
