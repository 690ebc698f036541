"""``shared-noise-level``: the diffusion step's noise conditioning computed once for all samples (real JAX, CPU)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from af3_cpu_patch.patches import shared_noise_level
from tests.helpers import STANDIN, run_python


def _shapes_seen_by_sin(fn, *args):
    jaxpr = jax.make_jaxpr(fn)(*args)
    return [eqn.invars[0].aval.shape for eqn in jaxpr.eqns if eqn.primitive.name == "sin"]


def test_under_vmap_equal_levels_become_one_unbatched_value():
    levels = jnp.full((5,), 3.0)
    fn = jax.vmap(lambda t: jnp.sin(shared_noise_level.same_for_every_sample(t)) * jnp.ones(4))
    assert _shapes_seen_by_sin(fn, levels) == [()]  # computed once, not per sample
    assert _shapes_seen_by_sin(jax.vmap(lambda t: jnp.sin(t) * jnp.ones(4)), levels) == [(5,)]  # stock: per sample
    assert np.array_equal(jax.jit(fn)(levels), np.broadcast_to(np.sin(np.float32(3.0)), (5, 4)))


def test_unequal_levels_give_nan_not_a_silent_answer():
    levels = jnp.array([3.0, 3.0, 2.0])
    out = jax.jit(jax.vmap(lambda t: shared_noise_level.same_for_every_sample(t) + jnp.zeros(2)))(levels)
    assert np.isnan(out).all()


def test_without_vmap_it_is_the_identity():
    assert float(jax.jit(shared_noise_level.same_for_every_sample)(jnp.float32(1.5))) == 1.5


@pytest.mark.parametrize("as_keyword", [False, True])
def test_wrapped_sample_computes_the_conditioning_once_with_the_stock_result(as_keyword):
    # The stand-in sampler vmaps its denoising step over samples with the noise
    # level in the vmapped carry, as AF3's does; its head's conditioning is the
    # noise embedding.  Wrapped, the embedding runs once per step (scalar).
    result = run_python(
        f"""
        import json, re
        import af3_cpu_patch  # the stand-in's NaN guard, so that the result can be compared
        import jax, jax.numpy as jnp, numpy as np
        from alphafold3.model.network import diffusion_head as dh
        from af3_cpu_patch.patches import shared_noise_level

        config = dh.SampleConfig(steps=20)
        mask = jnp.ones((8, 4))
        head = dh.DiffusionHead()

        def stock(key):
            return dh.sample(head, mask, key, config)["atom_positions"]

        def shared(key):
            args, kwargs = ((), dict(denoising_step=head, batch=mask, key=key, config=config)) if {as_keyword} else ((head, mask, key, config), {{}})
            return shared_noise_level.sample_wrapper(dh.sample, None, args, kwargs)["atom_positions"]

        key = jax.random.PRNGKey(3)
        a, b = (np.asarray(jax.jit(f)(key)) for f in (stock, shared))
        cos = lambda f: sorted(set(re.findall(r"(f32\\[[0-9,]*\\]) = cos", str(jax.make_jaxpr(f)(key)))))
        print(json.dumps({{"rel": float(np.abs(a - b).max() / np.abs(a).max()), "finite": bool(np.isfinite(a).all()),
                           "stock_cos": cos(stock), "shared_cos": cos(shared)}}))
        """,
        pythonpath=[STANDIN],
    )
    assert result["stock_cos"] == ["f32[5,8]"]  # the noise embedding, per sample
    assert result["shared_cos"] == ["f32[8]"]  # once per step
    assert result["finite"]
    # The same arithmetic on one value instead of five equal ones; XLA may
    # vectorise it differently, so equal up to float32 rounding (1.5e-7 here).
    assert result["rel"] < 1e-6
