"""Stand-in for AF3's diffusion transformer: only the attention's weighted sum of values.

Written for af3-cpu-patch's tests; not AlphaFold 3 code.  AF3's functions take
activations and project them with haiku; these take the projected queries,
keys and values (``[..., tokens, heads, channels]``) and take the same
logits and weighted-sum einsums that the layout patches rewrite.
"""

import jax
import jax.numpy as jnp


def self_attention(q, k, v, bias):
    """Token self-attention: queries and keys are the same tokens."""
    key_dim = q.shape[-1]
    logits = jnp.einsum('...qhc,...khc->...hqk', q * key_dim ** (-0.5), k) + bias
    weights = jax.nn.softmax(logits, axis=-1)
    weighted_avg = jnp.einsum('...hqk,...khc->...qhc', weights, v)
    return jnp.reshape(weighted_avg, weighted_avg.shape[:-2] + (-1,))


def cross_attention(q, k, v, bias):
    """Atom cross-attention: 32 query atoms attend to 128 key atoms per subset."""
    key_dim = q.shape[-1]
    logits = jnp.einsum('...qhc,...khc->...hqk', q * key_dim ** (-0.5), k) + bias
    weights = jax.nn.softmax(logits, axis=-1)
    weighted_avg = jnp.einsum('...hqk,...khc->...qhc', weights, v)
    return jnp.reshape(weighted_avg, weighted_avg.shape[:-2] + (-1,))
