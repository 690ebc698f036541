"""Patches that let AF3's own ``run_alphafold.py`` start and finish on a CPU.

``JAX_TRITON_FALLBACK`` is in the default set (library users of v3.0.0/1 on
a CPU need it to import AF3 at all).  The others change what
``run_alphafold.main()`` does and are installed by the ``af3-cpu`` CLI only.
"""

from __future__ import annotations

import dataclasses
import importlib.abc
import importlib.machinery
import sys
import types
from typing import Callable

from af3_cpu_patch import (
    atom_slots,
    cpu_runtime,
    diffusion_precision,
    lazy_ccd,
    model_reuse,
    msa_rows,
    progress,
    result_check,
    shared_noise_level,
)
from af3_cpu_patch.patches import differences
from af3_cpu_patch.patches.layout import DIFFUSION_TRANSFORMER
from af3_cpu_patch.patches.numerics import DIFFUSION_HEAD
from af3_cpu_patch.patches.trunk_products import glu_call_rewrites
from af3_cpu_patch.registry import Numerics, Outcome, Patch, SourcePatch, Status, WrapperPatch
from af3_cpu_patch.source_rewrite import Rewrite

RUN_ALPHAFOLD = ("run_alphafold",)

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

CHECK_INFERENCE = WrapperPatch(
    name="check-inference-output",
    why=(
        "With NaN coordinates stock AF3 keeps every confidence finite and dies later in "
        "copy_and_update_atoms; stop right after inference, naming the array."
    ),
    modules=RUN_ALPHAFOLD,
    function="ModelRunner.run_inference",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    wrapper=result_check.check_inference_wrapper,
)

CHECK_EXTRACTED = WrapperPatch(
    name="check-extracted-results",
    why="Check coordinates and confidences of every sample before AF3 writes them.",
    modules=RUN_ALPHAFOLD,
    function="ModelRunner.extract_inference_results",
    versions=("3.0.2", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    wrapper=result_check.check_extracted_wrapper,
)

CHECK_EXTRACTED_STRUCTURES = dataclasses.replace(
    CHECK_EXTRACTED, name="check-extracted-structures", function="ModelRunner.extract_structures", versions=("3.0.0", "3.0.1")
)


class _PlaceholderLoader(importlib.abc.Loader):
    """Runs the real module; if that raises, leaves a placeholder that explains why on use."""

    def __init__(self, real: importlib.abc.Loader, patch: ImportFallback, record: Callable[[str, Outcome], None]):
        self._real, self._patch, self._record = real, patch, record

    def create_module(self, spec):
        return self._real.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        try:
            self._real.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - any import failure is what we replace
            reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
            keep = {k: v for k, v in vars(module).items() if k in ("__name__", "__spec__", "__loader__", "__file__", "__package__")}
            vars(module).clear()
            vars(module).update(keep)
            message = f"{module.__name__} could not be imported here ({reason}). {self._patch.hint}"

            def __getattr__(name):
                raise RuntimeError(message)

            module.__getattr__ = __getattr__
            for name in [m for m in sys.modules if m.startswith(module.__name__ + ".")]:
                del sys.modules[name]
            outcome = Outcome(Status.APPLIED, f"real import failed ({reason}); placeholder in place", None, lambda: True)
            self._record(module.__name__, outcome)
        else:
            self._record(module.__name__, Outcome(Status.NOT_NEEDED, f"{module.__name__} imports fine here"))


class _FallbackFinder(importlib.abc.MetaPathFinder):
    def __init__(self, patch: ImportFallback, record):
        self.patch, self.record = patch, record

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.patch.modules:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        spec.loader = _PlaceholderLoader(spec.loader, self.patch, self.record)
        return spec


@dataclasses.dataclass(frozen=True)
class ImportFallback(Patch):
    """Let a module that cannot be imported here be imported as a placeholder.

    For GPU-only dependencies that AF3 imports at module level but only uses
    on the GPU path: the placeholder raises ``hint`` when actually used.
    """

    hint: str = ""
    _finders: list = dataclasses.field(default_factory=list, compare=False, repr=False)

    def arm(self, record) -> None:
        if not self._finders:
            finder = _FallbackFinder(self, record)
            self._finders.append(finder)
            sys.meta_path.insert(0, finder)

    def disarm(self) -> None:
        while self._finders:
            finder = self._finders.pop()
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)

    def _apply(self, module, af3_version):
        # The post-import hook reaches here only when the real module loaded
        # (a placeholder is recorded as applied and in place by its loader).
        return Outcome(Status.NOT_NEEDED, f"{module.__name__} imports fine here")


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

