"""Put the process on the CPU before AF3 (and jax) are imported.

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

from af3_cpu_patch import cpu_info
from af3_cpu_patch.af3_checkout import UsageProblem

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


# The trunk's precision: "bf16" is AF3's own setting (global_config.bfloat16 = "all").
PRECISIONS = {"bf16": "all", "f32": "none"}
precision = "bf16"


def resolve_precision(choice: str) -> str:
    """``auto``: AF3's bf16 where the CPU computes bf16 natively, f32 where XLA would emulate it."""
    if choice != "auto":
        return choice
    return "bf16" if cpu_info.native_bf16() else "f32"


def model_config_wrapper(wrapped, instance, args, kwargs):
    """wrapt wrapper for ``run_alphafold.make_model_config``: apply the precision policy."""
    config = wrapped(*args, **kwargs)
    config.global_config.bfloat16 = PRECISIONS[precision]
    return config


def start_af3(root: pathlib.Path, threads: int | None, precision_choice: str, patches) -> tuple[int, object]:
    """Set this process up for AF3 on the CPU, in the one order that works; returns (threads, run_alphafold).

    The platform and the thread count must be set before jax initialises, and
    the patches installed before AF3 is imported.
    """
    global precision
    used = prepare(threads)
    precision = resolve_precision(precision_choice)
    import af3_cpu_patch

    af3_cpu_patch.install(patches)
    return used, import_run_alphafold(root)


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
