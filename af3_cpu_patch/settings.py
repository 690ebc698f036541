"""The options of one run, as one immutable value that the patches read.

Why one object: the patches decide what AF3 computes while JAX traces it
(the trunk's precision, the diffusion head's products, the attention), so
everything that changes a traced program is in :class:`Settings`, the
process holds exactly one current value (:func:`current`), and its
:meth:`Settings.key` names the compilation cache and the model a batch
worker keeps.  ``import af3_cpu_patch`` alone runs with ``Settings()``:
AF3's own numbers.  The ``af3-cpu`` CLI makes its value from the user's
options with :func:`resolve` (in :func:`af3_cpu_patch.runtime.start_af3`,
once AF3 is imported, since what AF3 offers depends on its version).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import threading

from af3_cpu_patch.errors import UsageProblem

PRECISION_CHOICES = ("auto", "bf16", "f32")
ATTENTION_CHOICES = ("auto", "xla", "xla_chunked")

# AF3's own settings, which --exact keeps: its trunk in bf16, the diffusion
# head's products as XLA:CPU computes them (float32), its "xla" attention.
STOCK_CHOICES = {"precision": "bf16", "diffusion-precision": "f32", "attention": "xla"}

# Token buckets for the CPU: fine steps where a CPU spends its time (stock AF3
# pads everything to at least 256 tokens), steps of 8 up to 64 tokens and of
# 16 up to 128 (each step measured saves 12-21% of the projected inference of
# an input just above the step below; docs/benchmarks.md, "What each default is based
# on"), 192, then AF3's own buckets from 256.
CPU_BUCKETS = "16,24,32,40,48,56,64,80,96,112,128,192,256,384,512,768,1024,1280,1536,2048,2560,3072,3584,4096,4608,5120"
STOCK_BUCKETS = "256,512,768,1024,1280,1536,2048,2560,3072,3584,4096,4608,5120"


def effective_buckets(buckets: str | None, exact: bool = False) -> str:
    """The buckets a run pads to: AF3's own with ``stock`` (and by default with ``--exact``), else CPU-sized ones."""
    if buckets == "stock" or (buckets is None and exact):
        return STOCK_BUCKETS
    return buckets or CPU_BUCKETS


@dataclasses.dataclass(frozen=True)
class Settings:
    """What one run computes with; the default is stock AF3's numbers on a CPU."""

    # The trunk: "bf16" is AF3's own (global_config.bfloat16 = "all"), "f32" its "none".
    precision: str = "bf16"
    # The diffusion head's default-precision products: "f32" as XLA:CPU computes them (stock),
    # "bf16" one bf16 pass as on a TPU, "tf32" an A100's TF32 emulated (the fidelity tests' reference).
    diffusion_precision: str = "f32"
    # The trunk's attention: AF3's "xla", or tokamax's "xla_chunked" (AF3 v3.0.2+).
    attention: str = "xla"
    # The trunk's bf16 products asked for a float32 result (CPUs with native bf16).
    trunk_products: bool = False
    # --exact: only patches that keep stock's bits.
    exact: bool = False
    # The token buckets the run pads to (run_alphafold.py's --buckets), None: AF3's own.
    buckets: str | None = None
    # XLA's CPU threads, None: AF3/XLA's own choice.
    threads: int | None = None

    def key(self) -> str:
        """A short name of what changes the traced programs (not threads): for cache keys."""
        traced = {k: v for k, v in dataclasses.asdict(self).items() if k != "threads"}
        return hashlib.sha256(json.dumps(traced, sort_keys=True).encode()).hexdigest()[:12]

    def describe(self) -> str:
        """The numerics of the run, as ``predict`` reports them."""
        trunk = "bf16 (products with float32 results)" if self.precision == "bf16" and self.trunk_products else self.precision
        diffusion = {"bf16": "bf16 pass (as on a TPU)"}.get(self.diffusion_precision, self.diffusion_precision)
        return f"trunk precision {trunk}, diffusion products {diffusion}, attention {self.attention}"


