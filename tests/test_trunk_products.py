"""The trunk's bf16 products with a float32 result (``af3_cpu_patch.patches.trunk_products``; real JAX, CPU)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from af3_cpu_patch import settings
from af3_cpu_patch.patches import trunk_products
from af3_cpu_patch.host import cpu_info
from af3_cpu_patch import runtime
from af3_cpu_patch.patches import diffusion_precision

EQUATION = "...a,ah->...h"


@pytest.fixture
def enabled():
    with settings.using(dataclasses.replace(settings.current(), trunk_products=True)):
        yield


def _operands(dtype=jnp.bfloat16, seed=0):
    rng = np.random.default_rng(seed)
    return (
        jnp.asarray(rng.standard_normal((4, 96, 128)), jnp.float32).astype(dtype),
        jnp.asarray(rng.standard_normal((128, 256)) / 10, jnp.float32).astype(dtype),
    )


def _ours(x, w, **kwargs):
    return jax.jit(lambda x, w: trunk_products.einsum(EQUATION, x, w, **kwargs))(x, w)


def _stock(x, w, **kwargs):
    return jax.jit(lambda x, w: jnp.einsum(EQUATION, x, w, **kwargs))(x, w)


def _dots(fn, *args):
    """(operand dtypes, result dtype) of every dot_general in ``fn``'s jaxpr."""
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return [
        (tuple(str(v.aval.dtype) for v in eqn.invars), str(eqn.outvars[0].aval.dtype))
        for eqn in jaxpr.eqns
        if eqn.primitive.name == "dot_general"
    ]


def _within_bf16_steps(got, stock, steps=1):
    """Equal, or ``steps`` bf16 rounding steps apart (the two kernels' summation orders round apart).

    Returns the fraction of entries that differ."""
    got, stock = (np.asarray(a, np.float32) for a in (got, stock))
    step = steps * np.abs(stock) * 2.0**-7 + np.finfo(np.float32).tiny
    assert (np.abs(got - stock) <= step).all()
    return float(np.mean(got != stock))


def test_off_it_is_the_stock_einsum():
    x, w = _operands()
    assert settings.current().trunk_products is False  # the default: import af3_cpu_patch keeps stock's products
    assert _dots(lambda x, w: trunk_products.einsum(EQUATION, x, w), x, w) == [(("bfloat16", "bfloat16"), "bfloat16")]
    assert np.array_equal(_ours(x, w), _stock(x, w))


def test_bf16_product_asks_for_a_float32_result_and_rounds_it(enabled):
    x, w = _operands()
    assert _dots(lambda x, w: trunk_products.einsum(EQUATION, x, w), x, w) == [(("bfloat16", "bfloat16"), "float32")]
    got = _ours(x, w)
    assert got.dtype == jnp.bfloat16
    differing = _within_bf16_steps(got, _stock(x, w))
    assert differing < 0.01
    # The value is the float32 product of the bf16 operands, rounded once.
    exact = np.einsum(EQUATION, *(np.asarray(a, np.float64) for a in (x, w)))
    assert np.abs(np.asarray(got, np.float64) - exact).max() <= np.abs(exact).max() * 2.0**-8


def test_products_that_are_not_all_bf16_or_ask_for_a_result_type_are_left_alone(enabled):
    x, w = _operands()
    x32, w32 = _operands(jnp.float32)
    assert np.array_equal(_ours(x32, w32), _stock(x32, w32))
    assert np.array_equal(_ours(x, w32), _stock(x, w32))
    chosen = {"preferred_element_type": jnp.float32}
    assert np.array_equal(_ours(x, w, **chosen), _stock(x, w, **chosen))


def test_hm_linear_route_reaches_it_outside_the_diffusion_head(enabled):
    """hm.Linear calls diffusion_precision.einsum; its bf16 products outside the bf16 pass land here."""
    settings.use(dataclasses.replace(settings.current(), diffusion_precision="bf16"))  # the fixture restores it
    x, w = _operands()
    assert _dots(lambda x, w: diffusion_precision.einsum(EQUATION, x, w), x, w) == [(("bfloat16", "bfloat16"), "float32")]


