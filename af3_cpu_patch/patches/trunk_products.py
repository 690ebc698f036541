"""trunk-products-*: The trunk's bf16 products that do not go through ``hm.Linear``: routed to :mod:`af3_cpu_patch.patches.trunk_products`.

``hm.Linear`` already calls af3-cpu's einsum (``diffusion-precision-linear``),
which hands bf16 products to :func:`bf16_products.einsum`.  These sites
compute the rest of the trunk's large bf16 products: the transitions' and the
triangle multiplications' gated linear units (tokamax's op from v3.0.2, AF3's
own before), the triangle multiplication's contraction over the third token,
and the outer product mean of the MSA stack.  Each rewritten call is the stock
call unless ``bf16_products.enabled`` (the ``af3-cpu`` CLI, on CPUs with
native bf16).

The trunk's bfloat16 matrix products, asked for a float32 result and rounded to bfloat16 after.

Why: with AF3's bf16 trunk (``global_config.bfloat16 = 'all'``) both operands
of most of its products are bfloat16 and so is the result.  XLA:CPU has no
kernel for a bf16 x bf16 -> bf16 product: it converts both operands to
float32, multiplies in float32 and rounds the result to bf16.  Asked for a
float32 result (``preferred_element_type``), the same product runs on its
native bf16 kernel (AVX512-BF16, AMX), about twice as fast: a
[4096x128]x[128x1024] product took 6.0 ms against 2.6 ms here (AMD EPYC,
jax 0.10.2), and the trunk's products are most of every recycle.

Rounding that float32 result to bf16 gives stock's value except where the two
kernels' summation orders round apart: one bf16 step in about 1e-5 to 1e-4
of the entries (``benchmarks/variants.py`` and the fidelity tests measure the
effect on the trunk).  AF3's gated linear units round their product to the
input's dtype before the activation; so does :func:`gated_linear_unit`.

Off (``enabled`` False, the default; the ``af3-cpu`` CLI turns it on where
the CPU computes bf16 natively), every call here is the stock call.
"""

from __future__ import annotations

from af3_cpu_patch import settings
from af3_cpu_patch.engine.patch import Numerics, SourcePatch
from af3_cpu_patch.engine.source_rewrite import Rewrite
from af3_cpu_patch.patches import differences
from af3_cpu_patch.patches.targets import (
    TRUNK_MODULES,
)

_GLU_ARGUMENTS = {"x", "weights", "weight", "activation", "implementation"}


def _all_bf16(*arrays) -> bool:
    import jax.numpy as jnp

    return bool(arrays) and all(getattr(a, "dtype", None) == jnp.bfloat16 for a in arrays)


def einsum(equation, *operands, **kwargs):
    """``jnp.einsum``; with ``enabled`` and only bf16 operands, a float32 result rounded to bf16."""
    import jax.numpy as jnp

    if settings.current().trunk_products and kwargs.get("preferred_element_type") is None and _all_bf16(*operands):
        kwargs["preferred_element_type"] = jnp.float32
        return jnp.einsum(equation, *operands, **kwargs).astype(jnp.bfloat16)
    return jnp.einsum(equation, *operands, **kwargs)


def glu_call(args: tuple, kwargs: dict, dtype):
    """(x, fused weights, activation) of a gated-linear-unit call whose operands are ``dtype``, else None.

    The call forms AF3 uses: ``x`` and ``weights`` (tokamax) or ``weight``
    (AF3's own op), by keyword or the first two by position, fused ``(K, 2, N)``
    weights.  None: a call to leave to the op itself.
    """
    if len(args) > 2:
        return None
    named = dict(zip(("x", "weights"), args), **kwargs)
    x, weights = named.get("x"), named.get("weights", named.get("weight"))
    if (
        set(named) <= _GLU_ARGUMENTS
        and getattr(x, "dtype", None) == dtype
        and getattr(weights, "dtype", None) == dtype
        and weights.ndim == 3
        and weights.shape[1] == 2
    ):
        return x, weights, named.get("activation")
    return None


def fused_glu(product, x, weights, activation):
    """``activation(gate) * projection`` in float32, from one ``product`` of ``x`` with the (K, 2N) weights.

    As the GLU ops' XLA reference computes it; ``product`` is the einsum that
    decides the product's precision (and its rounding, before the gating).
    """
    import jax
    import jax.numpy as jnp

    y = product("...k,kn->...n", x, jax.lax.collapse(weights, -2)).astype(jnp.float32)
    gate, projection = jnp.split(y, 2, axis=-1)
    return (gate if activation is None else activation(gate)) * projection


