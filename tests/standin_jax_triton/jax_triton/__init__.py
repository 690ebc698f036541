"""Stand-in for jax-triton 0.2.0 on CPU-only JAX: it refuses to import (like the real one).

Set STANDIN_JAX_TRITON_OK=1 to make it import normally.
"""

import os

if os.environ.get("STANDIN_JAX_TRITON_OK") != "1":
    raise ImportError("jax-triton requires JAX to be installed with GPU support (stand-in)")


def triton_call(*args, **kwargs):
    return "called"
