"""diffusion-steps-rolled: the diffusion head's 200-step loop compiled rolled (``unroll=1``).

How XLA:CPU is asked to compile the diffusion head's loops: the step loop rolled, the layer stack unrolled.

AF3 writes the 200-step diffusion loop as ``hk.scan(..., unroll=4)`` and the
diffusion transformer's 24 blocks as two nested ``layer_stack`` loops (6 x 4),
choices made for accelerators.  On a CPU both go the wrong way round
(``benchmarks/variants.py``: 64 residues, 5 samples, 2 cores, AVX512-BF16,
with the bf16 pass and ``shared-noise-level``; docs/benchmarks.md, "Diffusion step"):

- ``unroll=4`` compiles the step body four times and makes no step faster:
  with ``unroll=1`` compilation took 16-18 s instead of 24 s, and a step
  0.495 s instead of 0.510 s.
- Each iteration of a rolled layer loop first copies that layer's weights out
  of the stacked arrays (``dynamic-slice``, a tenth of a step in the profile)
  and XLA cannot fuse across layers.  Unrolled, the 24 blocks are
  straight-line code: a step took 0.426 s instead of 0.495 s.  Unrolling
  alone doubled compilation (the step body was compiled four times); with the
  step loop rolled, compilation took 20 s, less than with AF3's loops.
- Tried and left out: unrolling the atom encoder's and decoder's 3-block
  transformers too.  A step took 0.390 s instead of 0.401 s, and compilation
  2.2 s longer, which is what 200 such steps save.

Both are the same computation in the same order; XLA may fuse the unrolled
code differently, so they are CLI defaults covered by the fidelity tests, not
part of ``import af3_cpu_patch``.
"""

from __future__ import annotations

from af3_cpu_patch.engine.patch import Numerics, SourcePatch
from af3_cpu_patch.engine.source_rewrite import Rewrite
from af3_cpu_patch.patches import differences
from af3_cpu_patch.patches.targets import (
    DIFFUSION_HEAD,
)

DIFFUSION_STEPS_ROLLED = SourcePatch(
    name="diffusion-steps-rolled",
    why=(
        "sample() unrolls its 200-step loop 4x for accelerators; on a CPU that compiles the step four times "
        "(about 6 s of a run) and makes no step faster."
    ),
    modules=DIFFUSION_HEAD,
    function="sample",
    rewrites=(
        Rewrite(
            "hk.scan(apply_denoising_step, init, noise_levels[1:], unroll=4)",
            "hk.scan(apply_denoising_step, init, noise_levels[1:], unroll=1)",
        ),
    ),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.SPEED,
    requires_globals=(),  # the exact AST match is the check
)


PATCHES = (DIFFUSION_STEPS_ROLLED,)
