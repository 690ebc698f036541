"""Put the process on the CPU before AF3 (and jax) are imported.

JAX reads ``JAX_PLATFORMS`` once, at backend initialisation, so this must run
before anything touches a device.  Also quiets one kind of known-harmless
noise: tokamax (v3.0.2+) logs "Not supported on cpu" errors many times per
trace before it falls back to XLA attention, which AF3's docs call safe.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import pathlib
import sys
import typing

from af3_cpu_patch import bf16_products, cpu_info, diffusion_precision, registry
from af3_cpu_patch.af3_checkout import UsageProblem

NOISE = ("Not supported on cpu",)


def prepare(threads: int | None = None) -> int:
    """JAX on the CPU, XLA's thread pool sized to the cores we may use; returns that count.

    XLA:CPU sizes its pool from the affinity mask, not from a cgroup CPU quota,
    so under a quota (containers, SLURM) it oversubscribes: the mask is
    narrowed to the quota, or to ``threads``.
    """
    os.environ["JAX_PLATFORMS"] = "cpu"
    if "jax" in sys.modules:
        sys.modules["jax"].config.update("jax_platforms", "cpu")
    allowed = cpu_info.allowed_cpus()
    wanted = threads or cpu_info.usable_cores()
    if wanted > len(allowed):
        raise UsageProblem(f"--threads {wanted} exceeds the {len(allowed)} CPUs this process may use: give at most {len(allowed)}")
    if wanted < len(allowed) and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, allowed[:wanted])
    return wanted


# The trunk's precision: "bf16" is AF3's own setting (global_config.bfloat16 = "all").
PRECISIONS = {"bf16": "all", "f32": "none"}
PRECISION_CHOICES = ("auto", *PRECISIONS)
precision = "bf16"


def resolve_precision(choice: str) -> str:
    """``auto``: bf16 where the CPU computes bf16 natively, f32 where XLA would emulate it.

    The rule of both ``--precision`` (the trunk) and ``--diffusion-precision``.
    """
    if choice != "auto":
        return choice
    return "bf16" if cpu_info.native_bf16() else "f32"


def resolve_trunk_precision(choice: str) -> str:
    """:func:`resolve_precision` for the trunk of the imported AF3.

    AF3 before v3.0.2 runs its gated linear units through its own op, which
    refuses float32 activations with the weights AF3 keeps in bf16 ("Input
    and weight must have the same dtype"): its trunk runs only in bf16, so
    ``auto`` gives bf16 there and ``f32`` is refused.  v3.0.2+ (tokamax) runs
    either.
    """
    resolved = resolve_precision(choice)
    if resolved == "f32" and "xla_chunked" not in attention_choices():
        if choice == "f32":
            raise UsageProblem(
                "--precision f32 needs AF3 v3.0.2 or later (before, AF3's own gated linear unit takes only its bf16 "
                "trunk): use --precision bf16 or upgrade AF3"
            )
        return "bf16"
    return resolved


def describe_precision() -> str:
    """The trunk's precision as ``predict`` reports it."""
    if precision == "bf16" and bf16_products.enabled:
        return "bf16 (products with float32 results)"
    return precision


# The trunk's attention (AF3's GridSelfAttention: triangle attention).  "xla" is
# what AF3 asks for off-GPU: it normalises the softmax over the whole
# (heads, queries, keys) tensor of every row before the weighted sum.  tokamax,
# which AF3 v3.0.2+ calls for attention, also offers "xla_chunked", which
# divides by the softmax denominator after the weighted sum instead (on the
# small output, not the keys-wide weights): a forward pass at 256 tokens is
# 1.35x faster on a 2-core AVX2 CPU, and at 32 tokens the trunk's outputs are
# bit-identical (README, "What each default is based on").
attention = "xla"
ATTENTION_CHOICES = ("auto", "xla", "xla_chunked")


def attention_choices() -> tuple[str, ...]:
    """The CPU attention implementations the imported AF3 accepts ("xla" on every version)."""
    modules = sys.modules.get("alphafold3.model.network.modules")
    tokamax = getattr(modules, "tokamax", None)  # AF3 v3.0.2+
    offered = typing.get_args(getattr(tokamax, "DotProductAttentionImplementation", None))
    return ("xla",) + (("xla_chunked",) if "xla_chunked" in offered else ())


def resolve_attention(choice: str) -> str:
    """``auto``: tokamax's chunked XLA attention where AF3 uses tokamax, else AF3's XLA attention."""
    offered = attention_choices()
    if choice == "auto":
        return offered[-1]
    if choice not in offered:
        raise UsageProblem(
            f"--attention {choice} needs AF3 v3.0.2 or later (tokamax attention); this AF3 offers "
            f"{', '.join(offered)}: use --attention xla or upgrade AF3"
        )
    return choice


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
# tokens (README, "What each default is based on"; tests/test_real_af3_layout.py
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
    config.global_config.bfloat16 = PRECISIONS[precision]
    config.global_config.flash_attention_implementation = attention
    use_cpu_row_blocks(config.global_config)
    return config


# AF3's own settings, which --exact keeps: its trunk in bf16, the diffusion
# head's products as XLA:CPU computes them (float32), its "xla" attention.
STOCK_SETTINGS = {"precision": "bf16", "diffusion-precision": "f32", "attention": "xla"}


def check_exact(precision_choice: str, diffusion_choice: str, attention_choice: str) -> None:
    """Refuse, with ``--exact``, an option that would change AF3's numbers."""
    given = {"precision": precision_choice, "diffusion-precision": diffusion_choice, "attention": attention_choice}
    clashes = [f"--{name} {value}" for name, value in given.items() if value not in ("auto", STOCK_SETTINGS[name])]
    if clashes:
        raise UsageProblem(
            f"--exact keeps AF3's own numerics, which {', '.join(clashes)} would change: drop --exact or the option"
        )


def start_af3(
    root: pathlib.Path,
    threads: int | None,
    precision_choice: str,
    patches,
    attention_choice: str = "auto",
    diffusion_choice: str = "auto",
    exact: bool = False,
) -> tuple[int, object]:
    """Set this process up for AF3 on the CPU, in the one order that works; returns (threads, run_alphafold).

    The platform and the thread count must be set before jax initialises, the
    patches installed before AF3 is imported, and the attention and the trunk's
    precision chosen after (what AF3 offers depends on its version).  ``exact``: AF3's own settings,
    and of ``patches`` only those that keep stock's bits.
    """
    global precision, attention
    if exact:
        check_exact(precision_choice, diffusion_choice, attention_choice)
        patches = registry.exact(patches)
        precision_choice, diffusion_choice, attention_choice = (
            STOCK_SETTINGS["precision"], STOCK_SETTINGS["diffusion-precision"], STOCK_SETTINGS["attention"]
        )
    used = prepare(threads)
    diffusion_precision.setting = resolve_precision(diffusion_choice)
    bf16_products.enabled = cpu_info.native_bf16() and not exact
    import af3_cpu_patch

    af3_cpu_patch.install(patches)
    run_alphafold = import_run_alphafold(root)
    attention = resolve_attention(attention_choice)
    precision = resolve_trunk_precision(precision_choice)
    return used, run_alphafold


def import_run_alphafold(root: pathlib.Path):
    """Import the checkout's stock run_alphafold.py as module ``run_alphafold``."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    try:
        module = importlib.import_module("run_alphafold")
    except Exception as exc:  # noqa: BLE001 - any import failure is an install problem
        raise UsageProblem(
            f"AF3 could not be imported ({type(exc).__name__}: {exc}): install AF3's dependencies "
            "(pip install your alphafold3 checkout) and run its build_data"
        ) from exc
    if pathlib.Path(module.__file__).resolve() != (root / "run_alphafold.py").resolve():
        raise UsageProblem(f"a different run_alphafold module is already imported ({module.__file__})")
    return module


def parse_flags(argv: list[str]) -> None:
    """Parse absl flags for AF3 (and tokamax, which otherwise parses our own sys.argv).

    Flags are reset first: a batch worker parses once per task, and a flag one
    task set must not leak into the next.
    """
    from absl import flags

    try:
        flags.FLAGS.unparse_flags()
        flags.FLAGS(argv)
    except flags.Error as exc:
        raise UsageProblem(f"run_alphafold.py rejected the flags: {exc}") from None


class _DropNoise(logging.Filter):
    def __init__(self):
        super().__init__()
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" {record.exc_info[1]}"
        if any(noise in text for noise in NOISE):
            self.dropped += 1
            return False
        return True


@contextlib.contextmanager
def quiet_known_noise():
    """Drop known-harmless log records (tokamax logs through absl's logger)."""
    noise = _DropNoise()
    targets = [logging.getLogger("absl"), *logging.getLogger().handlers]
    for target in targets:
        target.addFilter(noise)
    try:
        yield noise
    finally:
        for target in targets:
            target.removeFilter(noise)
        if noise.dropped:
            print(f"(hid {noise.dropped} harmless tokamax 'Not supported on cpu' messages)", file=sys.stderr)
