"""Numerics guards for AF3's diffusion head.

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

from af3_cpu_patch.registry import Numerics, SourcePatch
from af3_cpu_patch.source_rewrite import Rewrite

DIFFUSION_HEAD = (
    "alphafold3.model.network.diffusion_head",  # v3.0.1 and later
    "alphafold3.model.diffusion.diffusion_head",  # v3.0.0
)

# Smallest normal float32 (2**-126): exactly representable, so a log argument
# at or above it is unchanged by the clamp.
F32_TINY = 1.1754943508222875e-38


def clamp_sqrt(arg: str, count: int = 1) -> Rewrite:
    """``jnp.sqrt(arg)`` -> ``jnp.sqrt(jnp.maximum(arg, 0.0))``, upstream v3.0.4's form."""
    return Rewrite(stock=f"jnp.sqrt({arg})", patched=f"jnp.sqrt(jnp.maximum({arg}, 0.0))", count=count)


def clamp_log(arg: str) -> Rewrite:
    """``jnp.log(arg)`` -> ``jnp.log(jnp.maximum(arg, F32_TINY))``."""
    return Rewrite(stock=f"jnp.log({arg})", patched=f"jnp.log(jnp.maximum({arg}, {F32_TINY!r}))")


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

NOISE_EMBEDDING_LOG = SourcePatch(
    name="noise-embedding-log",
    why="The Fourier noise embedding takes log(t / SIGMA_DATA); clamped to the smallest normal float32.",
    modules=("alphafold3.model.network.noise_level_embeddings",),
    function="noise_embeddings",
    rewrites=(clamp_log("sigma_scaled_noise_level"),),
    versions=("3.0.2", "3.0.4"),
    numerics=Numerics.IDENTICAL,
)

NOISE_EMBEDDING_LOG_INLINE = SourcePatch(
    name="noise-embedding-log-inline",
    why="Before v3.0.2 the noise embedding's log(t / SIGMA_DATA) is inline in the head's conditioning.",
    modules=DIFFUSION_HEAD,
    function="DiffusionHead._conditioning",
    rewrites=(clamp_log("noise_level / SIGMA_DATA"),),
    versions=("3.0.0", "3.0.1"),
    numerics=Numerics.IDENTICAL,
)

PATCHES = (DENOISING_STEP_SQRT, DIFFUSION_SCALING_SQRT, NOISE_EMBEDDING_LOG, NOISE_EMBEDDING_LOG_INLINE)
