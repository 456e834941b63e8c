"""`--launcher slurm` against a real single-node Slurm (slurm_cluster.LocalSlurm): an experiment's
runs as a job array give the local launcher's rows; a preempted job is requeued and resumes, a
cancelled one resubmitted resumes, both to the bit; two Slurm tasks train as two torchrun ranks;
docs/cluster.md's examples run.

Skipped, with the reason, where Slurm, munge or submitit is not installed (CI installs them).
"""

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import reslab
from reslab.cli import main
from reslab.launch import JobRecord, recorded_jobs, wait
from reslab.train.record import Checkpoint
from slurm_cluster import LocalSlurm, missing
from test_docs_examples import read_examples

WHY = missing()
pytestmark = [pytest.mark.slurm, pytest.mark.xdist_group("slurm"),
              pytest.mark.skipif(WHY is not None, reason=WHY or "")]

DIGITS = ["experiment", "degradation", "--depths", "8", "--set", "threads=1", "--quiet"]


@pytest.fixture(scope="module")
def slurm():
    """The cluster, its jobs importing this reslab with one thread each."""
    with pytest.MonkeyPatch.context() as mp:
        src = str(Path(reslab.__file__).parents[1])
        mp.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
        mp.setenv("OMP_NUM_THREADS", "1")
        with LocalSlurm() as cluster:
            yield cluster


