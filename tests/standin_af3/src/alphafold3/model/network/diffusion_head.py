"""Stand-in for AF3's diffusion head: the EDM sampler loop with AF3's arithmetic.

Written for af3-cpu-patch's tests; not AlphaFold 3 code.  ``sample`` keeps the
shape that matters to the plugin: a nested ``apply_denoising_step`` that takes
``jnp.sqrt(t_hat**2 - noise_level_prev**2)``, vmapped over samples and scanned
over the 200-step Karras noise schedule (``hk.scan(..., unroll=4)``), so that
under ``jax.jit`` on an FMA CPU the final (gamma == 0) steps take the square
root of a rounding residue.
"""

import dataclasses
import types

import jax
import jax.numpy as jnp

from alphafold3.model.components import haiku_modules as hm
from alphafold3.model.network import noise_level_embeddings

SIGMA_DATA = 16.0

# AF3 loops with haiku's scan (jax.lax.scan that also threads haiku's state);
# the stand-in has no haiku state, so jax.lax.scan is the whole of it.
hk = types.SimpleNamespace(scan=jax.lax.scan)


def noise_schedule(t, smin=0.0004, smax=160.0, p=7):
    """Karras et al. (2022) schedule, scaled by SIGMA_DATA."""
    lo, hi = smin ** (1 / p), smax ** (1 / p)
    return SIGMA_DATA * (hi + t * (lo - hi)) ** p


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    steps: int = 200
    gamma_0: float = 0.8
    gamma_min: float = 1.0
    noise_scale: float = 1.003
    step_scale: float = 1.5
    num_samples: int = 5


class DiffusionHead:
    """Only the noise-level scalings of the real head; the network is one default-precision product.

    The product is by ``weight`` times the identity: in float32 exactly
    ``weight * act``; with its inputs rounded to bf16 (af3-cpu's
    ``--diffusion-precision bf16``) slightly different.
    """

    def __init__(self, weight=0.5):
        self.weight = weight

    def _conditioning(self, noise_level):
        return noise_level_embeddings.noise_embeddings(sigma_scaled_noise_level=noise_level / SIGMA_DATA)

    def __call__(self, positions_noisy, noise_level):
        act = positions_noisy / jnp.sqrt(noise_level**2 + SIGMA_DATA**2)
        update = hm.Linear(self.weight * jnp.eye(3))(act) + jnp.mean(self._conditioning(noise_level))
        skip = SIGMA_DATA**2 / (noise_level**2 + SIGMA_DATA**2)
        out = noise_level * SIGMA_DATA / jnp.sqrt(noise_level**2 + SIGMA_DATA**2)
        return skip * positions_noisy + out * update


def sample(denoising_step, batch, key, config):
    """Denoise pure noise of shape (num_samples, *mask.shape, 3) to positions.

    ``batch`` is the atom mask itself here (AF3 passes a batch holding it);
    the parameter names are AF3's, which wrapper patches check.
    """
    mask = batch

    def apply_denoising_step(carry, noise_level):
        key, positions, noise_level_prev = carry
        key, key_noise = jax.random.split(key)

        gamma = config.gamma_0 * (noise_level > config.gamma_min)
        t_hat = noise_level_prev * (1 + gamma)

        noise_scale = config.noise_scale * jnp.sqrt(t_hat**2 - noise_level_prev**2)
        positions_noisy = positions + noise_scale * jax.random.normal(key_noise, positions.shape)

        positions_denoised = denoising_step(positions_noisy, t_hat)
        grad = (positions_noisy - positions_denoised) / t_hat
        positions_out = positions_noisy + config.step_scale * (noise_level - t_hat) * grad
        return (key, positions_out, noise_level), positions_out

    noise_levels = noise_schedule(jnp.linspace(0, 1, config.steps + 1))
    key, noise_key = jax.random.split(key)
    shape = (config.num_samples,) + mask.shape + (3,)
    positions = jax.random.normal(noise_key, shape) * noise_levels[0]
    init = (
        jax.random.split(key, config.num_samples),
        positions,
        jnp.tile(noise_levels[None, 0], (config.num_samples,)),
    )
    apply_denoising_step = jax.vmap(apply_denoising_step, in_axes=(0, None))
    result, _ = hk.scan(apply_denoising_step, init, noise_levels[1:], unroll=4)
    _, positions, _ = result
    return {"atom_positions": positions * mask[..., None], "mask": mask}