def gated_linear_unit(original, *args, **kwargs):
    """AF3's gated-linear-unit call (``original``: tokamax's op, or AF3's own before v3.0.2).

    With ``enabled`` and bf16 ``x`` and fused weights, computes what the op's
    XLA reference computes -- product rounded to bf16, ``activation(gate) *
    projection`` in float32, result in bf16 -- with the product from
    :func:`einsum`.  Anything else is ``original`` unchanged.
    """
    import jax.numpy as jnp

    call = glu_call(args, kwargs, jnp.bfloat16) if settings.current().trunk_products else None
    if call is None:
        return original(*args, **kwargs)
    x, weights, activation = call
    return fused_glu(einsum, x, weights, activation).astype(x.dtype)


_GLU = "__import__('af3_cpu_patch.patches.trunk_products', fromlist=['gated_linear_unit']).gated_linear_unit"


_EINSUM = "__import__('af3_cpu_patch.patches.trunk_products', fromlist=['einsum']).einsum"


TOKAMAX = "tokamax's op (v3.0.2+)"


OWN_GLU = "AF3's own op (v3.0.0-v3.0.1)"


_WHY = (
    "XLA:CPU computes a bf16 x bf16 -> bf16 product in float32 from converted operands; asked for a float32 "
    "result it uses its native bf16 kernel, twice as fast, and the result rounded to bf16 is stock's up to "
    "summation order."
)


def routed_call(op: str, args: str, route: str, form: str) -> Rewrite:
    """``op(args)`` becomes ``route(op, args)``: af3-cpu's function, handed the op and the call's own arguments.

    ``form``: the AF3 versions that write the call this way (the others use another op).
    """
    return Rewrite(f"{op}({args})", f"{route}({op}, {args})", optional=True, form=form)


def glu_call_rewrites(x: str, activation: str, route: str) -> tuple[Rewrite, Rewrite]:
    """A transition's gated-linear-unit call routed through ``route``: tokamax's op (v3.0.2+), AF3's own before."""
    return (
        routed_call("tokamax.gated_linear_unit", f"x={x}, weights=weights, activation={activation}", route, TOKAMAX),
        routed_call(
            "gated_linear_unit.gated_linear_unit",
            f"x={x}, weight=weights, implementation=None, activation={activation}",
            route,
            OWN_GLU,
        ),
    )


def _einsum(args: str, form: str = "") -> Rewrite:
    """``jnp.einsum(args)`` becomes :func:`bf16_products.einsum` with the same arguments (``form``: see Rewrite)."""
    return Rewrite(f"jnp.einsum({args})", f"{_EINSUM}({args})", optional=bool(form), form=form)


TRANSITION_GLU = SourcePatch(
    name="trunk-products-transition",
    why=_WHY + " Here: the transition blocks' gated linear unit, the largest product of every trunk block.",
    modules=TRUNK_MODULES,
    function="TransitionBlock.__call__",
    rewrites=glu_call_rewrites("act", "jax.nn.swish", _GLU),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.TRUNK_PRODUCTS,
    requires_globals=(),  # the exact AST match is the check
)


TRIANGLE_MULTIPLICATION = SourcePatch(
    name="trunk-products-triangle-multiplication",
    why=_WHY + " Here: the triangle multiplication's gated projection and its contraction over the third token.",
    modules=TRUNK_MODULES,
    function="TriangleMultiplication.__call__",
    rewrites=(
        routed_call("tokamax.gated_linear_unit", "act, weights_glu, activation=jax.nn.sigmoid", _GLU, TOKAMAX),
        routed_call(
            "gated_linear_unit.gated_linear_unit",
            "x=act, weight=weights_glu, activation=jax.nn.sigmoid, implementation=None",
            _GLU,
            OWN_GLU,
        ),
        _einsum("equation, a, b"),
    ),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.TRUNK_PRODUCTS,
    requires_globals=(),
)


OUTER_PRODUCT_MEAN = SourcePatch(
    name="trunk-products-outer-product-mean",
    why=_WHY + " Here: the MSA stack's outer product mean.",
    modules=TRUNK_MODULES,
    function="OuterProductMean.__call__",
    rewrites=(
        _einsum("'abc,ade,cef->bdf', left_act, right_act, output_w", form="v3.0.4: one einsum"),
        _einsum("'acb,ade->dceb', left_act, right_act", form="v3.0.0-v3.0.3: two einsums"),
        _einsum("'dceb,cef->dbf', act, output_w", form="v3.0.0-v3.0.3: two einsums"),
    ),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.TRUNK_PRODUCTS,
    requires_globals=(),
)


PATCHES = (TRANSITION_GLU, TRIANGLE_MULTIPLICATION, OUTER_PRODUCT_MEAN)
