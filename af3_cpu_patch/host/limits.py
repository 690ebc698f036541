"""The cores and memory this process may really use, and where each limit comes from.

Why: an AF3 run sized to the whole machine is killed (memory) or slowed by
oversubscription (cores) when the process only has a share of it: a SLURM
or PBS job, a systemd slice, a container.  Those limits sit in the
process's own nested cgroup or an ancestor of it (v1 or v2), in the
scheduler's environment, or in the affinity mask; none is visible in
``/proc/meminfo`` or ``os.cpu_count()``.  Each candidate is read, the
tightest wins, and its source is kept so that a refusal can say which limit
it hit.

Sources: cgroup v2 ``memory.max`` / ``cpu.max`` and v1
``memory.limit_in_bytes`` / ``cpu.cfs_quota_us`` on every cgroup from the
process's own up to its mount's root (memory available now: the limit less
the usage without reclaimable page cache, ``inactive_file``);
``SLURM_CPUS_PER_TASK``, ``SLURM_CPUS_ON_NODE``, ``SLURM_MEM_PER_NODE``,
``SLURM_MEM_PER_CPU`` (MB, or with a K/M/G/T unit; ``0`` means the whole
node); PBS Pro's ``NCPUS`` and Torque's ``PBS_NUM_PPN`` in a PBS job
(``PBS_JOBID`` set), and ``PBS_NCPUS``.  PBS exports no memory variable: it
enforces ``mem`` through cgroups, read above.  Then the affinity mask and
``/proc/meminfo``.  A scheduler's memory allocation counts as available
whole: what the job already uses shows in its cgroup, read above.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
from collections.abc import Collection, Mapping

from af3_cpu_patch.errors import UsageProblem
from af3_cpu_patch.host import cgroups

# cgroup v1 says "no limit" with a page-rounded 2**63 - 1; anything this large limits nothing.
UNLIMITED_BYTES = 2**60
_UNITS = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclasses.dataclass(frozen=True)
class Limit:
    value: int  # cores, or bytes
    source: str  # where it was read, e.g. "SLURM_MEM_PER_NODE=2048"


@dataclasses.dataclass(frozen=True)
class Limits:
    cores: Limit
    memory: Limit | None  # the most memory this process may hold (None: nothing readable)
    available: Limit | None  # of it, what it can still get now


def _tightest(candidates: list[Limit]) -> Limit | None:
    """The smallest value; on a tie the first listed (cgroups before the scheduler, before the system)."""
    return min(candidates, key=lambda c: c.value) if candidates else None


def _read(path: pathlib.Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _integer(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _stat(path: pathlib.Path, *keys: str) -> int:
    """The first of ``keys`` found in a cgroup's ``memory.stat`` (0 if none)."""
    values = dict(line.split()[:2] for line in (_read(path) or "").splitlines() if len(line.split()) >= 2)
    return next((int(values[k]) for k in keys if k in values and values[k].isdigit()), 0)


def _cgroup_memory(proc_root, cgroup_root) -> tuple[list[Limit], list[Limit]]:
    """(limits, available now) of every cgroup from this process's own up to the root, v1 and v2."""
    limits, available = [], []
    for chain in cgroups.chains("memory", proc_root, cgroup_root):
        limit_file, usage_file = ("memory.max", "memory.current") if chain.version == 2 else ("memory.limit_in_bytes", "memory.usage_in_bytes")
        for directory in chain.dirs:
            limit = _integer(_read(directory / limit_file))  # v2 "max" reads as None
            if limit is None or limit >= UNLIMITED_BYTES:
                continue
            where = f"cgroup v{chain.version} {limit_file} at {directory}"
            limits.append(Limit(limit, where))
            usage = _integer(_read(directory / usage_file))
            if usage is not None:
                # v1's memory.stat counts its own pages as inactive_file and the subtree's as total_inactive_file.
                reclaimable = _stat(directory / "memory.stat", "total_inactive_file", "inactive_file")
                available.append(Limit(max(0, limit - max(0, usage - reclaimable)), f"{where}, less its usage"))
            else:
                available.append(Limit(limit, where))
    return limits, available


