"""Stand-in for AF3's Fourier noise-level embedding (log of the scaled noise level)."""

import jax
import jax.numpy as jnp

_DIM = 8


def noise_embeddings(sigma_scaled_noise_level):
    transformed = 0.25 * jnp.log(sigma_scaled_noise_level)
    w_key, b_key = jax.random.split(jax.random.PRNGKey(0))
    freqs = jax.random.normal(w_key, (_DIM,))
    phases = jax.random.uniform(b_key, (_DIM,))
    return jnp.cos(2 * jnp.pi * (transformed[..., None] * freqs + phases))
