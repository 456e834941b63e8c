"""Where runs train: on this machine (`Local`) or on a Slurm cluster (`Slurm`, through
submitit), behind one interface.

    jobs = Slurm(SlurmOptions(partition="gpu", minutes=240, gpus_per_node=1)).submit(tasks)
    wait(jobs)                              # or, later and from any shell: reslab runs OUT/runs

A `Task` is one call, fn(*args), that trains into its run directory and, called again, resumes
from that directory's last checkpoint (`reslab.experiments.train_net`, `reslab.train.train_or_resume`).
`Local.submit` runs the tasks before it returns. `Slurm.submit` returns once each is queued as
a job (many tasks: one job array) and has written the job's id and log into the run directory
(job.json, a `JobRecord`), so that any later shell can tell a run queued, running, failed (and
where its log is) or done. A job that is preempted or reaches its time limit is requeued by
submitit with the same call, which resumes from the checkpoint.

submitit is an optional dependency (pip install 'reslab[slurm]'), imported only to submit.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .errors import ReslabError, is_whole
from .rundir import RunDir

__all__ = ["Job", "JobRecord", "Local", "Slurm", "SlurmOptions", "Task", "job_states", "recorded_jobs",
           "status", "wait", "with_job_states"]

INSTALL_HINT = "pip install 'reslab[slurm]'"


@dataclass(frozen=True)
class Task:
    """One run to train: fn(*args) trains into run_dir, and resumes there when called again.
    fn and args must pickle (a module-level function, plain data), to run in another process."""

    name: str
    run_dir: Path
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass
class Job:
    """A submitted task (its name and run directory): its scheduler's job id and log (None for
    a task run here) and, for a task run here, what fn returned."""

    name: str
    run_dir: Path
    id: str | None = None
    log: Path | None = None
    result: Any = None


@dataclass(frozen=True)
class JobRecord:
    """job.json: the scheduler's job that trains a run, written when the job is submitted."""

    launcher: str  # "slurm"
    id: str  # "123", or "123_4" for a task of a job array
    log: str  # the job's stderr, where a failure's traceback goes
    submitted: float  # time.time() at submission

    def write(self, run_dir: Path) -> None:
        """Atomically: a reader sees the old record or the new one."""
        run_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(RunDir(run_dir).job) as tmp:
            tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, run_dir: str | Path) -> JobRecord | None:
        """The run's record; None where it has none (trained here) or one this version cannot read."""
        try:
            return cls(**json.loads(RunDir(run_dir).job.read_text()))
        except (OSError, ValueError, TypeError):
            return None


