"""``--diffusion-precision``: the einsum that ``hm.Linear`` calls, and its scope (real JAX, CPU)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from af3_cpu_patch.host import cpu_info
from af3_cpu_patch import settings
from af3_cpu_patch.patches import attention_layout
from af3_cpu_patch.patches import diffusion_precision


@pytest.fixture
def setting():
    """Sets the run's diffusion precision (restored after the test)."""
    def set_to(value):
        settings.use(dataclasses.replace(settings.current(), diffusion_precision=value))

    with settings.using(settings.current()):
        yield set_to


def _operands(seed=0, shape=((5, 40, 96), (96, 64))):
    rng = np.random.default_rng(seed)
    return tuple(jnp.asarray(rng.standard_normal(s), jnp.float32) for s in shape)


def _linear(x, w, **kwargs):
    return jax.jit(lambda x, w: diffusion_precision.einsum("...a,ah->...h", x, w, **kwargs))(x, w)


def _stock(x, w, **kwargs):
    return jax.jit(lambda x, w: jnp.einsum("...a,ah->...h", x, w, **kwargs))(x, w)


def test_outside_the_diffusion_head_it_is_jnp_einsum(setting):
    setting("bf16")
    x, w = _operands()
    assert np.array_equal(_linear(x, w), _stock(x, w))


def test_bf16_pass_rounds_both_operands_and_accumulates_in_f32(setting):
    setting("bf16")
    x, w = _operands()
    with diffusion_precision.bf16_pass():
        got = np.asarray(_linear(x, w))
    assert got.dtype == np.float32
    rounded = [np.asarray(a.astype(jnp.bfloat16)).astype(np.float64) for a in (x, w)]
    expected = np.einsum("...a,ah->...h", *rounded)
    exact = np.einsum("...a,ah->...h", *(np.asarray(a, np.float64) for a in (x, w)))
    scale = np.abs(exact).max()
    assert np.abs(got - expected).max() < 1e-5 * scale  # f32 accumulation of the rounded operands
    assert np.abs(got - exact).max() > 1e-4 * scale  # and not the f32 product
    assert np.abs(got - exact).max() < 2e-2 * scale


def test_products_that_ask_for_a_precision_or_are_not_f32_are_left_alone(setting):
    setting("bf16")
    x, w = _operands()
    with diffusion_precision.bf16_pass():
        highest = _linear(x, w, precision="highest")
        bf16 = _linear(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
    assert np.array_equal(highest, _stock(x, w, precision="highest"))
    assert bf16.dtype == jnp.bfloat16
    assert np.array_equal(bf16, _stock(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16)))


def _tf32_reference(values):
    """Round to 10 fraction bits, half to even, in float64 (np.round rounds halves to even)."""
    values = np.asarray(values, np.float64)
    exponent = np.floor(np.log2(np.abs(np.where(values == 0, 1, values))))
    quantum = 2.0 ** (exponent - 10)
    return np.round(values / quantum) * quantum


def test_round_to_tf32():
    ties = np.array([1 + 2**-11, 1 + 3 * 2**-11, -(1 + 2**-11), 0.0], np.float32)
    assert np.asarray(diffusion_precision.round_to_tf32(jnp.asarray(ties))).tolist() == [1.0, 1 + 2**-9, -1.0, 0.0]
    values = np.random.default_rng(1).standard_normal(10_000).astype(np.float32) * 100
    got = np.asarray(diffusion_precision.round_to_tf32(jnp.asarray(values)))
    assert np.array_equal(got, _tf32_reference(values))
    assert not np.array_equal(got, values)


def test_tf32_setting_emulates_a_gpu_product(setting):
    setting("tf32")
    x, w = _operands()
    with diffusion_precision.bf16_pass():
        got = np.asarray(_linear(x, w))
    expected = np.einsum("...a,ah->...h", *(_tf32_reference(a) for a in (x, w)))
    assert np.abs(got - expected).max() < 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("native", [True, False])
def test_auto_is_bf16_only_with_native_bf16(monkeypatch, native):
    monkeypatch.setattr(cpu_info, "native_bf16", lambda: native)
    assert settings.resolve_precision("auto", cpu_info.native_bf16()) == ("bf16" if native else "f32")
    assert settings.resolve_precision("f32", cpu_info.native_bf16()) == "f32"
    assert settings.resolve_precision("bf16", cpu_info.native_bf16()) == "bf16"


