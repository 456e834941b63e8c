"""A real single-node Slurm cluster for the tests: munged, slurmctld and slurmd (Debian's
munge and slurm-wlm) started in a temporary directory, and stopped with every job.

    with LocalSlurm() as cluster:   # SLURM_CONF points at its slurm.conf meanwhile
        subprocess.run(["sbatch", ...])

This machine is both controller and node (its cores and memory), processes are tracked
without cgroups (proctrack/linuxproc, task/none), there is no accounting, and a requeued job
may start again after 10 s (cred_expire; Slurm's default is 120 s) with the scheduler looking
every 2 s.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
COMMANDS = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "srun")


def _daemon(name: str) -> str | None:
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))


def missing() -> str | None:
    """Why this machine cannot run the cluster, or None where it can."""
    absent = [p for p in DAEMONS if _daemon(p) is None] + [p for p in COMMANDS if shutil.which(p) is None]
    if absent:
        return f"Slurm is not installed ({', '.join(absent)} not found): apt-get install slurm-wlm munge"
    if importlib.util.find_spec("submitit") is None:
        return "submitit is not installed: pip install 'reslab[slurm]'"
    if os.geteuid() != 0:
        return "the local Slurm cluster runs as root (slurmd starts each job as its user)"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 1024


class LocalSlurm:
    def __init__(self) -> None:
        # munged wants its socket's directory, and every one above it, open to all
        self.root = Path(tempfile.mkdtemp(prefix="reslab-slurm-"))
        self.root.chmod(0o755)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.socket = self.root / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}
        self._env: str | None = None

    def __enter__(self) -> LocalSlurm:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def write_config(self) -> None:
        for d in ("munge", "state", "spool", "log"):
            (self.root / d).mkdir(mode=0o755)
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        r = self.root
        self.conf.write_text("\n".join([
            "ClusterName=reslabtest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.socket},cred_expire=10",
            "SlurmUser=root",
            "SlurmdUser=root",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=2,bf_interval=2",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "KillWait=5",
            "MinJobAge=600",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={int(_memory_mb() * 0.9)} "
            "State=UNKNOWN",
            f"PartitionName=debug Nodes={self.host} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def start(self) -> None:
        self.write_config()
        self._env, os.environ["SLURM_CONF"] = os.environ.get("SLURM_CONF"), str(self.conf)
        m = self.root / "munge"
        self._spawn("munged", ["munged", "--foreground", f"--key-file={m / 'munge.key'}", f"--socket={self.socket}",
                               f"--log-file={self.root / 'log' / 'munged.log'}", f"--pid-file={m / 'munged.pid'}",
                               f"--seed-file={m / 'munged.seed'}"])
        self._until(self.socket.exists, 20, "munged did not open its socket")
        self._spawn("slurmctld", ["slurmctld", "-D"])
        self._until(lambda: self._run(["sinfo", "-h"]).returncode == 0, 30, "slurmctld does not answer")
        self._spawn("slurmd", ["slurmd", "-D"])
        self._until(lambda: self._run(["sinfo", "-h", "-o", "%t"]).stdout.strip() == "idle", 60,
                    "the node did not become idle")

    def stop(self) -> None:
        """Cancels every job, then stops the daemons; nothing of the cluster is left running."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self._run(["scancel", "--full", f"--user={os.getuid()}"])
            deadline = time.monotonic() + 30
            while self._run(["squeue", "-h"]).stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.5)
        for name in reversed(list(self.procs)):
            p = self.procs[name]
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(15)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        self.procs.clear()
        if self._env is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = self._env
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self) -> str:
        """The end of each daemon's log, for a failure's message."""
        tails = []
        for f in sorted((self.root / "log").glob("*")):
            tails.append(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:]))
        return "\n".join(tails)

    def _spawn(self, name: str, cmd: list[str]) -> None:
        out = open(self.root / "log" / f"{name}.out", "wb")
        self.procs[name] = subprocess.Popen([_daemon(cmd[0]), *cmd[1:]], stdout=out, stderr=subprocess.STDOUT, cwd=self.root,
                                            start_new_session=True)
        out.close()

    def _run(self, cmd: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def _until(self, ok, seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not ok():
            dead = [n for n, p in self.procs.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"after {seconds} s"
                raise RuntimeError(f"{what} ({why}); the daemons' logs:\n{self.logs()}")
            time.sleep(0.3)
