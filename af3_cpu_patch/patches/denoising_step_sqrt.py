"""denoising-step-sqrt: the NaN fix of v3.0.0-v3.0.3's diffusion sampler, upstream v3.0.4's clamp.

Numerics guards for AF3's diffusion head.

Only guards that are bit-neutral wherever the stock code is finite are here:
``jnp.maximum`` clamps on ``sqrt``/``log`` arguments (``maximum(x, c) == x``
for every x >= c, and ``maximum(NaN, c)`` stays NaN, so a real NaN from
elsewhere is never hidden).  Divisions are deliberately left alone: a guard
such as ``a / where(b == 0, tiny, b)`` blocks XLA's ``a / sqrt(b)`` ->
``a * rsqrt(b)`` rewrite and changes bits where nothing was zero, and none of
the head's divisors can reach zero (``t_hat >= 0.0077``; ``random_rotation``
already divides by ``maximum(1e-10, norm)``).
"""

from __future__ import annotations

from af3_cpu_patch.engine.patch import Numerics, SourcePatch
from af3_cpu_patch.engine.source_rewrite import Rewrite
from af3_cpu_patch.patches.targets import (
    DIFFUSION_HEAD,
)


def clamp_sqrt(arg: str, count: int = 1) -> Rewrite:
    """``jnp.sqrt(arg)`` -> ``jnp.sqrt(jnp.maximum(arg, 0.0))``, upstream v3.0.4's form."""
    return Rewrite(stock=f"jnp.sqrt({arg})", patched=f"jnp.sqrt(jnp.maximum({arg}, 0.0))", count=count)


DENOISING_STEP_SQRT = SourcePatch(
    name="denoising-step-sqrt",
    why=(
        "On CPU, jitted XLA fuses t_hat**2 - noise_level_prev**2 into an FMA; when gamma == 0 "
        "(last 40 of 200 steps) t_hat == noise_level_prev and the result is the rounding residue "
        "of prev*prev (down to -4.25e-08), so sqrt gives NaN and every coordinate becomes NaN."
    ),
    modules=DIFFUSION_HEAD,
    function="sample.apply_denoising_step",
    rewrites=(clamp_sqrt("t_hat**2 - noise_level_prev**2"),),
    versions=("3.0.0", "3.0.3"),
    numerics=Numerics.NEEDED,
    fixed_upstream_in="3.0.4",
)


PATCHES = (DENOISING_STEP_SQRT,)
