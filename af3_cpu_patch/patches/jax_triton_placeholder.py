"""jax-triton-placeholder: v3.0.0/v3.0.1 import jax_triton, which cannot be imported on CPU-only jax."""

from __future__ import annotations

from af3_cpu_patch.engine.import_fallback import ImportFallback
from af3_cpu_patch.engine.patch import Numerics

JAX_TRITON_FALLBACK = ImportFallback(
    name="jax-triton-placeholder",
    why=(
        "v3.0.0/v3.0.1 import jax_triton unconditionally, and jax-triton 0.2.0 raises at import on "
        "CPU-only jax; AF3 only calls it for Triton attention, which a CPU never uses."
    ),
    modules=("jax_triton",),
    function="<module>",
    versions=("3.0.0", "3.0.1"),
    numerics=Numerics.NEEDED,
    hint="Triton attention needs a GPU: on a CPU use --flash_attention_implementation=xla (af3-cpu does).",
)


PATCHES = (JAX_TRITON_FALLBACK,)
