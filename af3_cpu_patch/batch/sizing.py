"""The time and memory a batch asks SLURM/PBS for, from the forecasts of the tasks its jobs will run.

Why: a job's ``--time`` and ``--mem`` are fixed before it starts.  Too little
time kills the job in the middle of a task, too little memory gets it killed
for memory; far too much waits longer in the queue.  The tasks are known
before any job starts (``plan``), each with its token bucket, so the memory
forecast (:mod:`af3_cpu_patch.host.memory_forecast`) and the time forecast
(:mod:`af3_cpu_patch.host.forecast_time`) size the jobs; what the user gave
(``--walltime``, ``--memory``) always wins.

- ``sbatch --array``: every array task runs one shard (every N-th task), so
  the array asks for the longest shard's time and the largest task's memory;
- dask-jobqueue: the batch's work spread over ``--jobs`` jobs, and a worker
  lifetime (which ends before the walltime) that still holds that share.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib

from af3_cpu_patch import predict
from af3_cpu_patch.batch import engines, layout, plan, worker
from af3_cpu_patch.host import forecast_time

MEMORY_HEADROOM = 1.15  # over the memory forecast (itself a fit x 1.1): a job killed for memory loses its task
PROCESS_GB = 0.5  # the job's own processes besides AF3's (the shell, a Dask worker and its nanny)
RETRY_MEMORY_FACTOR = 1.5  # an array task killed (out of memory) is submitted once more with this much more
FALLBACK_WALLTIME = "24:00:00"  # when work without a forecast (the data pipeline) is left


def job_memory_gb(forecast_gb: float) -> int:
    """Whole GB a job running tasks of this memory forecast asks for."""
    return math.ceil(forecast_gb * MEMORY_HEADROOM + PROCESS_GB)


def retry_memory_gb(memory: str) -> int:
    return math.ceil(engines.parse_memory_gb(memory) * RETRY_MEMORY_FACTOR)


def lifetime_walltime(needed: int) -> int:
    """The shortest walltime whose worker lifetime (:func:`engines.worker_lifetime`) is at least ``needed`` seconds."""
    seconds = max(needed + 300, math.ceil(needed * 10 / 9))
    return math.ceil(seconds / 60) * 60


def shard_seconds(tasks: list[plan.Task], settings: worker.BatchOptions, cores: int, cpu=None) -> float:
    return forecast_time.run_seconds([t.bucket for t in tasks], num_recycles=settings.num_recycles,
                                     num_diffusion_samples=settings.num_diffusion_samples, cores=cores, cpu=cpu)


@dataclasses.dataclass
class Sized:
    options: engines.ClusterOptions
    notes: list[str]  # how each value was chosen, for the user (and the sbatch script's comments)


def size(options: engines.ClusterOptions, made: plan.Plan, settings: worker.BatchOptions, shards: int,
         for_workers: bool = False, cpu=None) -> Sized:
    """``options`` with ``walltime`` and ``memory`` filled in from the forecasts where the user gave none.

    ``shards``: array tasks (or jobs sharing the batch); ``for_workers``: the
    jobs hold Dask workers, whose lifetime must still hold their share.
    """
    cpu = cpu or forecast_time.cpu_class()
    out = settings.output_dir
    todo = [t for t in made.tasks if not layout.is_done(out, t)]
    todo_keys = {t.key for t in todo}
    notes: list[str] = []
    memory, walltime = options.memory, options.walltime
    if memory is None:
        peak = max((t.forecast_gb for t in (todo or made.tasks)), default=0.0)
        memory = f"{job_memory_gb(peak)}GB"
        notes.append(f"--mem {memory}: the largest task's memory forecast {peak:g} GB x {MEMORY_HEADROOM} + {PROCESS_GB} GB")
    if walltime is None:
        cores = settings.threads or options.cores or 1  # SLURM gives a job without --cpus-per-task one CPU
        chains = [c for c in made.chains if not layout.chain_file(out, c).is_file()]
        if chains or settings.exact:
            walltime = FALLBACK_WALLTIME
            why = (f"{len(chains)} chain(s) wait for the data pipeline, whose time is not forecast" if chains
                   else "--exact runs (stock numerics) are not forecast")
            notes.append(f"--time {walltime}: {why}; give --walltime")
        else:
            longest = max((shard_seconds([t for t in made.shard(i, shards) if t.key in todo_keys], settings, cores, cpu)
                           for i in range(shards)), default=0.0)
            seconds = forecast_time.request_seconds(longest)
            if for_workers:
                seconds = lifetime_walltime(seconds)
            walltime = forecast_time.walltime(seconds, days=options.cluster != "pbs")
            notes.append(f"--time {walltime}: the longest {'job share' if for_workers else 'shard'} forecast "
                         f"~{forecast_time.human(longest)} on {cores} core(s) ({cpu.source}) x {forecast_time.TIME_MARGIN}"
                         f", at least {forecast_time.MIN_REQUEST_S // 60} min"
                         + ("; plus the worker lifetime's margin" if for_workers else ""))
    return Sized(dataclasses.replace(options, memory=memory, walltime=walltime), notes)


def size_batch(options: engines.ClusterOptions, inputs: list[pathlib.Path], settings: worker.BatchOptions,
               run_data_pipeline: bool, shards: int, for_workers: bool = False) -> Sized:
    """:func:`size` for the batch of these inputs, planned as the runner plans it."""
    buckets = predict.effective_buckets(settings.buckets, settings.exact)
    return size(options, plan.make_plan(plan.input_files(inputs), buckets, run_data_pipeline), settings, shards, for_workers)
