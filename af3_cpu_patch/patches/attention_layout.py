"""attention-layout-*: Faster, bit-identical memory layouts for AF3's diffusion-transformer attention on CPUs.

Every diffusion step runs 24 token-level self-attention blocks and 6 atom-level
cross-attention blocks per sample.  Their weighted sum of values is
``einsum('...hqk,...khc->...qhc', weights, v)``: a batched matrix product whose
batch axis (heads) sits in the middle of ``v``.  XLA:CPU runs that form far
below its matrix-multiplication speed (from a profile at 256 tokens: 1.7 s of a
~8 s step).  Moving the heads axis of ``v`` in front first and back after is the
same sum of the same products in the same order, and XLA then uses its fast
batched kernel: the self-attention block is 1.5x faster at 256 tokens (5
samples), and the results are bit-identical (checked by the tests on the
machine that runs them, on stand-ins and on a real AF3).
"""

from __future__ import annotations

from typing import Callable

from af3_cpu_patch import settings
from af3_cpu_patch.engine.patch import Numerics, SourcePatch
from af3_cpu_patch.engine.source_rewrite import Rewrite
from af3_cpu_patch.host import cpu_info
from af3_cpu_patch.patches import differences
from af3_cpu_patch.patches.targets import (
    DIFFUSION_TRANSFORMER,
)

HEADS_FIRST_WEIGHTED_SUM = Rewrite(
    stock="jnp.einsum('...hqk,...khc->...qhc', weights, v)",
    patched="jnp.swapaxes(jnp.einsum('...hqk,...hkc->...hqc', weights, jnp.swapaxes(v, -3, -2)), -3, -2)",
)


def not_bit_identical_here() -> str | None:
    """Bit-identical on AVX2 CPUs, not on AVX-512 ones: left out there, unless the run's products are not stock's anyway.

    On an AMD EPYC with AVX-512, XLA:CPU's kernels for the two forms round
    differently (up to 5e-7 relative, most elements), so the promise of
    unchanged results holds only where the rewrite is left out.  With
    ``af3-cpu --diffusion-precision bf16`` the diffusion head's products are
    computed differently from stock already (a bf16 pass, as on a TPU), and
    the rewrite makes a diffusion step about a tenth faster there (64
    residues: 0.439 s -> 0.398 s): the CLI then applies it on AVX-512 too.
    ``import af3_cpu_patch`` and ``--diffusion-precision f32`` keep stock's bits.
    """
    if cpu_info.has_flag("avx512f") and settings.current().diffusion_precision == "f32":
        return "left out on AVX-512 CPUs, where XLA:CPU's result is not bit-identical to stock"
    return None


BLOCKS = {
    "self_attention": "diffusion transformer's token self-attention",
    "cross_attention": "atom encoder's and decoder's cross-attention",
}


def _heads_first_patch(
    function: str, kind: str, what: str, rewrite: Rewrite, not_here: Callable[[], str | None], **fields
) -> SourcePatch:
    return SourcePatch(
        name=f"attention-layout-{kind}{function.split('_')[0]}",
        why=(
            f"The {what} in the {BLOCKS[function]} has its heads axis in the middle; "
            "with heads first XLA:CPU uses its fast batched matrix product."
        ),
        modules=DIFFUSION_TRANSFORMER,
        function=function,
        rewrites=(rewrite,),
        versions=("3.0.0", "3.0.4"),
        not_here=not_here,
        **fields,
    )


SELF_ATTENTION_LAYOUT, CROSS_ATTENTION_LAYOUT = (
    _heads_first_patch(
        function, "", "weighted sum of values", HEADS_FIRST_WEIGHTED_SUM, not_bit_identical_here,
        numerics=Numerics.IDENTICAL,
        verified_by="exact AST match of the stock einsum; bit-identity checked by the test suite",
    )
    for function in BLOCKS
)


PATCHES = (SELF_ATTENTION_LAYOUT, CROSS_ATTENTION_LAYOUT)


# The attention logits have the same heads-in-the-middle form, for q and k.
HEADS_FIRST_LOGITS = Rewrite(
    stock="jnp.einsum('...qhc,...khc->...hqk', q * key_dim ** (-0.5), k)",
    patched=(
        "jnp.einsum('...hqc,...hkc->...hqk', jnp.swapaxes(q * key_dim ** (-0.5), -3, -2), jnp.swapaxes(k, -3, -2))"
    ),
)


def only_with_the_bf16_pass() -> str | None:
    """The logits rewrite is not checked for bit-identity: only where the products differ from stock anyway.

    With ``--diffusion-precision bf16``, 64 residues on an AVX512-BF16 CPU, a
    diffusion step took 0.382 s instead of 0.401 s (three interleaved calls
    each, same process).
    """
    if settings.current().diffusion_precision == "f32":
        return "applied only with --diffusion-precision bf16, whose products differ from stock's anyway"
    return None


# CLI only, with the bf16 pass (see only_with_the_bf16_pass).
LOGITS_PATCHES = tuple(
    _heads_first_patch(
        function, "logits-", "product of q and k", HEADS_FIRST_LOGITS, only_with_the_bf16_pass,
        numerics=Numerics.CHANGES, difference=differences.LOGITS_LAYOUT,
    )
    for function in BLOCKS
)
