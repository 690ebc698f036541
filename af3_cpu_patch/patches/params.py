"""params-*: AF3's weights read and put on the device without extra copies or compilations (bit-identical)."""

from __future__ import annotations

from af3_cpu_patch.engine.patch import Numerics, SourcePatch
from af3_cpu_patch.engine.source_rewrite import Rewrite
from af3_cpu_patch.patches.targets import (
    PARAMS,
)

PARAMS_DEVICE_PUT = SourcePatch(
    name="params-device-put",
    why=(
        "AF3 makes each of its ~400 weight arrays a JAX array with jnp.array, which traces and compiles a "
        "small XLA program for every distinct shape (about 130 of them, 1.5 s of every run on 2 cores); "
        "jax.device_put puts the same values, in the same dtype, on the device without compiling anything."
    ),
    modules=PARAMS,
    function="get_model_haiku_params",
    rewrites=(Rewrite("jnp.array(arr)", "__import__('jax').device_put(arr)"),),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
)


PARAMS_READ_IN_PLACE = SourcePatch(
    name="params-read-in-place",
    why=(
        "AF3's weight reader slices each record's bytes before viewing them as an array, a second copy of "
        "the 1.1 GB of weights (0.4 s); a memoryview slice is the same bytes without the copy."
    ),
    modules=PARAMS,
    function="_read_record",
    rewrites=(
        Rewrite(
            "np.frombuffer(payload[-arr_buffer_len:], dtype=dtype)",
            "np.frombuffer(memoryview(payload)[-arr_buffer_len:], dtype=dtype)",
        ),
    ),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    requires_globals=(("np", "numpy"),),
)


PATCHES = (PARAMS_DEVICE_PUT, PARAMS_READ_IN_PLACE)
