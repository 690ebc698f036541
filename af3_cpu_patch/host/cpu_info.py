"""What this CPU and this process's share of it can do (Linux; cheap, no imports of jax)."""

from __future__ import annotations

import functools
import os
import pathlib
import platform
import re

from af3_cpu_patch.host.limits import limits

ISA_FLAGS = (("fma", "FMA"), ("avx2", "AVX2"), ("avx512f", "AVX-512"), ("avx512_bf16", "AVX512-BF16"), ("amx_bf16", "AMX-BF16"))


def allowed_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def usable_cores() -> int:
    """Cores this process may use: the tightest of its cgroup CPU quotas, SLURM/PBS's allocation and its affinity mask.

    See :mod:`af3_cpu_patch.host.limits`, which also says where the number came from.
    """
    return limits().cores.value


@functools.lru_cache(maxsize=None)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    try:
        text = pathlib.Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), frozenset()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M)  # x86 | ARM
    return (model.group(1).strip() if model else platform.machine()), frozenset(flags.group(1).split() if flags else ())


def cpu_model() -> str:
    return _cpuinfo()[0]


def flags() -> frozenset[str]:
    """The kernel's flags (x86) or Features (ARM) line of /proc/cpuinfo."""
    return _cpuinfo()[1]


def has_flag(flag: str) -> bool:
    return flag in flags()


def native_bf16() -> bool:
    """bf16 arithmetic in hardware (AVX512-BF16 or AMX); elsewhere XLA emulates it in f32."""
    return has_flag("avx512_bf16") or has_flag("amx_bf16")


def summary() -> str:
    """The model name and the ISA features that decide XLA's speed and ``--precision auto``.

    The model name alone does not tell machines apart (two different EPYCs
    both say "AMD EPYC").
    """
    isa = ", ".join(f"{label} {'yes' if has_flag(flag) else 'no'}" for flag, label in ISA_FLAGS)
    return f"{cpu_model()}; {isa}"
