"""Start AF3 on the CPU: platform, threads, settings, patches, then AF3's own ``run_alphafold``.

JAX reads ``JAX_PLATFORMS`` once, at backend initialisation, so this must run
before anything touches a device.  Also quiets one kind of known-harmless
noise: tokamax (v3.0.2+) logs "Not supported on cpu" errors many times per
trace before it falls back to XLA attention, which AF3's docs call safe.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pathlib
import sys
import typing

from af3_cpu_patch import settings
from af3_cpu_patch.engine import hooks
from af3_cpu_patch.engine import patch as engine_patch
from af3_cpu_patch.errors import UsageProblem
from af3_cpu_patch.host import cpu_info

NOISE = ("Not supported on cpu",)


def prepare(threads: int | None = None) -> int:
    """JAX on the CPU, XLA's thread pool sized to the cores we may use; returns that count.

    XLA:CPU sizes its pool from the affinity mask, not from a cgroup CPU quota,
    so under a quota (containers, SLURM) it oversubscribes: the mask is
    narrowed to the quota, or to ``threads``.
    """
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", "cpu")
    allowed = cpu_info.allowed_cpus()
    wanted = threads or cpu_info.usable_cores()
    if wanted > len(allowed):
        raise UsageProblem(f"--threads {wanted} exceeds the {len(allowed)} CPUs this process may use: give at most {len(allowed)}")
    if wanted < len(allowed) and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, allowed[:wanted])
    return wanted


def attention_choices() -> tuple[str, ...]:
    """The CPU attention implementations the imported AF3 accepts ("xla" on every version)."""
    modules = sys.modules.get("alphafold3.model.network.modules")
    tokamax = getattr(modules, "tokamax", None)  # AF3 v3.0.2+
    offered = typing.get_args(getattr(tokamax, "DotProductAttentionImplementation", None))
    return ("xla",) + (("xla_chunked",) if "xla_chunked" in offered else ())


def start_af3(
    root: pathlib.Path,
    patches,
    *,
    precision: str = "auto",
    diffusion_precision: str = "auto",
    attention: str = "auto",
    exact: bool = False,
    buckets: str | None = None,
    threads: int | None = None,
) -> tuple[settings.Settings, object]:
    """Set this process up for AF3 on the CPU, in the one order that works; returns (the run's settings, run_alphafold).

    The platform and the thread count must be set before jax initialises, the
    patches installed before AF3 is imported (they consult the diffusion
    head's precision as they apply), and the trunk's precision and attention
    chosen after (what AF3 offers depends on its version).  ``exact``: AF3's
    own settings, and of ``patches`` only those that keep stock's bits.
    """
    if exact:
        settings.check_exact(precision, diffusion_precision, attention)
        patches = engine_patch.exact(patches)
    used = prepare(threads)
    native = cpu_info.native_bf16()
    choices = dict(precision=precision, diffusion_precision=diffusion_precision, attention=attention, exact=exact,
                   buckets=buckets, threads=used, native_bf16=native)
    # Before AF3 is imported: every setting a patch reads when it applies (attention and trunk precision are read later).
    settings.use(settings.resolve(**{**choices, "precision": "bf16", "attention": "xla"}, offered_attention=("xla",)))
    hooks.install(patches)
    run_alphafold = import_run_alphafold(root)
    run = settings.resolve(**choices, offered_attention=attention_choices())
    settings.use(run)
    return run, run_alphafold


def import_run_alphafold(root: pathlib.Path):
    """Import the checkout's stock run_alphafold.py as module ``run_alphafold``."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("run_alphafold")
    except Exception as exc:  # noqa: BLE001 - any import failure is an install problem
        raise UsageProblem(
            f"AF3 could not be imported ({type(exc).__name__}: {exc}): install AF3's dependencies "
            "(pip install your alphafold3 checkout) and run its build_data"
        ) from exc
    if pathlib.Path(module.__file__).resolve() != (root / "run_alphafold.py").resolve():
        raise UsageProblem(f"a different run_alphafold module is already imported ({module.__file__})")
    return module


def parse_flags(argv: list[str]) -> None:
    """Parse absl flags for AF3 (and tokamax, which otherwise parses our own sys.argv).

    Flags are reset first: a batch worker parses once per task, and a flag one
    task set must not leak into the next.
    """
    from absl import flags

    try:
        flags.FLAGS.unparse_flags()
        flags.FLAGS(argv)
    except flags.Error as exc:
        raise UsageProblem(f"run_alphafold.py rejected the flags: {exc}") from None


class _DropNoise(logging.Filter):
    def __init__(self):
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        if any(noise in text for noise in NOISE):
            self.dropped += 1
            return False
        return True


@contextlib.contextmanager
def quiet_known_noise():
    """Drop known-harmless log records (tokamax logs through absl's logger)."""
    noise = _DropNoise()
    targets = [logging.getLogger("absl"), *logging.getLogger().handlers]
    for target in targets:
        target.addFilter(noise)
    try:
        yield noise
    finally:
        for target in targets:
            target.removeFilter(noise)
        if noise.dropped:
            print(f"(hid {noise.dropped} harmless tokamax 'Not supported on cpu' messages)", file=sys.stderr)
