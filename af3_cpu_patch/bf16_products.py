"""The trunk's bfloat16 matrix products, asked for a float32 result and rounded to bfloat16 after.

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

# Set by cpu_runtime.start_af3 (the af3-cpu CLI): cpu_info.native_bf16().
enabled = False

_GLU_ARGUMENTS = {"x", "weights", "weight", "activation", "implementation"}


def _all_bf16(*arrays) -> bool:
    import jax.numpy as jnp

    return bool(arrays) and all(getattr(a, "dtype", None) == jnp.bfloat16 for a in arrays)


def einsum(equation, *operands, **kwargs):
    """``jnp.einsum``; with ``enabled`` and only bf16 operands, a float32 result rounded to bf16."""
    import jax.numpy as jnp

    if enabled and kwargs.get("preferred_element_type") is None and _all_bf16(*operands):
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

    call = glu_call(args, kwargs, jnp.bfloat16) if enabled else None
    if call is None:
        return original(*args, **kwargs)
    x, weights, activation = call
    return fused_glu(einsum, x, weights, activation).astype(x.dtype)
