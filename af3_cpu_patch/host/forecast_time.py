"""Wall-time forecast of AF3 tasks on CPUs, before anything heavy is loaded.

Why: a batch scheduler needs a time limit before the job starts.  One too
short kills the job and loses the task it was running (a re-submission
redoes it); one far too long waits longer in the queue.  The time of a run
is dominated by the trunk passes (``num_recycles + 1``) and the diffusion
steps (200, all samples together), whose costs depend on the token bucket;
around them come the process start (imports, weights) and XLA's compilation
of each bucket once per process.

The costs below are SHIPPED DEFAULTS, measured by the project's benchmarks on
two 2-core AMD EPYC machines, one per CPU class (``benchmarks/measured``;
``tests/test_forecast_time.py`` checks them against those files):

- ``avx512-bf16`` (native bf16): per-bucket shapes from
  ``breakdown-*-avx512bf16-*.json``, scaled to today's defaults at bucket 64
  (``variants-64-*.json``: trunk pass 1.98 s, diffusion step 0.401 s, against
  2.937 s and 1.093 s in the breakdown, which predates the diffusion and
  trunk patches); reproduces the 40- and 64-residue full runs of
  ``full-40-64-params-exit-*.json`` within 5%;
- ``x86-64`` (no native bf16; the AVX2 machine): ``breakdown-*-amd-epyc-2core.json``
  as measured (f32 trunk), which forecasts the 256-residue full run of
  ``full-256-row-blocks-*.json`` 8% high.

Other CPUs are forecast as the class they belong to.  Between measured
buckets costs are interpolated in log-log; below the first they stay at the
first bucket's (errs high); past the last they grow with the last measured
segment's exponent, at least cubically for the trunk and the rest (the
triangle updates) and linearly for a diffusion step.  For other core counts
the 2-core inference time is scaled by ``(2 / cores) ** 0.5`` above 2 cores
(an assumption, not measured: XLA's CPU speed-up with threads is well below
linear, so this errs high) and ``2 / cores`` below; compilation is not
scaled.  Schedulers get the forecast times ``TIME_MARGIN``.
"""

from __future__ import annotations

import bisect
import dataclasses
import math

from af3_cpu_patch.host import cpu_info

MEASURED_CORES = 2
CORE_SCALING_EXPONENT = 0.5  # assumed, see the module docstring
DEFAULT_RECYCLES = 10  # AF3's defaults: 11 trunk passes, 5 samples, 200 diffusion steps
DEFAULT_SAMPLES = 5
DIFFUSION_STEPS = 200
MEASURED_SAMPLES = 5  # a measured diffusion step runs this many samples together
# XLA compilation of one bucket, once per process: least squares over the af3-cpu rows' compile_s
# of benchmarks/measured/full-*.json (19.1 s at 16 residues ... 28.1 / 30.9 s at 256).
COMPILE_S = (18.6, 0.040)  # seconds = a + b * bucket
# A process's start outside inference and compilation (imports, weights, CCD index, writing):
# full-40-64-params-exit-*.json, wall - inference - compile = 6.0 / 6.1 s.
PROCESS_S = 6.1
TIME_MARGIN = 1.5  # what a scheduler is asked for: forecast x margin (one machine's runs, ~10% run-to-run)
MIN_REQUEST_S = 600  # never ask a scheduler for less (start-up of a node, file systems, a slow first import)


@dataclasses.dataclass(frozen=True)
class CpuClass:
    """Shipped per-bucket costs of one CPU class at ``MEASURED_CORES`` cores (see the module docstring)."""

    name: str
    source: str
    buckets: tuple[int, ...]
    trunk_pass_s: tuple[float, ...]  # one trunk pass, as measured by breakdown.py
    diffusion_step_s: tuple[float, ...]  # one diffusion step of 5 samples, as measured
    rest_s: tuple[float, ...]  # the rest of the forward pass (confidence head, ...), as measured, running max
    trunk_scale: float = 1.0  # measured today / measured in the breakdown, at the anchor bucket
    diffusion_scale: float = 1.0


AVX512_BF16 = CpuClass(
    name="avx512-bf16",
    source="shipped costs of a 2-core AMD EPYC with AVX512-BF16",
    buckets=(40, 48, 56, 64, 80, 96, 112, 128, 256),
    trunk_pass_s=(1.183, 1.918, 2.143, 2.937, 5.121, 6.962, 9.773, 12.44, 87.855),
    diffusion_step_s=(0.761, 0.863, 0.959, 1.093, 1.424, 1.781, 2.022, 2.399),  # none measured at 256
    rest_s=(0.41, 0.44, 1.5, 1.81, 6.64, 6.64, 8.42, 12.1),  # 96: 5.2 measured, below 80's 6.64
    trunk_scale=round(1.98 / 2.937, 3),
    diffusion_scale=round(0.401 / 1.093, 3),
)
X86_64 = CpuClass(
    name="x86-64",
    source="shipped costs of a 2-core AMD EPYC with AVX2, no native bf16",
    buckets=(16, 32, 64, 256),
    trunk_pass_s=(0.569, 1.057, 4.826, 139.984),
    diffusion_step_s=(0.545, 0.856, 1.393, 5.033),
    rest_s=(0.0, 0.37, 3.59, 109.56),  # 16: -0.66 solved (timing noise around zero)
)
CLASSES = {c.name: c for c in (AVX512_BF16, X86_64)}
MIN_EXPONENT = {"trunk": 3.0, "diffusion": 1.0, "rest": 3.0}