def _glu_operands(dtype=jnp.bfloat16):
    rng = np.random.default_rng(3)
    return (
        jnp.asarray(rng.standard_normal((64, 64, 128)), jnp.float32).astype(dtype),
        jnp.asarray(rng.standard_normal((128, 2, 256)) / 10, jnp.float32).astype(dtype),
    )


def _stock_glu(x, weights, activation=None):
    """The GLU ops' XLA reference (tokamax's and AF3's own agree): product in x's dtype, gating in f32."""
    y = jnp.einsum("...k,kjn->...jn", x, weights).astype(jnp.float32)
    gate, projection = y[..., 0, :], y[..., 1, :]
    return ((gate if activation is None else activation(gate)) * projection).astype(x.dtype)


def test_glu_off_is_the_op_itself():
    x, w = _glu_operands()
    got = jax.jit(lambda x, w: trunk_products.gated_linear_unit(_stock_glu, x, w, activation=jax.nn.sigmoid))(x, w)
    assert np.array_equal(got, jax.jit(lambda x, w: _stock_glu(x, w, jax.nn.sigmoid))(x, w))


@pytest.mark.parametrize("call", ["positional", "tokamax", "af3-v3.0.0"])
def test_glu_bf16_matches_the_op_up_to_summation_order(enabled, call):
    x, w = _glu_operands()
    forms = {  # the three call forms AF3's trunk uses
        "positional": lambda x, w: trunk_products.gated_linear_unit(_stock_glu, x, w, activation=jax.nn.sigmoid),
        "tokamax": lambda x, w: trunk_products.gated_linear_unit(
            lambda **kw: pytest.fail(f"op called: {kw}"), x=x, weights=w, activation=jax.nn.sigmoid
        ),
        "af3-v3.0.0": lambda x, w: trunk_products.gated_linear_unit(
            lambda **kw: pytest.fail(f"op called: {kw}"), x=x, weight=w, implementation=None, activation=jax.nn.sigmoid
        ),
    }
    assert [d for d in _dots(forms[call], x, w)] == [(("bfloat16", "bfloat16"), "float32")]
    got = jax.jit(forms[call])(x, w)
    assert got.dtype == jnp.bfloat16 and got.shape == (64, 64, 256)
    # One step in the gate and one in the projection: at most two in their product.
    assert _within_bf16_steps(got, jax.jit(lambda x, w: _stock_glu(x, w, jax.nn.sigmoid))(x, w), steps=2) < 0.01


def test_glu_calls_it_does_not_know_go_to_the_op(enabled):
    x, w = _glu_operands()
    calls = []

    def op(*args, **kwargs):
        calls.append((len(args), sorted(kwargs)))
        return None

    trunk_products.gated_linear_unit(op, x=x, weights=w, activation=jax.nn.swish, precision="highest")
    trunk_products.gated_linear_unit(op, x=x.astype(jnp.float32), weights=w.astype(jnp.float32))
    trunk_products.gated_linear_unit(op, x=x, weights=(w[:, 0], w[:, 1]))  # unfused weights
    assert calls == [
        (0, ["activation", "precision", "weights", "x"]),
        (0, ["weights", "x"]),
        (0, ["weights", "x"]),
    ]


@pytest.mark.parametrize("native", [True, False])
def test_the_cli_turns_it_on_only_with_native_bf16(monkeypatch, tmp_path, native):
    monkeypatch.setattr(cpu_info, "native_bf16", lambda: native)
    monkeypatch.setattr(runtime, "prepare", lambda threads: 1)
    monkeypatch.setattr(runtime, "import_run_alphafold", lambda root: None)
    monkeypatch.setattr(runtime.hooks, "install", lambda patches: None)
    with settings.using(settings.Settings(trunk_products=not native)):
        run, _ = runtime.start_af3(tmp_path, ())
        assert run.trunk_products is native and settings.current() is run
