"""noise-embedding-log: the noise embedding's log clamped to the smallest normal float32 (bit-neutral)."""

from __future__ import annotations

from af3_cpu_patch.engine.patch import Numerics, SourcePatch
from af3_cpu_patch.engine.source_rewrite import Rewrite
from af3_cpu_patch.patches.targets import (
    DIFFUSION_HEAD,
)

# Smallest normal float32 (2**-126): exactly representable, so a log argument
# at or above it is unchanged by the clamp.
F32_TINY = 1.1754943508222875e-38


def clamp_log(arg: str) -> Rewrite:
    """``jnp.log(arg)`` -> ``jnp.log(jnp.maximum(arg, F32_TINY))``."""
    return Rewrite(stock=f"jnp.log({arg})", patched=f"jnp.log(jnp.maximum({arg}, {F32_TINY!r}))")


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


PATCHES = (NOISE_EMBEDDING_LOG, NOISE_EMBEDDING_LOG_INLINE)