def test_the_cluster_runs_tasks_and_stops_without_leaving_a_process():
    with LocalSlurm() as cluster:
        done = subprocess.run(["srun", "--ntasks=2", "sh", "-c", "echo $SLURM_PROCID/$SLURM_STEP_NUM_TASKS"],
                              capture_output=True, text=True, timeout=60)
        assert sorted(done.stdout.split()) == ["0/2", "1/2"], cluster.logs()
        pids = [p.pid for p in cluster.procs.values()]
    alive = [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not alive, f"still running: {alive}"


def test_an_experiment_through_slurm_reports_the_local_launchers_rows(slurm, tmp_path, capsys):
    assert main([*DIGITS, "--epochs", "1", "--out", str(tmp_path / "local")]) == 0
    capsys.readouterr()
    # --jobs 1: the array's runs one at a time (this machine's two cores are shared)
    assert main([*DIGITS, "--epochs", "1", "--out", str(tmp_path / "slurm"), "--launcher", "slurm", "--jobs", "1"]) == 0
    printed = capsys.readouterr().out
    runs = sorted((tmp_path / "slurm" / "runs").iterdir())
    records = [JobRecord.read(r) for r in runs]
    assert [r.name for r in runs] == ["plain-8-s0", "resnet-8-s0"]
    assert all(rec.id in printed for rec in records)
    assert len({rec.id.split("_")[0] for rec in records}) == 1  # one job array
    assert main(["runs", str(tmp_path / "slurm" / "runs"), "--json"]) == 0
    assert {r["status"] for r in json.loads(capsys.readouterr().out)} <= {"queued", "running", "done"}
    assert wait(recorded_jobs(runs), poll_s=1, timeout_s=300) == {"plain-8-s0": "done", "resnet-8-s0": "done"}
    collect = next(line.split(": ", 1)[1] for line in printed.splitlines() if line.endswith("--collect"))
    assert main(shlex.split(collect)[1:]) == 0
    assert _results(tmp_path / "slurm") == _results(tmp_path / "local")


def test_a_preempted_job_and_a_cancelled_one_resubmitted_resume_to_the_bit(slurm, tmp_path, capsys):
    one_net = [*DIGITS, "--epochs", "24", "--nets", "resnet-8"]
    submit = [*one_net, "--out", str(tmp_path / "slurm"), "--launcher", "slurm"]
    run = tmp_path / "slurm" / "runs" / "resnet-8-s0"
    assert main(submit) == 0
    job = JobRecord.read(run).id
    _until(lambda: _epochs(run) >= 3, run)
    # what Slurm sends ahead of a preemption or the time limit: submitit requeues the job
    subprocess.run(["scancel", "--signal=USR2", job], check=True)
    _until(lambda: _resumes(run) == 1 and _epochs(run) >= 6, run)
    assert JobRecord.read(run).id == job  # the same job, requeued
    subprocess.run(["scancel", job], check=True)  # killed outright
    wait(recorded_jobs([run]), poll_s=1, timeout_s=120)
    assert not (run / "summary.json").exists(), "the run finished before it was cancelled"
    capsys.readouterr()
    assert main(["runs", str(run.parent)]) == 0
    table = capsys.readouterr().out
    assert " failed " in table and f"its log: {JobRecord.read(run).log}" in table
    assert main(submit) == 0  # the same command again: a new job, resuming the run
    assert JobRecord.read(run).id != job
    assert wait(recorded_jobs([run]), poll_s=1, timeout_s=300) == {run.name: "done"}
    assert _resumes(run) == 2
    assert main([*one_net, "--out", str(tmp_path / "local")]) == 0  # uninterrupted
    interrupted, whole = (Checkpoint.read(d / "runs" / run.name / "last.pt") for d in (tmp_path / "slurm",
                                                                                        tmp_path / "local"))
    assert interrupted.step == whole.step == 24 * 22  # 22 batches of 64 per epoch
    for name, tensor in whole.model.items():
        assert torch.equal(interrupted.model[name], tensor), name
    assert main([*one_net, "--out", str(tmp_path / "slurm"), "--collect"]) == 0
    assert _results(tmp_path / "slurm") == _results(tmp_path / "local")


def test_two_slurm_tasks_train_as_two_torchrun_ranks(slurm, tmp_path, capsys):
    """The ranks take rank, world size and rendezvous from Slurm's variables instead of torchrun's."""
    args = ["--preset", "fast-cifar", "--model", "resnet20", "--data", "digits", "--iters", "12", "--quiet",
            "--set", "batch_size=64", "--set", "val_size=120", "--set", "augment=none", "--set", "compile=off",
            "--set", "threads=1", "--set", "device=cpu"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "reslab", "train", *args, "--out", str(tmp_path / "torchrun")]
    done = subprocess.run(torchrun, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    out = tmp_path / "slurm"
    assert main(["train", *args, "--out", str(out), "--launcher", "slurm", "--slurm-tasks-per-node", "2"]) == 0
    assert wait(recorded_jobs([out]), poll_s=1, timeout_s=300) == {"slurm": "done"}, \
        Path(JobRecord.read(out).log).read_text()[-2000:]
    ranks, whole = Checkpoint.read(out / "last.pt"), Checkpoint.read(tmp_path / "torchrun" / "last.pt")
    assert ranks.step == whole.step == 12 and ranks.env["world_size"] == whole.env["world_size"] == 2
    for name, tensor in whole.model.items():
        assert torch.equal(ranks.model[name], tensor), name


GUIDE = Path(__file__).resolve().parents[1] / "docs" / "cluster.md"
OURS = "tests/test_slurm.py runs it"  # in the skip reason of the examples that need a cluster


def test_the_cluster_guides_examples_run(slurm, tmp_path):
    """docs/cluster.md's examples that test_docs_examples.py skips for want of a cluster, run
    against this one: in order, in one directory (a block may read what an earlier one wrote)."""
    ours = [ex for ex in read_examples(GUIDE) if ex.skip and OURS in ex.skip]
    assert {ex.lang for ex in ours} == {"bash", "python"}
    env = {**os.environ, "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]])}
    for ex in ours:
        cmd = [sys.executable, "-c", ex.code] if ex.lang == "python" else ["bash", "-euo", "pipefail", "-c", ex.code]
        done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{ex.where}\n{done.stdout[-1000:]}{done.stderr[-2000:]}"


# --- helpers --------------------------------------------------------------------------
def _results(out: Path) -> dict:
    """results.json of the experiment without what differs between two trainings of the same runs."""
    r = json.loads((out / "degradation" / "results.json").read_text())
    strip = lambda rows: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]  # noqa: E731
    return {"runs": strip(r["runs"]), "summary": strip(r["summary"]), "recipe": r["recipe"],
            "environment": r["environment"]}


def _records(run: Path) -> list[dict]:
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:  # a line being written
            pass
    return records


def _epochs(run: Path) -> int:
    return len({r["step"] for r in _records(run) if r["kind"] == "epoch"})


def _resumes(run: Path) -> int:
    return sum(r["kind"] == "event" and r["message"] == "resumed" for r in _records(run))


def _until(ok, run: Path, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        if time.monotonic() > deadline:
            rec = JobRecord.read(run)
            raise AssertionError(f"waited {seconds} s; the job's log:\n"
                                 + (Path(rec.log).read_text()[-2000:] if rec and Path(rec.log).exists() else "none"))
        time.sleep(0.2)
