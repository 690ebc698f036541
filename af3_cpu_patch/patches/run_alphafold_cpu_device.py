"""run-alphafold-cpu-device: v3.0.0-v3.0.3 ``run_alphafold.main()`` on the CPU device instead of GPUs."""

from __future__ import annotations

from af3_cpu_patch.engine.patch import Numerics, SourcePatch
from af3_cpu_patch.engine.source_rewrite import Rewrite
from af3_cpu_patch.patches.targets import (
    RUN_ALPHAFOLD,
)

CPU_DEVICE = SourcePatch(
    name="run-alphafold-cpu-device",
    why=(
        "v3.0.0-v3.0.3 run_alphafold.main() asks JAX for GPU devices (RuntimeError: Unknown backend "
        "'gpu' on a CPU-only host) and checks their compute capability; use the CPU device instead."
    ),
    modules=RUN_ALPHAFOLD,
    function="main",
    rewrites=(
        Rewrite("gpu_devices = jax.local_devices(backend='gpu')", "gpu_devices = []", optional=True),
        Rewrite("devices = jax.local_devices(backend='gpu')", "devices = jax.local_devices(backend='cpu')"),
    ),
    versions=("3.0.0", "3.0.3"),
    numerics=Numerics.NEEDED,
    requires_globals=(("jax", "jax"),),
)


PATCHES = (CPU_DEVICE,)
