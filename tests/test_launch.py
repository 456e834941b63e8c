"""reslab.launch without a cluster: what `--launcher slurm` says where submitit or Slurm is
missing, the job record in a run directory and the states read from it, Slurm's variables as
torchrun's, and the command a report names. (Against a real Slurm: test_slurm.py.)"""

import json
import sys
import types

import pytest

from reslab import launch
from reslab.cli import _reproducing, main
from reslab.launch import JobRecord, Local, Slurm, SlurmOptions, status
from reslab.rundir import RunDir
from reslab.runtime import Dist, dist_from_env, first_host, torchrun_env_from_slurm
from reslab.train import find_runs, format_runs, run_summary
from reslab.train.config import recipe_differences

DIGITS = ["experiment", "degradation", "--depths", "8", "--epochs", "1", "--launcher", "slurm"]


def test_without_submitit_the_slurm_launcher_is_one_line_with_the_install_hint(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    assert main([*DIGITS, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'reslab[slurm]'" in err
    assert not (tmp_path / "runs").exists()


def test_without_slurms_commands_the_slurm_launcher_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "submitit", types.ModuleType("submitit"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert main([*DIGITS, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no sbatch" in err
    assert main(["train", "--data", "digits", "--iters", "1", "--out", str(tmp_path / "r"), "--launcher", "slurm"]) == 2
    assert "no sbatch" in capsys.readouterr().err


def test_a_job_record_marks_a_queued_run_that_training_then_fills(tmp_path, monkeypatch, capsys):
    run = tmp_path / "runs" / "resnet-8-s0"
    JobRecord("slurm", "41_1", str(tmp_path / "slurm" / "41_1_0_log.err"), 1.0).write(run)
    assert JobRecord.read(run) == JobRecord("slurm", "41_1", str(tmp_path / "slurm" / "41_1_0_log.err"), 1.0)
    assert JobRecord.read(tmp_path) is None
    assert [p.name for p in run.iterdir()] == ["job.json"]  # nothing of the atomic write is left
    cfg = launch_config()
    RunDir(run).check_new(recipe_differences(cfg))  # the record is no run: training may start there
    assert find_runs([tmp_path / "runs"]) == [run]
    row = run_summary(run)
    assert (row["job"], row["log"], row["status"]) == ("41_1", str(tmp_path / "slurm" / "41_1_0_log.err"), "stopped")
    # the states: Slurm's while it holds the job, then done (the run finished) or failed
    assert status(run, "41_1", {"41_1": "queued"}) == "queued"
    assert status(run, "41_1", {}) == "failed"
    assert f"job 41_1 failed; its log: {row['log']}" in format_runs([{**row, "status": "failed"}])
    (run / "summary.json").write_text("{}")
    assert status(run, "41_1", {}) == "done"
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # away from the cluster: the files' status
    assert main(["runs", str(tmp_path / "runs"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["job"] == "41_1"


def launch_config():
    from reslab.experiments import digits_recipe

    return digits_recipe(epochs=1)


def test_job_states_read_squeue(monkeypatch):
    calls = []

    def squeue(cmd, **kwargs):
        calls.append(cmd)
        return types.SimpleNamespace(returncode=0, stderr="", stdout="7_0|RUNNING\n7_1|PENDING\n8|COMPLETING\n9|RUNNING\n")

    monkeypatch.setattr(launch.shutil, "which", lambda name: "/usr/bin/" + name)
    monkeypatch.setattr(launch.subprocess, "run", squeue)
    assert launch.job_states(["7_1", "7_0", "8", "10"]) == {"7_0": "running", "7_1": "queued", "8": "running"}
    assert calls[0][-1] == "--jobs=10,7_0,7_1,8"
    assert launch.job_states([]) == {} and len(calls) == 1
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, **kw: types.SimpleNamespace(
        returncode=1, stdout="", stderr="slurm_load_jobs error: Invalid job id specified\n"))
    assert launch.job_states(["10"]) == {}  # every one has left the queue


def test_each_launcher_gives_a_run_its_threads():
    assert Local(1).per_task(None, 4) == (None, True)  # in this process, with its progress
    assert Local(2).per_task(4, 4) == (2, False)
    assert Local(2).per_task(4, 1) == (4, True)
    assert Slurm(SlurmOptions(cpus_per_task=6)).per_task(None, 9) == (6, False)
    assert Slurm(SlurmOptions(cpus_per_task=6)).per_task(2, 9) == (2, False)


def test_slurms_variables_become_torchruns_in_a_step_of_several_tasks(monkeypatch):
    step = {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "1", "SLURM_JOB_ID": "1234",
            "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_NTASKS": "4"}
    assert torchrun_env_from_slurm(step) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1",
                                             "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "gpu07", "MASTER_PORT": "21234"}
    assert torchrun_env_from_slurm({**step, "MASTER_ADDR": "head", "MASTER_PORT": "29500"})["MASTER_ADDR"] == "head"
    assert torchrun_env_from_slurm({**step, "RANK": "0"}) == {}  # torchrun's own, under srun
    # a batch script's shell has the job's task count but is one process
    assert torchrun_env_from_slurm({"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_JOB_ID": "1"}) == {}
    assert torchrun_env_from_slurm({**step, "SLURM_STEP_NUM_TASKS": "1", "SLURM_PROCID": "0"}) == {}
    environ = dict(step)
    monkeypatch.setattr("os.environ", environ)
    assert dist_from_env() == Dist(rank=3, world=4, local_rank=1)
    assert environ["MASTER_ADDR"] == "gpu07"  # for torch.distributed's env:// rendezvous
    assert [first_host(h) for h in ("vm", "gpu[07-09,12],cpu01", "a1,b2", "r[1-2]-n[03-04]")] == \
        ["vm", "gpu07", "a1", "r1-n03"]


def test_the_reports_command_leaves_out_where_the_runs_trained():
    argv = ["experiment", "depth", "--depths", "8", "--launcher", "slurm", "--slurm-arg", "qos=high",
            "--slurm-time=30", "--nets", "resnet-8", "plain-8", "--slurm-gpus-per-run", "1", "--out", "o", "--collect"]
    assert _reproducing(argv) == ["experiment", "depth", "--depths", "8", "--out", "o"]


@pytest.mark.parametrize("bad", ["qos", "=high"])
def test_slurm_arg_takes_key_value(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([*DIGITS, "--out", str(tmp_path), "--slurm-arg", bad])
    assert e.value.code == 2 and "KEY=VALUE" in capsys.readouterr().err