_lock = threading.Lock()
_current = Settings()


def current() -> Settings:
    """The run's settings (what patches read at trace time)."""
    return _current


def use(settings: Settings) -> Settings:
    """Make ``settings`` the run's settings; returns the previous ones."""
    global _current
    with _lock:
        previous, _current = _current, settings
    return previous


@contextlib.contextmanager
def using(settings: Settings):
    """``settings`` for the duration of a block (tests, one-off traces)."""
    previous = use(settings)
    try:
        yield settings
    finally:
        use(previous)


def check_exact(precision: str, diffusion_precision: str, attention: str) -> None:
    """Refuse, with ``--exact``, an option that would change AF3's numbers."""
    given = {"precision": precision, "diffusion-precision": diffusion_precision, "attention": attention}
    clashes = [f"--{name} {value}" for name, value in given.items() if value not in ("auto", STOCK_CHOICES[name])]
    if clashes:
        raise UsageProblem(
            f"--exact keeps AF3's own numerics, which {', '.join(clashes)} would change: drop --exact or the option"
        )


def resolve_precision(choice: str, native_bf16: bool) -> str:
    """``auto``: bf16 where the CPU computes bf16 natively, f32 where XLA would emulate it.

    The rule of both ``--precision`` (the trunk) and ``--diffusion-precision``.
    """
    if choice != "auto":
        return choice
    return "bf16" if native_bf16 else "f32"


def resolve_trunk_precision(choice: str, native_bf16: bool, offered_attention: tuple[str, ...]) -> str:
    """:func:`resolve_precision` for the trunk of the imported AF3.

    AF3 before v3.0.2 runs its gated linear units through its own op, which
    refuses float32 activations with the weights AF3 keeps in bf16 ("Input
    and weight must have the same dtype"): its trunk runs only in bf16, so
    ``auto`` gives bf16 there and ``f32`` is refused.  v3.0.2+ (tokamax,
    recognised by its chunked attention) runs either.
    """
    resolved = resolve_precision(choice, native_bf16)
    if resolved == "f32" and "xla_chunked" not in offered_attention:
        if choice == "f32":
            raise UsageProblem(
                "--precision f32 needs AF3 v3.0.2 or later (before, AF3's own gated linear unit takes only its bf16 "
                "trunk): use --precision bf16 or upgrade AF3"
            )
        return "bf16"
    return resolved


def resolve_attention(choice: str, offered: tuple[str, ...]) -> str:
    """``auto``: tokamax's chunked XLA attention where AF3 uses tokamax, else AF3's XLA attention."""
    if choice == "auto":
        return offered[-1]
    if choice not in offered:
        raise UsageProblem(
            f"--attention {choice} needs AF3 v3.0.2 or later (tokamax attention); this AF3 offers "
            f"{', '.join(offered)}: use --attention xla or upgrade AF3"
        )
    return choice


def resolve(
    *,
    precision: str = "auto",
    diffusion_precision: str = "auto",
    attention: str = "auto",
    exact: bool = False,
    buckets: str | None = None,
    threads: int | None = None,
    native_bf16: bool,
    offered_attention: tuple[str, ...],
) -> Settings:
    """The run's settings from the user's choices, this CPU and what the imported AF3 offers."""
    if exact:
        check_exact(precision, diffusion_precision, attention)
        precision, diffusion_precision, attention = (
            STOCK_CHOICES["precision"], STOCK_CHOICES["diffusion-precision"], STOCK_CHOICES["attention"]
        )
    return Settings(
        precision=resolve_trunk_precision(precision, native_bf16, offered_attention),
        diffusion_precision=resolve_precision(diffusion_precision, native_bf16),
        attention=resolve_attention(attention, offered_attention),
        trunk_products=native_bf16 and not exact,
        exact=exact,
        buckets=buckets,
        threads=threads,
    )
