"""Stand-in for AF3's ``haiku_modules``: a ``Linear`` whose product is the one the plugin routes.

Written for af3-cpu-patch's tests; not AlphaFold 3 code.  AF3's ``Linear`` is a
haiku module that creates its weights; this one is given them, and ends in
the same ``jnp.einsum(equation, inputs, weights, precision=self.precision)``
call that the ``diffusion-precision-linear`` patch rewrites.
"""

import jax.numpy as jnp

DEFAULT_PRECISION = None


class Linear:
    def __init__(self, weights, precision=None):
        self.weights = weights
        self.precision = precision if precision is not None else DEFAULT_PRECISION

    def __call__(self, inputs):
        equation = "...a,ah->...h"
        weights = jnp.asarray(self.weights, inputs.dtype)
        output = jnp.einsum(equation, inputs, weights, precision=self.precision)
        return output