# --- this machine ----------------------------------------------------------------------
class Local:
    """Runs the tasks on this machine, `jobs` at a time: one after another in this process, or
    each in its own spawned process (on_done(result) as each one ends)."""

    def __init__(self, jobs: int = 1, on_done: Callable[[Any], None] | None = None) -> None:
        if not is_whole(jobs, 1):
            raise ReslabError(f"jobs must be positive, got {jobs}")
        self.jobs, self.on_done = jobs, on_done

    def per_task(self, threads: int | None, n: int) -> tuple[int | None, bool]:
        """(CPU threads for each of n tasks given the `threads` asked for, whether a task may draw
        its progress here): processes at once split the threads between them."""
        if self.jobs == 1 or n <= 1:
            return threads, True
        import torch

        return max(1, (threads or torch.get_num_threads()) // self.jobs), False

    def submit(self, tasks: Sequence[Task]) -> list[Job]:
        """Runs every task; returns once all are done (a task's exception is raised here)."""
        if self.jobs == 1 or len(tasks) <= 1:
            return [Job(t.name, t.run_dir, result=t.fn(*t.args)) for t in tasks]
        jobs = {}
        # spawn: a fork of a process that already ran torch's thread pools can deadlock
        with ProcessPoolExecutor(min(self.jobs, len(tasks)), mp_context=get_context("spawn")) as pool:
            futures = {pool.submit(t.fn, *t.args): t for t in tasks}
            for f in as_completed(futures):
                t = futures[f]
                jobs[t.name] = Job(t.name, t.run_dir, result=f.result())
                if self.on_done is not None:
                    self.on_done(jobs[t.name].result)
        return [jobs[t.name] for t in tasks]


# --- a Slurm cluster ---------------------------------------------------------------------
@dataclass(frozen=True)
class SlurmOptions:
    """What each job asks Slurm for; `extra` holds any other sbatch option by its long name
    ({"account": "lab", "qos": "high", "constraint": "a100"})."""

    partition: str | None = None  # None: the cluster's default
    minutes: int = 60  # time limit of a job; one out of time is requeued and resumes
    cpus_per_task: int = 1  # also the threads a run uses unless its recipe sets them
    gpus_per_node: int = 0
    mem: str | None = None  # per node, in Slurm's syntax ("16G"); None: the cluster's default
    nodes: int = 1
    tasks_per_node: int = 1  # processes per node: one per GPU for multi-GPU training
    parallel: int | None = None  # tasks of a job array running at once; None: no limit of ours
    extra: dict[str, str] = field(default_factory=dict)


class Slurm:
    """Submits each task as a Slurm job through submitit; logs go to `logs` (a directory every
    node sees)."""

    def __init__(self, options: SlurmOptions | None = None, logs: str | Path = "slurm-logs",
                 name: str = "reslab") -> None:
        self.options, self.logs, self.name = options or SlurmOptions(), Path(logs).absolute(), name

    def per_task(self, threads: int | None, n: int) -> tuple[int | None, bool]:
        """Each job has its own CPUs: the threads asked for, else one per CPU; no progress bars."""
        return threads or self.options.cpus_per_task, False

    def submit(self, tasks: Sequence[Task]) -> list[Job]:
        """Queues the tasks (one job array for several) and returns their jobs; a task whose run
        already has a job queued or running keeps that job instead of getting a second one."""
        submitit = _submitit()
        records = {t.name: JobRecord.read(t.run_dir) for t in tasks}
        live = job_states(r.id for r in records.values() if r)
        kept = {t.name: Job(t.name, t.run_dir, r.id, Path(r.log)) for t in tasks
                if (r := records[t.name]) and r.id in live}
        todo = [t for t in tasks if t.name not in kept]
        submitted = self._submit(submitit, todo) if todo else []
        for job in submitted:
            JobRecord("slurm", job.id, str(job.log), time.time()).write(job.run_dir)
        by_name = kept | {j.name: j for j in submitted}
        return [by_name[t.name] for t in tasks]

    def _submit(self, submitit: Any, tasks: Sequence[Task]) -> list[Job]:
        o = self.options
        executor = submitit.SlurmExecutor(folder=self.logs, python=shlex.quote(sys.executable))
        params: dict[str, Any] = {"job_name": self.name, "time": o.minutes, "nodes": o.nodes,
                                  "ntasks_per_node": o.tasks_per_node, "cpus_per_task": o.cpus_per_task,
                                  "additional_parameters": {**({"mem": o.mem} if o.mem else {}), **o.extra}}
        if o.partition:
            params["partition"] = o.partition
        if o.gpus_per_node:
            params["gpus_per_node"] = o.gpus_per_node
        if o.parallel:
            params["array_parallelism"] = o.parallel
        executor.update_parameters(**params)
        failures = (submitit.core.utils.FailedJobError, submitit.core.utils.FailedSubmissionError, OSError)
        try:
            with executor.batch():  # several tasks: one job array
                pending = [executor.submit(_Resumable(t.fn, t.args)) for t in tasks]
        except failures as e:
            lines = [s for s in str(e).splitlines() if "error" in s.lower()] or str(e).splitlines() or [repr(e)]
            raise ReslabError(f"Slurm refused the jobs: {lines[0].strip()}") from None
        return [Job(t.name, t.run_dir, j.job_id, Path(j.paths.stderr)) for t, j in zip(tasks, pending)]


class _Resumable:
    """The call a job makes, fn(*args); submitit calls checkpoint() when Slurm signals the
    job's preemption or time limit, and requeues what it returns: the same call, which resumes
    from the run's last checkpoint. (submitit looks for the method, as on its Checkpointable.)"""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args

    def __call__(self) -> Any:
        return self.fn(*self.args)

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self)


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ReslabError(f"the Slurm launcher needs submitit: {INSTALL_HINT}") from None
    if shutil.which("sbatch") is None:
        raise ReslabError("the Slurm launcher needs Slurm's commands (sbatch, squeue), and there is no sbatch on "
                          "this machine's PATH: submit from the cluster's login node, or use --launcher local")
    return submitit


# --- what became of the jobs ---------------------------------------------------------------
_RUNNING = {"RUNNING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"}


def job_states(ids: Iterable[str]) -> dict[str, str]:
    """Slurm's jobs among `ids` that are still in its queue: id -> "queued" or "running" (a job
    that ended is absent). Empty where there is no squeue (runs looked at away from the cluster)."""
    ids = sorted(set(ids))
    if not ids or shutil.which("squeue") is None:
        return {}
    done = subprocess.run(["squeue", "--noheader", "--array", "--format=%i|%T", f"--jobs={','.join(ids)}"],
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:  # every one of them has left the queue
            return {}
        raise ReslabError(f"squeue failed: {(done.stderr.strip().splitlines() or ['no message'])[-1]}")
    states = dict(line.split("|", 1) for line in done.stdout.split() if "|" in line)
    return {i: "running" if s in _RUNNING else "queued" for i, s in states.items() if i in ids}


def status(run_dir: Path, job_id: str | None, live: dict[str, str]) -> str:
    """A run's state: its job's while Slurm still holds it, else done (it finished) or failed."""
    if job_id in live:
        return live[job_id]
    return "done" if RunDir(run_dir).is_finished() else "failed"


def wait(jobs: Sequence[Job], poll_s: float = 10.0, timeout_s: float | None = None) -> dict[str, str]:
    """Waits until no job is queued or running (at most timeout_s); returns each task's state,
    done or failed."""
    ids = [j.id for j in jobs if j.id is not None]
    start = time.monotonic()
    while live := job_states(ids):
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise ReslabError(f"{len(live)} jobs still queued or running after {timeout_s:.0f} s: {', '.join(live)}")
        time.sleep(poll_s)
    return {j.name: "done" if j.id is None else status(j.run_dir, j.id, {}) for j in jobs}


def recorded_jobs(run_dirs: Iterable[str | Path]) -> list[Job]:
    """The jobs recorded in these run directories (job.json), e.g. to wait() for them from
    another process than the one that submitted them; runs without a record are left out."""
    return [Job(Path(d).name, Path(d), r.id, Path(r.log)) for d in run_dirs if (r := JobRecord.read(d))]


def with_job_states(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`reslab runs` rows (train.logging.run_summary) with the state of each run's job, where it
    has one; the files' status where Slurm cannot be asked."""
    if shutil.which("squeue") is None:
        return rows
    live = job_states(r["job"] for r in rows if r["job"])
    return [{**r, "status": status(r["run"], r["job"], live)} if r["job"] else r for r in rows]
