"""Where af3-cpu keeps what it caches: ``$XDG_CACHE_HOME/af3-cpu``, else ``~/.cache/af3-cpu``.

The JAX compilation cache (``jax``) and the CCD index (``ccd``) live under it.
Read at call time, so a changed ``XDG_CACHE_HOME`` is followed.

The compilation cache is kept per CPU and per jax/jaxlib version
(``jax/x86_64-fma-avx2-<hash8>-jax0.5.3-jaxlib0.5.3``).  Why: XLA compiles
for the instruction set of the CPU it runs on, and a home directory shared
by cluster nodes of different CPU generations would otherwise hand a node
programs compiled for another one (at best recompiled, at worst using
instructions it lacks); entries of other jax versions are never read again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import pathlib
import platform
import re
from collections.abc import Callable, Iterable

from af3_cpu_patch.host import cpu_info

# x86 flags of /proc/cpuinfo that change the code XLA (LLVM) may emit; the
# rest (hypervisor, tsc_*, microcode mitigations like ibrs, md_clear) differ
# between nodes that run the same code.  ARM's Features line lists only ISA features.
_X86_ISA = re.compile(
    r"lm|cx16|mmx|pni|ssse3|sse\w*|avx\w*|fma4?|f16c|bmi[12]|abm|lzcnt|popcnt|movbe|adx|aes|vaes|pclmulqdq|vpclmulqdq|"
    r"gfni|sha_ni|amx\w*|xop|tbm|rdrand|rdseed|xsave\w*|clflushopt|clwb|3dnowprefetch|movdiri|movdir64b|serialize|"
    r"waitpkg|cldemote|enqcmd|rdpid|fsgsbase|invpcid|pku|wbnoinvd|prefetchw?\w*"
)
# The features named in the directory, in this order, so that a user can tell the directories apart.
_READABLE = (("fma", "fma"), ("avx2", "avx2"), ("avx512f", "avx512"), ("avx512_bf16", "avx512bf16"), ("amx_bf16", "amx"),
             ("asimd", "neon"), ("sve", "sve"), ("sve2", "sve2"), ("bf16", "bf16"))


def cache_root() -> pathlib.Path:
    return pathlib.Path(os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache") / "af3-cpu"


def cpu_key(machine: str, model: str, flags: Iterable[str]) -> str:
    """``<machine>-<main features>-<hash8>``: the hash is of the ISA flags and the model name (XLA tunes for the model)."""
    flags = set(flags)
    relevant = sorted(f for f in flags if _X86_ISA.fullmatch(f)) if machine in ("x86_64", "AMD64", "i686") else sorted(flags)
    digest = hashlib.sha256("\n".join([machine, " ".join(model.split()), *relevant]).encode()).hexdigest()[:8]
    readable = [label for flag, label in _READABLE if flag in flags]
    return "-".join([machine.lower() or "cpu", *readable, digest])


def jax_versions(version: Callable[[str], str] = importlib.metadata.version) -> str:
    """``jax<v>-jaxlib<v>`` from the installed distributions' metadata (jax itself is not imported: it is slow)."""
    found = []
    for name in ("jax", "jaxlib"):
        try:
            found.append(f"{name}{version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name}-none")
    return "-".join(found)


def compilation_cache(parent: pathlib.Path | None = None) -> pathlib.Path:
    """This CPU's and this jax's compilation cache under ``parent`` (default: the cache root's ``jax``)."""
    key = cpu_key(platform.machine(), cpu_info.cpu_model(), cpu_info.flags())
    return (parent or cache_root() / "jax") / f"{key}-{jax_versions()}"


def ccd_index_root() -> pathlib.Path:
    """Where af3-cpu keeps its index of AF3's chemical components dictionary (patches/lazy_ccd.py)."""
    return cache_root() / "ccd"


def can_keep_ccd_index() -> bool:
    """Whether the CCD index can be kept here (its directory exists or can be made, and is writable)."""
    probe = ccd_index_root()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def ccd_index_path(pickle_path: os.PathLike[str] | str, root: pathlib.Path | None = None) -> pathlib.Path:
    """Where the index of this pickle (as it is now on disk) lives."""
    real = pathlib.Path(pickle_path).resolve()
    stat = real.stat()
    tag = hashlib.sha256(str(real).encode()).hexdigest()[:16]
    return (root or ccd_index_root()) / f"{tag}-{stat.st_size}-{stat.st_mtime_ns}.sqlite"
