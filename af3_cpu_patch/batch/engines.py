"""Where batch tasks run: existing engines only, no scheduler of our own.

- ``local``: a ``distributed.LocalCluster`` on 127.0.0.1 sized to this
  machine (one worker process with all its cores and memory, or ``--workers``
  processes with a slice each; one task at a time per worker);
- ``scheduler``: a running Dask scheduler (``--scheduler`` / ``--scheduler-file``);
- ``slurm`` / ``pbs``: ``dask-jobqueue`` clusters with worker lifetimes under
  the walltime and adaptive scaling;
- ``shard``: no service, this process runs its slice of the task list (the
  body of an ``sbatch --array`` job, and the fallback without Dask).

Dask and dask-jobqueue are the optional ``[dask]`` extra.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shlex

from af3_cpu_patch.errors import UsageProblem
from af3_cpu_patch.host import cpu_info, memory_forecast

MEMORY_RESOURCE = "af3_memory_gb"  # Dask worker resource: GB a worker can give one task
PRELOAD = "af3_cpu_patch.batch.preload"
LOCAL_WORKERS_ENV = "AF3_CPU_LOCAL_WORKERS"
DEFAULT_WALLTIME = "24:00:00"  # for callers that size no jobs (batch.sizing fills it from the forecasts)
MEMORY_RETRY_ENV = "AF3_CPU_MEMORY_RETRY"  # set in an array task submitted again after it was killed
KILLED_STATUS = 137  # bash's status of a child killed by SIGKILL, as the out-of-memory killer kills


def have_dask() -> bool:
    return importlib.util.find_spec("distributed") is not None


def have_dashboard() -> bool:
    return importlib.util.find_spec("bokeh") is not None


def have_jobqueue() -> bool:
    return importlib.util.find_spec("dask_jobqueue") is not None


@dataclasses.dataclass
class ClusterOptions:
    cluster: str | None = None  # slurm | pbs
    jobs: int = 1
    cores: int | None = None
    memory: str | None = None  # e.g. "32GB"; None: from the memory forecasts (batch.sizing)
    walltime: str | None = None  # [D-]HH:MM:SS; None: from the time forecasts (batch.sizing)
    queue: str | None = None
    account: str | None = None
    python: str | None = None  # the interpreter on the compute nodes (default: this one)


def parse_memory_gb(text: str) -> float:
    value = text.strip().upper().removesuffix("B")
    scale = {"K": 2**-20, "M": 2**-10, "G": 1, "T": 2**10}.get(value[-1:], None)
    try:
        return float(value[:-1]) * scale if scale else float(value) / 2**30
    except ValueError:
        raise UsageProblem(f"--memory {text!r} is not a size: give e.g. 32GB") from None


def walltime_seconds(walltime: str) -> int:
    """SLURM/PBS walltime ``[D-]HH:MM:SS`` (or ``MM:SS``) in seconds."""
    days, _, clock = walltime.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    while len(parts) < 3:
        parts.insert(0, 0)
    return int(days or 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def worker_lifetime(walltime: str) -> tuple[str, str]:
    """A worker lifetime under the job's walltime, and its stagger: the worker retires before the job is killed."""
    seconds = walltime_seconds(walltime)
    margin = max(300, seconds // 10)
    lifetime = max(60, seconds - margin)
    return f"{lifetime}s", f"{min(300, lifetime // 10)}s"


def local_layout(workers: int | None) -> tuple[int, int, float]:
    """(workers, cores each, GB each) on this machine.

    By default one worker holding every core and all available memory: XLA
    parallelises one prediction over the cores, and a second model in memory
    only pays off where one task cannot use the machine (``--workers N``).
    """
    cores = cpu_info.usable_cores()
    memory = memory_forecast.available_gb() or 8.0
    workers = workers or 1
    if workers > cores:
        raise UsageProblem(f"--workers {workers} exceeds the {cores} cores here: give at most {cores}")
    return workers, cores // workers, round(memory / workers, 1)


def local_cluster(workers: int | None, max_memory_gb: float | None = None):
    """A LocalCluster on 127.0.0.1; returns it and the GB each worker may give a task (None: no limit)."""
    from distributed import LocalCluster

    count, cores_each, memory_each = local_layout(workers)
    if max_memory_gb is not None:
        memory_each = max_memory_gb
    os.environ[LOCAL_WORKERS_ENV] = str(count)  # read by the preload to give each worker its own cores
    cluster = LocalCluster(
        n_workers=count, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=":0",
        resources={MEMORY_RESOURCE: memory_each if memory_each != float("inf") else 1e9}, memory_limit=0, preload=[PRELOAD],
    )
    return cluster, (None if memory_each == float("inf") else memory_each)


def jobqueue_cluster(options: ClusterOptions, scheduler_host: str | None = None):
    """A dask-jobqueue SLURM/PBS cluster: one worker process per job, using the job's cores."""
    if not have_jobqueue():
        raise UsageProblem("--cluster needs dask-jobqueue: pip install 'af3-cpu-patch[dask]'")
    import dask_jobqueue

    if not options.cores or not options.memory:
        raise UsageProblem("--cluster needs --cores per job (e.g. --cores 16); --memory comes from the forecasts unless given")
    memory_gb = parse_memory_gb(options.memory)
    walltime = options.walltime or DEFAULT_WALLTIME
    lifetime, stagger = worker_lifetime(walltime)
    kind = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[options.cluster]
    kwargs = dict(
        cores=options.cores, processes=1, memory=options.memory, walltime=walltime, queue=options.queue,
        account=options.account, python=options.python, job_name="af3-cpu",
        worker_extra_args=["--lifetime", lifetime, "--lifetime-stagger", stagger, "--lifetime-restart",
                           "--resources", f"{MEMORY_RESOURCE}={round(memory_gb * 0.95, 1)}", "--preload", PRELOAD,
                           "--nthreads", "1"],
        job_script_prologue=["export JAX_PLATFORMS=cpu"],
    )
    if scheduler_host:
        kwargs["scheduler_options"] = {"host": scheduler_host}
    return kind(**{k: v for k, v in kwargs.items() if v is not None}), memory_gb * 0.95


def sbatch_script(argv: list[str], shards: int, options: ClusterOptions, log_dir: str, notes: list[str] = (),
                  retry_memory: str | None = None) -> str:
    """A ready ``sbatch --array`` script: each array task runs its ``--shard`` of the same batch.

    ``notes`` become comments (how --time and --mem were chosen).  With
    ``retry_memory``, an array task whose batch process was killed by SIGKILL
    (what the out-of-memory killer sends under SLURM's cgroup memory limit)
    submits itself once more with that much memory: a re-run resumes, so
    only the killed task and the rest of its shard run again.
    """
    walltime = options.walltime or DEFAULT_WALLTIME
    lines = ["#!/bin/bash", "#SBATCH --job-name=af3-cpu", f"#SBATCH --array=0-{shards - 1}",
             f"#SBATCH --time={walltime}", f"#SBATCH --output={log_dir}/af3-cpu-%A_%a.log"]
    if options.cores:
        lines.append(f"#SBATCH --cpus-per-task={options.cores}")
    if options.memory:
        lines.append(f"#SBATCH --mem={slurm_memory(options.memory)}")
    if options.queue:
        lines.append(f"#SBATCH --partition={options.queue}")
    if options.account:
        lines.append(f"#SBATCH --account={options.account}")
    cut = argv.index("--") if "--" in argv else len(argv)
    command = [shlex.quote(a) for a in argv[:cut]] + [f'--shard "${{SLURM_ARRAY_TASK_ID}}/{shards}"'] + [shlex.quote(a) for a in argv[cut:]]
    lines += [""] + [f"# {note}" for note in notes]
    if retry_memory:
        lines += [f"# Killed by SIGKILL (out of memory): submitted once more with --mem={slurm_memory(retry_memory)}; the re-run resumes.",
                  "retry_if_killed() {",
                  f'    if [ "$?" -eq {KILLED_STATUS} ] && [ -z "${{{MEMORY_RETRY_ENV}:-}}" ]; then',
                  f'        sbatch --export=ALL,{MEMORY_RETRY_ENV}=1 --mem={slurm_memory(retry_memory)} '
                  '--array="${SLURM_ARRAY_TASK_ID}" "$0"',
                  "    fi",
                  "}",
                  "trap retry_if_killed EXIT"]
    lines += ["# Each array task runs its slice of the batch; re-submitting resumes (finished tasks are skipped).",
              "export JAX_PLATFORMS=cpu", " ".join(command)]
    return "\n".join(lines + [""])


def slurm_memory(memory: str) -> str:
    """``--mem`` of a size such as 32GB: SLURM's 32G."""
    return memory.strip().upper().removesuffix("B")
