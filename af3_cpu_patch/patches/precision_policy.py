"""precision-policy: the run's trunk precision and attention, and CPU-sized row blocks, in AF3's model config."""

from __future__ import annotations

from af3_cpu_patch import settings
from af3_cpu_patch.engine.patch import Numerics, WrapperPatch
from af3_cpu_patch.patches import differences
from af3_cpu_patch.patches.targets import (
    RUN_ALPHAFOLD,
)

# The trunk's precision setting -> AF3's global_config.bfloat16.
PRECISIONS = {"bf16": "all", "f32": "none"}


# Row blocks of AF3's pair stack, sized for CPU caches.  AF3's global config
# says how many rows of the pair its triangle attention and pair transition
# process at once, as ((up to this many tokens, rows per block), ...).  AF3's
# own sizes are for GPUs: attention over 128 rows at a time up to 1536 tokens
# (at 256 tokens each block's logits are 128 MB) and the transition unsharded
# up to 2048 tokens.  On a CPU, attention blocks of about 4 MB of logits
# (rows x 4 heads x tokens^2 x 4 bytes) and transition blocks of 4096 pair
# entries are faster: at 256 tokens the triangle-attention module takes 0.45 s
# instead of 0.81 s and the pair transition 0.28 s instead of 0.47 s.  Only the
# grouping of rows changes, and the results were bit-identical at 128 and 256
# tokens (docs/benchmarks.md, "What each default is based on"; tests/test_real_af3_layout.py
# checks it on the machine that runs it).  Transition blocks stay at 4096 pair
# entries or more: smaller ones changed the last bit here (XLA picks other
# matrix kernels for them).
CPU_PAIR_ATTENTION_ROWS = ((64, 64), (90, 32), (128, 16), (181, 8), (256, 4), (362, 2), (None, 1))
CPU_PAIR_TRANSITION_ROWS = ((127, None), (255, 32), (511, 16), (1023, 8), (None, 4))


def use_cpu_row_blocks(global_config) -> None:
    """Set AF3's pair-stack row blocks to the CPU sizes above."""
    global_config.pair_attention_chunk_size = CPU_PAIR_ATTENTION_ROWS
    global_config.pair_transition_shard_spec = CPU_PAIR_TRANSITION_ROWS


def model_config_wrapper(wrapped, instance, args, kwargs):
    """wrapt wrapper for ``run_alphafold.make_model_config``: apply the precision, attention and row-block policy."""
    config = wrapped(*args, **kwargs)
    run = settings.current()
    config.global_config.bfloat16 = PRECISIONS[run.precision]
    config.global_config.flash_attention_implementation = run.attention
    use_cpu_row_blocks(config.global_config)
    return config


PRECISION_POLICY = WrapperPatch(
    name="precision-policy",
    why=(
        "AF3 runs the trunk in bf16 whatever the CPU (without native bf16 XLA:CPU emulates it), "
        "and its off-GPU attention normalises before the weighted sum; both are set per the CLI's options. "
        "Its pair stack's row blocks are GPU-sized; CPU-sized blocks give bit-identical results faster."
    ),
    modules=RUN_ALPHAFOLD,
    function="make_model_config",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.PRECISION_POLICY,
    wrapper=model_config_wrapper,
)


PATCHES = (PRECISION_POLICY,)
