"""diffusion-scaling-sqrt: the diffusion head's input and output scalings clamped like upstream's sqrt (bit-neutral)."""

from __future__ import annotations

from af3_cpu_patch.engine.patch import Numerics, SourcePatch
from af3_cpu_patch.patches.denoising_step_sqrt import clamp_sqrt
from af3_cpu_patch.patches.targets import (
    DIFFUSION_HEAD,
)

DIFFUSION_SCALING_SQRT = SourcePatch(
    name="diffusion-scaling-sqrt",
    why=(
        "The input and output scalings of DiffusionHead.__call__ take sqrt(t**2 + SIGMA_DATA**2); "
        "clamped so that no fused rounding can ever give sqrt of a negative (bit-neutral: the "
        "argument is >= 256)."
    ),
    modules=DIFFUSION_HEAD,
    function="DiffusionHead.__call__",
    rewrites=(clamp_sqrt("noise_level**2 + SIGMA_DATA**2", count=2),),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
)


PATCHES = (DIFFUSION_SCALING_SQRT,)
