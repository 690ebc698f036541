"""The trunk's bf16 products that do not go through ``hm.Linear``: routed to :mod:`af3_cpu_patch.bf16_products`.

``hm.Linear`` already calls af3-cpu's einsum (``diffusion-precision-linear``),
which hands bf16 products to :func:`bf16_products.einsum`.  These sites
compute the rest of the trunk's large bf16 products: the transitions' and the
triangle multiplications' gated linear units (tokamax's op from v3.0.2, AF3's
own before), the triangle multiplication's contraction over the third token,
and the outer product mean of the MSA stack.  Each rewritten call is the stock
call unless ``bf16_products.enabled`` (the ``af3-cpu`` CLI, on CPUs with
native bf16).
"""

from __future__ import annotations

from af3_cpu_patch.patches import differences
from af3_cpu_patch.registry import Numerics, SourcePatch
from af3_cpu_patch.source_rewrite import Rewrite

MODULES = ("alphafold3.model.network.modules", "alphafold3.model.diffusion.modules")

_GLU = "__import__('af3_cpu_patch.bf16_products', fromlist=['gated_linear_unit']).gated_linear_unit"
_EINSUM = "__import__('af3_cpu_patch.bf16_products', fromlist=['einsum']).einsum"
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
    modules=MODULES,
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
    modules=MODULES,
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
    modules=MODULES,
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