def cpu_class(native_bf16: bool | None = None) -> CpuClass:
    """This machine's class (or the one ``native_bf16`` names)."""
    bf16 = cpu_info.native_bf16() if native_bf16 is None else native_bf16
    return AVX512_BF16 if bf16 else X86_64


def interpolate(buckets: tuple[int, ...], values: tuple[float, ...], bucket: int, min_exponent: float) -> float:
    """A cost at ``bucket`` from measured ``values`` (see the module docstring for outside the range)."""
    values = values[:len(buckets)]
    if bucket <= buckets[0]:
        return values[0]
    if bucket >= buckets[len(values) - 1]:
        (b0, v0), (b1, v1) = zip(buckets[len(values) - 2:len(values)], values[-2:])
        exponent = max(math.log(v1 / v0) / math.log(b1 / b0) if v0 > 0 and v1 > 0 else 0.0, min_exponent)
        return v1 * (bucket / b1) ** exponent
    i = bisect.bisect_left(buckets, bucket)
    (b0, v0), (b1, v1) = (buckets[i - 1], values[i - 1]), (buckets[i], values[i])
    if v0 <= 0 or v1 <= 0:
        return v0 + (v1 - v0) * (bucket - b0) / (b1 - b0)
    return v0 * (v1 / v0) ** (math.log(bucket / b0) / math.log(b1 / b0))


def core_factor(cores: int) -> float:
    cores = max(1, int(cores))
    if cores <= MEASURED_CORES:
        return MEASURED_CORES / cores
    return (MEASURED_CORES / cores) ** CORE_SCALING_EXPONENT


def compile_seconds(bucket: int) -> float:
    a, b = COMPILE_S
    return a + b * bucket


def inference_seconds(bucket: int, *, num_recycles: int | None = None, num_diffusion_samples: int | None = None,
                      cores: int = MEASURED_CORES, cpu: CpuClass | None = None) -> float:
    """One (input, seed) through AF3's compiled model: trunk passes, diffusion steps and the rest."""
    cpu = cpu or cpu_class()
    passes = (DEFAULT_RECYCLES if num_recycles is None else num_recycles) + 1
    samples = (DEFAULT_SAMPLES if num_diffusion_samples is None else num_diffusion_samples) / MEASURED_SAMPLES
    trunk = interpolate(cpu.buckets, cpu.trunk_pass_s, bucket, MIN_EXPONENT["trunk"]) * cpu.trunk_scale
    step = interpolate(cpu.buckets, cpu.diffusion_step_s, bucket, MIN_EXPONENT["diffusion"]) * cpu.diffusion_scale
    rest = interpolate(cpu.buckets, cpu.rest_s, bucket, MIN_EXPONENT["rest"])
    return (passes * trunk + samples * (DIFFUSION_STEPS * step + rest)) * core_factor(cores)


def run_seconds(buckets: list[int], **settings) -> float:
    """One process running tasks of these buckets in turn: its start, one compilation per bucket, every task."""
    if not buckets:
        return 0.0
    return PROCESS_S + sum(compile_seconds(b) for b in set(buckets)) + sum(inference_seconds(b, **settings) for b in buckets)


def request_seconds(seconds: float) -> int:
    """What to ask a scheduler for: the forecast with ``TIME_MARGIN``, at least ``MIN_REQUEST_S``, whole minutes."""
    return max(MIN_REQUEST_S, math.ceil(seconds * TIME_MARGIN / 60) * 60)


def walltime(seconds: int, days: bool = True) -> str:
    """SLURM's ``[D-]HH:MM:SS``; ``days=False``: PBS's ``HH:MM:SS`` (hours past 24)."""
    day_count, rest = divmod(int(seconds), 86400) if days else (0, int(seconds))
    hours, rest = divmod(rest, 3600)
    clock = f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
    return f"{day_count}-{clock}" if day_count else clock


def human(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe(bucket: int, cores: int | None = None, cpu: CpuClass | None = None) -> str:
    """One ``af3-cpu predict`` run of ``bucket`` at AF3's default recycles and samples, said next to its memory forecast."""
    cpu = cpu or cpu_class()
    cores = cores or cpu_info.usable_cores()
    seconds = run_seconds([bucket], cores=cores, cpu=cpu)
    return f"forecast time ~{human(seconds)} on {cores} core(s) (shipped {cpu.name} costs, AF3's default recycles and samples)"
