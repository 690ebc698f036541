"""The diffusion head's default-precision matrix products, computed as accelerators compute them.

Why: AF3's diffusion head runs float32 activations through ``hm.Linear``
layers that leave the matrix-product precision at JAX's default, and asks for
``precision='highest'`` where it wants true float32.  On the accelerators AF3
runs on, the default computes a float32 product from reduced-precision inputs
with float32 accumulation: one bfloat16 pass on a TPU, TF32 on an A100 or
H100 (JAX's "Matmul precision" docs).  XLA:CPU ignores the precision setting
and computes every product in full float32, which is both more precise than
AF3 gets on its own hardware and, on a CPU with native bf16 (AVX512-BF16,
AMX), about 1.7x slower than the bf16 pass (a [200x768]x[768x3072] product:
5.1 ms against 3.0 ms).  The diffusion transformer's products are most of
every one of the 200 diffusion steps.

With ``bf16`` on, ``hm.Linear`` inside the diffusion head rounds a float32
product's two operands to bfloat16 and accumulates in float32
(``preferred_element_type``): the TPU's default.  Products that ask for a
precision, and operands that are not float32, are left alone; the attention
logits (AF3's own einsums, "in float32" by its comments) too.  Off (the
default for ``import af3_cpu_patch``), the rewritten call is the stock call.
"""

from __future__ import annotations

import contextlib
import contextvars

from af3_cpu_patch import settings
from af3_cpu_patch.engine.patch import Numerics, SourcePatch, WrapperPatch
from af3_cpu_patch.engine.source_rewrite import Rewrite
from af3_cpu_patch.patches import differences, trunk_products
from af3_cpu_patch.patches.targets import (
    DIFFUSION_HEAD,
    DIFFUSION_TRANSFORMER,
)
from af3_cpu_patch.patches.trunk_products import glu_call_rewrites

_bf16_pass = contextvars.ContextVar("af3_cpu_patch_diffusion_bf16_pass", default=False)


@contextlib.contextmanager
def bf16_pass(on: bool = True):
    """Inside this context (while JAX traces), ``einsum`` below computes default-precision f32 products in one bf16 pass."""
    token = _bf16_pass.set(on)
    try:
        yield
    finally:
        _bf16_pass.reset(token)


def round_to_tf32(x):
    """``x`` (float32) rounded to TF32's 10 mantissa bits, to nearest even: what an A100's default product reads."""
    import jax
    import jax.numpy as jnp

    bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
    bits = (bits + jnp.uint32(0xFFF) + ((bits >> 13) & jnp.uint32(1))) & jnp.uint32(0xFFFFE000)
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


def einsum(equation, *operands, precision=None, **kwargs):
    """``jnp.einsum`` for ``hm.Linear``: one bf16 pass for default-precision f32 products inside ``bf16_pass``.

    Other products go to :func:`trunk_products.einsum` (``jnp.einsum`` itself
    unless their operands are bf16 and that is on).

    ``diffusion_precision == "tf32"`` in the settings (not a CLI choice) emulates a GPU's TF32 product
    instead, in float32: the reference the fidelity tests compare with.
    """
    import jax.numpy as jnp

    if (
        _bf16_pass.get()
        and precision is None
        and not kwargs
        and all(getattr(x, "dtype", None) == jnp.float32 for x in operands)
    ):
        if settings.current().diffusion_precision == "tf32":
            operands = tuple(round_to_tf32(x) for x in operands)
            return jnp.einsum(equation, *operands, precision="highest")
        operands = tuple(x.astype(jnp.bfloat16) for x in operands)
        return jnp.einsum(equation, *operands, preferred_element_type=jnp.float32)
    return trunk_products.einsum(equation, *operands, precision=precision, **kwargs)


def gated_linear_unit(original, **kwargs):
    """AF3's gated linear unit call (``original``: tokamax's, or AF3's own before v3.0.2), with the bf16 pass.

    The diffusion transformer's transitions compute ``activation(x @ w[:, 0]) *
    (x @ w[:, 1])`` through a GLU op rather than ``hm.Linear``, at the default
    precision too; its one product is the largest of every block (768 -> 2 x
    1536 channels).  Inside ``bf16_pass`` a float32 call computes that product
    with :func:`einsum` and the rest as the ops' XLA reference does (activation
    and gating in float32); anything else goes to :mod:`trunk_products` (the
    op unchanged unless its operands are bf16 there).
    """
    import jax.numpy as jnp

    call = trunk_products.glu_call((), kwargs, jnp.float32) if _bf16_pass.get() else None
    if call is None:
        return trunk_products.gated_linear_unit(original, **kwargs)
    return trunk_products.fused_glu(einsum, *call)


def diffusion_head_wrapper(wrapped, instance, args, kwargs):
    """wrapt wrapper for ``DiffusionHead.__call__`` (one denoising call, traced once): scope of the bf16 pass."""
    with bf16_pass(settings.current().diffusion_precision in ("bf16", "tf32")):
        return wrapped(*args, **kwargs)


DIFFUSION_BF16_PASS_SCOPE = WrapperPatch(
    name="diffusion-precision-scope",
    why=(
        "AF3's diffusion head leaves its float32 products at the default precision, which accelerators compute "
        "from bf16 (TPU) or TF32 (GPU) inputs and XLA:CPU in full float32; with --diffusion-precision bf16 the "
        "head's default-precision products run as one bf16 pass, as on a TPU."
    ),
    modules=DIFFUSION_HEAD,
    function="DiffusionHead.__call__",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.DIFFUSION_BF16,
    wrapper=diffusion_head_wrapper,
)


DIFFUSION_BF16_PASS_LINEAR = SourcePatch(
    name="diffusion-precision-linear",
    why=(
        "hm.Linear's product goes through af3-cpu's einsum, which is jnp.einsum itself except inside the "
        "diffusion head with --diffusion-precision bf16 (see diffusion-precision-scope)."
    ),
    modules=("alphafold3.model.components.haiku_modules",),
    function="Linear.__call__",
    rewrites=(
        Rewrite(
            "jnp.einsum(equation, inputs, weights, precision=self.precision)",
            "__import__('af3_cpu_patch.patches.diffusion_precision', fromlist=['einsum'])"
            ".einsum(equation, inputs, weights, precision=self.precision)",
        ),
    ),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.DIFFUSION_BF16,
)


_GLU = "__import__('af3_cpu_patch.patches.diffusion_precision', fromlist=['gated_linear_unit']).gated_linear_unit"


DIFFUSION_BF16_PASS_GLU = SourcePatch(
    name="diffusion-precision-glu",
    why=(
        "The diffusion transformer's transition computes its largest product through a gated-linear-unit op, "
        "not hm.Linear; it goes through af3-cpu's GLU, which is the op itself except inside the diffusion head "
        "with --diffusion-precision bf16 (see diffusion-precision-scope)."
    ),
    modules=DIFFUSION_TRANSFORMER,
    function="transition_block",
    rewrites=glu_call_rewrites("x", "jax.nn.swish", _GLU),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.DIFFUSION_BF16,
)


PATCHES = (DIFFUSION_BF16_PASS_SCOPE, DIFFUSION_BF16_PASS_LINEAR, DIFFUSION_BF16_PASS_GLU)
