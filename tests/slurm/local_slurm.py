"""A one-node SLURM on 127.0.0.1: its own slurm.conf, state, spool and logs in a temporary folder.

Why: af3-cpu's SLURM paths (the ``--print-sbatch`` array script, dask-jobqueue's
SLURMCluster, a job killed at its walltime) only show that they work against a
real slurmctld and slurmd.  Debian's slurm-wlm (``tests/slurm/install.sh``) runs
here without cgroups, munge or system services: ``auth/none``,
``proctrack/linuxproc``, ``task/none``, no accounting.  The daemons run in the
foreground as children of the test process and are stopped, with every process
of their jobs, by :meth:`LocalSlurm.stop` (found by their ``SLURM_CONF``, which
names this cluster's own file).
"""

from __future__ import annotations

import getpass
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import time

TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}
COMMANDS = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")


class Unavailable(Exception):
    """SLURM is not installed here or its daemons would not start: the tests skip with this reason."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _memory_mb() -> int:
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(int(line.split()[1]) / 1024 * 0.9)  # slurmd drains a node that has less than its RealMemory
    return 4096


class LocalSlurm:
    def __init__(self, root: pathlib.Path, cpus: int = 2):
        self.root = root
        self.node = socket.gethostname().split(".")[0]
        self.cpus = cpus
        self.conf = root / "slurm.conf"
        self.daemons: list[subprocess.Popen] = []

    # -- configuration -----------------------------------------------------------------------
    def write_conf(self) -> None:
        user = getpass.getuser()
        for name in ("state", "spool", "log", "tmp"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self.conf.write_text("\n".join([
            "ClusterName=af3cpu",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/none",
            "CredType=cred/none",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            f"StateSaveLocation={self.root / 'state'}",
            f"SlurmdSpoolDir={self.root / 'spool'}",
            f"TmpFS={self.root / 'tmp'}",
            f"SlurmctldPidFile={self.root / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.root / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.root / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.root / 'log' / 'slurmd.log'}",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "MailProg=/bin/true",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core_Memory",
            "DefMemPerCPU=1000",
            "SchedulerType=sched/builtin",  # schedules at each submission and job end: no waiting for a backfill pass
            "SlurmdParameters=config_overrides",
            "ReturnToService=2",
            "KillWait=2",  # SIGTERM to SIGKILL at the walltime
            "MinJobAge=600",  # finished jobs stay visible to squeue long enough for the tests to read their states
            "InactiveLimit=0",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={_memory_mb()} State=UNKNOWN",
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]))

    def env(self, base: dict | None = None) -> dict:
        env = dict(os.environ if base is None else base)
        env["SLURM_CONF"] = str(self.conf)
        return env

    # -- daemons ---------------------------------------------------------------------------------
    def start(self, timeout: float = 30) -> None:
        missing = [d for d in COMMANDS if shutil.which(d) is None]
        if missing:
            raise Unavailable(f"SLURM is not installed ({', '.join(missing)} not found): run tests/slurm/install.sh")
        self.write_conf()
        env = self.env()
        for argv in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", self.node]):
            log = open(self.root / "log" / f"{argv[0]}.out", "w")
            self.daemons.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(d.poll() is not None for d in self.daemons):
                break
            state = self.run("sinfo", "-h", "-n", self.node, "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.2)
        reason = self.log_tail()
        self.stop()
        raise Unavailable(f"SLURM's daemons did not come up in {timeout:g} s: {reason}")

    def log_tail(self) -> str:
        lines = []
        for name in ("slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            path = self.root / "log" / name
            if path.is_file():
                lines += [f"{name}: {line}" for line in path.read_text(errors="replace").splitlines() if "error" in line.lower()][-2:]
        return " | ".join(lines) or "no error logged"

    def stop(self) -> None:
        """Cancel every job, stop the daemons and kill what is left of this cluster's jobs."""
        if self.daemons and all(d.poll() is None for d in self.daemons):
            self.run("scancel", "--user", getpass.getuser(), check=False)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(s not in TERMINAL for s in self.states().values()):
                time.sleep(0.2)
        for daemon in self.daemons:
            if daemon.poll() is None:
                daemon.terminate()
        for daemon in self.daemons:
            try:
                daemon.wait(timeout=10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(timeout=10)
        for pid in self.job_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def job_processes(self) -> list[int]:
        """Processes of this cluster's jobs (slurmstepd, job scripts, their children): their SLURM_CONF is ours."""
        mine = f"SLURM_CONF={self.conf}".encode()
        daemons = {d.pid for d in self.daemons} | {os.getpid()}
        found = []
        for proc in pathlib.Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) in daemons:
                continue
            try:
                if mine in (proc / "environ").read_bytes().split(b"\0"):
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

    # -- jobs ------------------------------------------------------------------------------------
    def run(self, *argv: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(argv), env=self.env(env), capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def sbatch(self, script: pathlib.Path, *options: str, env: dict | None = None, cwd: pathlib.Path | None = None) -> str:
        """Submit; returns the job id."""
        proc = subprocess.run(["sbatch", "--parsable", *options, str(script)], env=self.env(env), capture_output=True,
                              text=True, timeout=60, cwd=cwd)
        if proc.returncode != 0:
            raise AssertionError(f"sbatch failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def states(self, job: str | None = None) -> dict[str, str]:
        """Job id (``ID_TASK`` for array tasks) -> state, finished jobs included."""
        argv = ["squeue", "-h", "-t", "all", "-r", "-o", "%i %T"] + (["-j", job] if job else [])
        out = self.run(*argv, check=False).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def wait(self, job: str | None = None, timeout: float = 300) -> dict[str, str]:
        """Until every job (of ``job``, an array's tasks included) has finished; returns their states."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.states(job)
            if states and all(s in TERMINAL for s in states.values()):
                return states
            if time.monotonic() > deadline:
                raise AssertionError(f"jobs still not finished after {timeout:g} s: {states}")
            time.sleep(0.5)
