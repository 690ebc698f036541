"""Dask worker preload: ``dask worker --preload af3_cpu_patch.batch.preload``.

Runs in each worker process before any task: applies the batch patches
before AF3 can be imported, and on a local cluster of several workers gives
each worker its own slice of the cores (XLA would otherwise size every
worker's thread pool to the whole machine and oversubscribe it).
"""

from __future__ import annotations

import os

import af3_cpu_patch
from af3_cpu_patch.host import cpu_info
from af3_cpu_patch.patches import BATCH_PATCHES


def _pin_local_worker(worker) -> None:
    workers = int(os.environ.get("AF3_CPU_LOCAL_WORKERS", "1"))
    try:
        index = int(worker.name)
    except (TypeError, ValueError):
        return
    cpus = cpu_info.allowed_cpus()
    if workers <= 1 or index >= workers or not hasattr(os, "sched_setaffinity"):
        return
    each = len(cpus) // workers
    os.sched_setaffinity(0, cpus[index * each:(index + 1) * each])


def dask_setup(worker) -> None:

    _pin_local_worker(worker)
    os.environ["JAX_PLATFORMS"] = "cpu"
    af3_cpu_patch.install(BATCH_PATCHES)