@pytest.mark.parametrize("value, inside", [("bf16", True), ("tf32", True), ("f32", False)])
def test_the_scope_is_the_wrapped_call(setting, value, inside):
    setting(value)
    seen = []
    result = diffusion_precision.diffusion_head_wrapper(
        lambda *a, **k: seen.append(diffusion_precision._bf16_pass.get()) or "out", None, (1,), {}
    )
    assert result == "out" and seen == [inside]
    assert diffusion_precision._bf16_pass.get() is False


def _glu_reference(x, w, rounding):
    """activation(x @ w[:, 0]) * (x @ w[:, 1]) in float64 from operands rounded by ``rounding``."""
    x, w = (rounding(a) for a in (x, w))
    gate, projection = np.einsum("mk,kn->mn", x, w[:, 0]), np.einsum("mk,kn->mn", x, w[:, 1])
    return gate / (1 + np.exp(-gate)) * projection


def _glu_operands():
    rng = np.random.default_rng(2)
    return jnp.asarray(rng.standard_normal((40, 96)), jnp.float32), jnp.asarray(rng.standard_normal((96, 2, 64)) / 10, jnp.float32)


def _stock_glu(x, weights, activation):
    """The GLU ops' XLA reference (tokamax's and AF3's own agree): one product, then gate * projection in f32."""
    y = jnp.dot(x, jax.lax.collapse(weights, -2))
    gate, projection = jnp.split(y, 2, axis=-1)
    return activation(gate) * projection


def _glu(x, w, **kwargs):
    return jax.jit(lambda x, w: diffusion_precision.gated_linear_unit(_stock_glu, x=x, weights=w, activation=jax.nn.swish, **kwargs))(x, w)


def test_glu_outside_the_diffusion_head_is_the_op_itself(setting):
    setting("bf16")
    x, w = _glu_operands()
    assert np.array_equal(_glu(x, w), jax.jit(lambda x, w: _stock_glu(x, w, jax.nn.swish))(x, w))


def test_glu_bf16_pass_rounds_its_product_operands_and_gates_in_f32(setting):
    setting("bf16")
    x, w = _glu_operands()
    with diffusion_precision.bf16_pass():
        got = np.asarray(_glu(x, w))
    assert got.dtype == np.float32
    bf16 = _glu_reference(x, w, lambda a: np.asarray(a.astype(jnp.bfloat16)).astype(np.float64))
    exact = _glu_reference(x, w, lambda a: np.asarray(a, np.float64))
    scale = np.abs(exact).max()
    assert np.abs(got - bf16).max() < 1e-5 * scale
    assert np.abs(got - exact).max() > 1e-4 * scale


def test_glu_calls_it_does_not_know_go_to_the_op(setting):
    setting("bf16")
    x, w = _glu_operands()
    calls = []

    def op(**kwargs):
        calls.append(sorted(kwargs))
        return _stock_glu(kwargs["x"], kwargs["weights"], kwargs["activation"])

    with diffusion_precision.bf16_pass():
        diffusion_precision.gated_linear_unit(op, x=x, weights=w, activation=jax.nn.swish, precision="highest")
        diffusion_precision.gated_linear_unit(op, x=x.astype(jnp.bfloat16), weights=w, activation=jax.nn.swish)
        diffusion_precision.gated_linear_unit(op, x=x, weights=w, activation=jax.nn.swish)
    assert calls == [["activation", "precision", "weights", "x"], ["activation", "weights", "x"]]


@pytest.mark.parametrize("avx512, value, left_out", [
    (True, "f32", True),    # import users and --diffusion-precision f32: stock's bits
    (True, "bf16", False),  # the products differ from stock anyway: the faster layout too
    (False, "f32", False),  # bit-identical on AVX2
])
def test_attention_layout_on_avx512_follows_the_diffusion_precision(monkeypatch, setting, avx512, value, left_out):
    monkeypatch.setattr(cpu_info, "has_flag", lambda flag: avx512 and flag == "avx512f")
    setting(value)
    assert bool(attention_layout.not_bit_identical_here()) is left_out