PROGRESS_SEED = WrapperPatch(
    name="progress-seed",
    why="A CPU seed runs minutes to hours inside one jitted call: one progress bar per seed.",
    modules=RUN_ALPHAFOLD,
    function="ModelRunner.run_inference",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    parameters=("featurised_example", "rng_key"),
    wrapper=progress.seed_wrapper,
)

PROGRESS_TRUNK = WrapperPatch(
    name="progress-recycles",
    why="Tick once per trunk recycle (the Evoformer is the recycling loop's body).",
    modules=("alphafold3.model.network.evoformer", "alphafold3.model.diffusion.model"),
    function="Evoformer.__call__",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    wrapper=progress.trunk_wrapper,
)

PROGRESS_DIFFUSION = WrapperPatch(
    name="progress-diffusion",
    why="Tick once per diffusion step, from the denoising step that sample() receives.",
    modules=DIFFUSION_HEAD,
    function="sample",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    parameters=("denoising_step", "batch", "key", "config"),
    wrapper=progress.sample_wrapper,
)

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
    wrapper=cpu_runtime.model_config_wrapper,
)

ATOM_SLOTS = WrapperPatch(
    name="atom-slots",
    why=(
        "AF3 pads the flat atom list of its atom transformers to 24 slots per token of the bucket; a protein "
        "has about 8 atoms per residue. Fewer padding slots, same results for the real atoms, less diffusion work."
    ),
    modules=("alphafold3.model.features",),
    function="AtomCrossAtt.compute_features",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    parameters=("all_token_atoms_layout", "queries_subset_size", "keys_subset_size", "padding_shapes"),
    wrapper=atom_slots.compute_features_wrapper,
)

DIFFUSION_BF16_PASS_SCOPE = WrapperPatch(
    name="diffusion-precision-scope",
    why=(
        "AF3's diffusion head leaves its float32 products at the default precision, which accelerators compute "
        "from bf16 (TPU) or TF32 (GPU) inputs and XLA:CPU in full float32; with --diffusion-precision bf16 the "
        "head's default-precision products run as one bf16 pass, as on a TPU."
    ),
    modules=DIFFUSION_HEAD,
    function="DiffusionHead.__call__",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.DIFFUSION_BF16,
    wrapper=diffusion_precision.diffusion_head_wrapper,
)

DIFFUSION_BF16_PASS_LINEAR = SourcePatch(
    name="diffusion-precision-linear",
    why=(
        "hm.Linear's product goes through af3-cpu's einsum, which is jnp.einsum itself except inside the "
        "diffusion head with --diffusion-precision bf16 (see diffusion-precision-scope)."
    ),
    modules=("alphafold3.model.components.haiku_modules",),
    function="Linear.__call__",
    rewrites=(
        Rewrite(
            "jnp.einsum(equation, inputs, weights, precision=self.precision)",
            "__import__('af3_cpu_patch.diffusion_precision', fromlist=['einsum'])"
            ".einsum(equation, inputs, weights, precision=self.precision)",
        ),
    ),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.DIFFUSION_BF16,
)

_GLU = "__import__('af3_cpu_patch.diffusion_precision', fromlist=['gated_linear_unit']).gated_linear_unit"

DIFFUSION_BF16_PASS_GLU = SourcePatch(
    name="diffusion-precision-glu",
    why=(
        "The diffusion transformer's transition computes its largest product through a gated-linear-unit op, "
        "not hm.Linear; it goes through af3-cpu's GLU, which is the op itself except inside the diffusion head "
        "with --diffusion-precision bf16 (see diffusion-precision-scope)."
    ),
    modules=DIFFUSION_TRANSFORMER,
    function="transition_block",
    rewrites=glu_call_rewrites("x", "jax.nn.swish", _GLU),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.DIFFUSION_BF16,
)

SHARED_NOISE_LEVEL = WrapperPatch(
    name="shared-noise-level",
    why=(
        "sample() vmaps the denoising step over the samples with each sample's noise level in the vmapped state, "
        "though all samples share one schedule; given the one shared level, the step computes its noise "
        "conditioning once instead of once per sample (a fifth of the diffusion transformer's products)."
    ),
    modules=DIFFUSION_HEAD,
    function="sample",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.SPEED,
    parameters=("denoising_step",),
    wrapper=shared_noise_level.sample_wrapper,
)

