"""diffusion-layers-unrolled: the diffusion transformer's 24 blocks compiled as straight-line code.

See :mod:`af3_cpu_patch.patches.diffusion_steps_rolled` for the measurements of both loop patches.
"""

from __future__ import annotations

from af3_cpu_patch.engine.patch import Numerics, SourcePatch
from af3_cpu_patch.engine.source_rewrite import Rewrite
from af3_cpu_patch.patches import differences
from af3_cpu_patch.patches.targets import (
    DIFFUSION_TRANSFORMER,
)

DIFFUSION_LAYERS_UNROLLED = SourcePatch(
    name="diffusion-layers-unrolled",
    why=(
        "The diffusion transformer's 24 blocks run as a rolled layer loop that copies every layer's weights out "
        "of the stacked arrays at each of the 200 steps; unrolled, a step took a seventh less time."
    ),
    modules=DIFFUSION_TRANSFORMER,
    function="Transformer.__call__",
    rewrites=(
        Rewrite(
            "hk.experimental.layer_stack(self.config.super_block_size, with_per_layer_inputs=True)",
            "hk.experimental.layer_stack(self.config.super_block_size, with_per_layer_inputs=True, "
            "unroll=self.config.super_block_size)",
        ),
        Rewrite(
            "hk.experimental.layer_stack(num_super_blocks, with_per_layer_inputs=True)",
            "hk.experimental.layer_stack(num_super_blocks, with_per_layer_inputs=True, unroll=num_super_blocks)",
        ),
    ),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.SPEED,
    requires_globals=(),  # the exact AST match is the check
)


PATCHES = (DIFFUSION_LAYERS_UNROLLED,)