def _cgroup_cores(proc_root, cgroup_root) -> list[Limit]:
    """Whole cores allowed by every CPU quota from this process's cgroup up to the root (at least 1)."""
    found = []
    for chain in cgroups.chains("cpu", proc_root, cgroup_root):
        for directory in chain.dirs:
            if chain.version == 2:
                quota, _, period = (_read(directory / "cpu.max") or "").partition(" ")
                name, quota, period = "cpu.max", _integer(quota), _integer(period)
            else:
                name, quota, period = "cpu.cfs_quota_us", _integer(_read(directory / "cpu.cfs_quota_us")), _integer(_read(directory / "cpu.cfs_period_us"))
            if quota and period and quota > 0 and period > 0:
                found.append(Limit(max(1, quota // period), f"cgroup v{chain.version} {name} at {directory} ({quota}/{period})"))
    return found


def _count(env: Mapping[str, str], name: str) -> Limit | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise UsageProblem(f"{name}={value!r} is not a number of CPUs: set it to a whole number of at least 1, or unset it")
    return Limit(int(value), f"{name}={value}")


def _megabytes(env: Mapping[str, str], name: str) -> int | None:
    """A SLURM memory variable in bytes: MB, or with a K/M/G/T unit; None when unset or 0 (0: the whole node)."""
    value = env.get(name, "").strip()
    if not value:
        return None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", value.upper())
    if not match:
        raise UsageProblem(f"{name}={value!r} is not a memory size: give MB as a number (e.g. 2048) or with a unit (e.g. 2G), or unset it")
    size = int(float(match.group(1)) * _UNITS[match.group(2) or "M"])
    return size or None


def _scheduler_cores(env: Mapping[str, str]) -> list[Limit]:
    names = ["SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE", "PBS_NCPUS"]
    if env.get("PBS_JOBID"):  # NCPUS is a common name outside PBS; PBS_NUM_PPN is Torque's
        names += ["NCPUS", "PBS_NUM_PPN"]
    return [limit for limit in (_count(env, name) for name in names) if limit]


def _scheduler_memory(env: Mapping[str, str], cores: Limit) -> list[Limit]:
    found = []
    per_node = _megabytes(env, "SLURM_MEM_PER_NODE")
    if per_node:
        found.append(Limit(per_node, f"SLURM_MEM_PER_NODE={env['SLURM_MEM_PER_NODE'].strip()}"))
    per_cpu = _megabytes(env, "SLURM_MEM_PER_CPU")
    if per_cpu:
        cpus = _count(env, "SLURM_CPUS_ON_NODE") or _count(env, "SLURM_CPUS_PER_TASK") or cores
        found.append(Limit(per_cpu * cpus.value, f"SLURM_MEM_PER_CPU={env['SLURM_MEM_PER_CPU'].strip()} x {cpus.source}"))
    return found


def _affinity_cores(affinity: Collection[int] | None) -> Limit:
    if affinity is None and hasattr(os, "sched_getaffinity"):
        affinity = os.sched_getaffinity(0)
    if affinity is None:
        return Limit(os.cpu_count() or 1, "os.cpu_count()")
    return Limit(len(affinity), f"affinity mask ({len(affinity)} CPUs)")


def _meminfo(proc_root: pathlib.Path) -> tuple[list[Limit], list[Limit]]:
    text = _read(proc_root / "meminfo") or ""
    found = {key: int(kib) * 1024 for key, kib in re.findall(r"^(MemTotal|MemAvailable):\s+(\d+) kB", text, re.M)}
    total = [Limit(found["MemTotal"], "/proc/meminfo MemTotal")] if "MemTotal" in found else []
    available = [Limit(found["MemAvailable"], "/proc/meminfo MemAvailable")] if "MemAvailable" in found else []
    return total, available


def limits(env: Mapping[str, str] = os.environ, proc_root: pathlib.Path | str = "/proc",
           cgroup_root: pathlib.Path | str = cgroups.STANDARD_ROOT, affinity: Collection[int] | None = None) -> Limits:
    """The cores and memory this process may use now, each the tightest of its sources.

    Every input is injectable (tests build fixture trees); ``affinity``
    defaults to ``os.sched_getaffinity(0)``.  Read anew on each call: the
    memory available changes.  A malformed scheduler variable raises
    :class:`UsageProblem` naming it.
    """
    proc_root = pathlib.Path(proc_root)
    cores = _tightest([*_cgroup_cores(proc_root, cgroup_root), *_scheduler_cores(env), _affinity_cores(affinity)])
    cgroup_limits, cgroup_available = _cgroup_memory(proc_root, cgroup_root)
    scheduler = _scheduler_memory(env, cores)
    total, available = _meminfo(proc_root)
    return Limits(
        cores=cores,
        memory=_tightest(cgroup_limits + scheduler + total),
        available=_tightest(cgroup_available + scheduler + available),
    )