_MSA_ROWS_WHY = (
    "AF3 pads every MSA to 16384 rows and runs the trunk's MSA stack on 1024 of them; an MSA of fewer rows "
    "is cut to a row bucket (16, 64, 256, 1024) and the stack runs on those: padding rows are masked out of "
    "everything the stack passes on."
)

MSA_ROWS = WrapperPatch(
    name="msa-rows",
    why=_MSA_ROWS_WHY,
    modules=("alphafold3.model.features",),
    function="MSA.compute_features",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.MSA_ROWS,
    wrapper=msa_rows.compute_features_wrapper,
)

MSA_ROWS_EVOFORMER = SourcePatch(
    name=msa_rows.EVOFORMER_PATCH,
    why=_MSA_ROWS_WHY + " The Evoformer takes at most as many rows as the MSA has (msa-rows cuts only with this).",
    modules=("alphafold3.model.network.evoformer", "alphafold3.model.diffusion.model"),
    function="Evoformer._embed_process_msa",
    rewrites=(
        Rewrite(
            "featurization.truncate_msa_batch(msa_batch, self.config.num_msa)",
            "featurization.truncate_msa_batch(msa_batch, min(self.config.num_msa, msa_batch.rows.shape[0]))",
        ),
    ),
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.CHANGES,
    difference=differences.MSA_ROWS,
    requires_globals=(),  # the exact AST match is the check
)

CHEMICAL_COMPONENTS = ("alphafold3.constants.chemical_components",)
_LAZY_CCD_WHY = (
    "AF3 unpickles its whole chemical components dictionary in every run (about 6 s and 3.7 GB) to read a few "
    "dozen components; read them one at a time from an index built once in the user's cache."
)

LAZY_CCD = WrapperPatch(
    name="lazy-ccd",
    why=_LAZY_CCD_WHY,
    modules=CHEMICAL_COMPONENTS,
    function="_load_ccd_pickle_cached",
    versions=("3.0.2", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    parameters=("path",),
    wrapper=lazy_ccd.load_cached_wrapper,
)

LAZY_CCD_FRESH = SourcePatch(
    name="lazy-ccd-per-instance",
    why=_LAZY_CCD_WHY + " (v3.0.0/1 unpickle it again for every Ccd object.)",
    modules=CHEMICAL_COMPONENTS,
    function="Ccd.__init__",
    rewrites=(
        Rewrite(
            "pickle.loads(f.read())",
            "__import__('af3_cpu_patch.lazy_ccd', fromlist=['load_fresh']).load_fresh(f)",
        ),
    ),
    versions=("3.0.0", "3.0.1"),
    numerics=Numerics.IDENTICAL,
    requires_globals=(("pickle", "pickle"),),
)

PARAMS = ("alphafold3.model.params",)

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

KEEP_MODEL = WrapperPatch(
    name="keep-model",
    why=(
        "run_alphafold.main() builds a new ModelRunner per call; a batch worker calls it per task "
        "and keeps one runner, so weights load and the model compiles once per process."
    ),
    modules=RUN_ALPHAFOLD,
    function="ModelRunner",
    versions=("3.0.0", "3.0.4"),
    numerics=Numerics.IDENTICAL,
    wrapper=model_reuse.keep_model_wrapper,
)

DEFAULT = (JAX_TRITON_FALLBACK,)
CLI_ONLY = (
    CPU_DEVICE, CHECK_INFERENCE, CHECK_EXTRACTED, CHECK_EXTRACTED_STRUCTURES, PRECISION_POLICY, ATOM_SLOTS,
    LAZY_CCD, LAZY_CCD_FRESH, DIFFUSION_BF16_PASS_SCOPE, DIFFUSION_BF16_PASS_LINEAR, DIFFUSION_BF16_PASS_GLU,
    SHARED_NOISE_LEVEL, MSA_ROWS_EVOFORMER, MSA_ROWS, PARAMS_DEVICE_PUT, PARAMS_READ_IN_PLACE,
)
PROGRESS = (PROGRESS_SEED, PROGRESS_TRUNK, PROGRESS_DIFFUSION)
