"""Real DeepMind AF3 for the integration tests: the test bed's versions, and inputs for them.

Every version comes from :mod:`tests.testbed`, which unpacks the upstream
archives in ``../shared/af3`` into a cache with one Python 3.12 environment
per dependency set; each test runs AF3 in a subprocess of that version's
interpreter.  Without ``../shared/af3`` the tests skip, saying so.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib

import pytest

from af3_cpu_patch.af3 import install as af3_install
from tests import testbed


PROTEIN_SEQUENCE = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIE"
PROTEIN = {  # a small protein with empty MSAs: no data pipeline needed
    "name": "small_protein",
    "modelSeeds": [1],
    "dialect": "alphafold3",
    "version": 1,
    "sequences": [
        {"protein": {"id": "A", "sequence": PROTEIN_SEQUENCE, "unpairedMsa": "", "pairedMsa": "", "templates": []}}
    ],
}


def protein_with_msa(rows: int, name: str = "small_protein_msa") -> dict:
    """:data:`PROTEIN` with an unpaired MSA of ``rows`` sequences: the query, then copies with a few
    deterministic substitutions (no data pipeline needed)."""
    fold_input = copy.deepcopy(PROTEIN)
    fold_input["name"] = name
    alphabet = "ACDEFGHIKLMNPQRSTVWY"
    lines = [">query", PROTEIN_SEQUENCE]
    for i in range(1, rows):
        mutated = [alphabet[(alphabet.index(c) + i) % 20] if (j * 7 + i) % 5 == 0 else c for j, c in enumerate(PROTEIN_SEQUENCE)]
        lines += [f">hit{i}", "".join(mutated)]
    fold_input["sequences"][0]["protein"]["unpairedMsa"] = "\n".join(lines) + "\n"
    return fold_input


def protein_of_length(residues: int, name: str = "small_protein") -> dict:
    """:data:`PROTEIN` cut to its first ``residues`` residues."""
    fold_input = copy.deepcopy(PROTEIN)
    fold_input["name"] = name
    fold_input["sequences"][0]["protein"]["sequence"] = PROTEIN_SEQUENCE[:residues]
    return fold_input


CAPTURE = pathlib.Path(__file__).resolve().parent / "capture"
# Diffusion steps of the CLI runs on real AF3 (AF3: 200), for claims that hold at
# any step count (CI time).  The NaN of v3.0.0-v3.0.3 comes from the schedule's
# last steps (noise level below gamma_min), which 20 steps have too.
TEST_STEPS = 20
TEST_MODEL = {"heads.diffusion.eval.steps": TEST_STEPS}


@dataclasses.dataclass(frozen=True)
class AF3:
    """One real AF3 of the test bed: its interpreter (with that version's dependencies) and its source."""

    name: str  # "3.0.4", "main", ...
    python: str
    root: pathlib.Path  # the checkout: run_alphafold.py, src/alphafold3
    info: af3_install.AF3Install

    @property
    def path(self) -> list[pathlib.Path]:
        """PYTHONPATH entries that make this AF3 importable."""
        return [self.root / "src"]

    def env(self, **extra) -> dict:
        """Environment for a subprocess of this AF3 with this checkout's plugin (and no user settings).

        With the test hooks of ``tests/capture`` on the path, and AF3's model
        config at :data:`TEST_STEPS` diffusion steps unless ``extra`` sets
        ``AF3_CPU_TEST_MODEL`` itself (to ``""`` for AF3's own 200).
        """
        env = subprocess_env([CAPTURE, *self.path])
        env["AF3_CPU_TEST_MODEL"] = json.dumps(TEST_MODEL)
        return {**env, **{k: str(v) for k, v in extra.items()}}

    def cli(self, *args) -> list[str]:
        """``af3-cpu ARGS`` in this AF3's interpreter."""
        return [self.python, "-m", "af3_cpu_patch", *map(str, args)]


def skip_without_testbed() -> None:
    reason = testbed.skip_reason()
    if reason:
        pytest.skip(reason)


def get(version: str, *, data: bool = True) -> AF3:
    """The test bed's AF3 ``version``, built if missing; skip only where ``../shared/af3`` is absent.

    ``data``: the CCD pickles must be there (every test that imports AF3; a
    test that only reads source files passes False).
    """
    skip_without_testbed()
    tree = testbed.tree(version)
    if tree is None or (data and not tree.data_built):
        testbed.build((version,), weights=False)
        tree = testbed.tree(version)
    assert tree is not None, f"the test bed could not build AF3 {version}"
    return AF3(version, str(tree.python), tree.root, af3_install.inspect_package(tree.src / "alphafold3"))


def weights(filled: bool = False) -> pathlib.Path:
    """Random weights of the real shapes (``filled``: zero-initialised layers filled), from the test bed."""
    skip_without_testbed()
    path = testbed.model_dir(filled=filled)
    if path is None:
        testbed.build(("3.0.4",), weights=True)
        path = testbed.model_dir(filled=filled)
    assert path is not None, "the test bed could not write random weights"
    return path


def compilation_cache() -> pathlib.Path:
    """A JAX compilation cache kept with the test bed: a run whose programs were compiled before loads them.

    For tests whose claims do not concern compilation (a cached program is the
    compiled one); it keeps CI's real-AF3 runs short once the cache is warm.
    """
    return testbed.cache_root() / "jax-cache"


def subprocess_env(path: list[pathlib.Path]) -> dict:
    """Environment for a CLI subprocess that sees this AF3 and this checkout's plugin."""
    from tests.helpers import ROOT

    env = {k: v for k, v in os.environ.items() if k not in ("AF3_CPU_PATCH", "AF3_DIR", "VIRTUAL_ENV")}
    env["PYTHONPATH"] = os.pathsep.join([str(p) for p in path] + [str(ROOT)])
    env["JAX_PLATFORMS"] = "cpu"
    return env


def head_module(info: af3_install.AF3Install) -> str:
    if (info.package_dir / "model/network/diffusion_head.py").is_file():
        return "alphafold3.model.network.diffusion_head"
    return "alphafold3.model.diffusion.diffusion_head"


# The CLI's diffusion speed patches that are not a precision setting: with them
# and f32 products the arithmetic is AF3's, computed once instead of per sample
# and in other loop shapes, so float32 rounding may differ; without them a
# patched f32 run is stock's bit for bit.
SPEED_PATCHES = ("shared-noise-level", "diffusion-steps-rolled", "diffusion-layers-unrolled")
# Coordinates with them vs stock, f32 products (Angstrom).  Measured on v3.0.4
# (AMD EPYC, AVX512-BF16), 31 residues, 200 steps, filled random weights:
# RMSD 0.00001.
SPEED_PATCHES_TOLERANCE_A = 0.001


# One AF3 forward pass through the stock ModelRunner of run_alphafold.py, saved
# to npz. VARIANT: stock (no plugin), patched (the CLI's patches) or progress
# (plus the progress ticks); BUCKET, PRECISION, DIFFUSION_PRECISION (default
# f32; also "tf32", the GPU emulation) and ATTENTION (default: AF3's "xla") as
# af3-cpu's options; BF16_PRODUCTS=1: the trunk's bf16 products with float32
# results (the CLI's setting on CPUs with native bf16; default off, stock's
# products); WITHOUT: patch names to leave out; STEPS:
# diffusion steps (default AF3's 200); RECYCLES: default 1.
FORWARD = """
import json, os, pathlib, sys
import numpy as np
variant = os.environ["VARIANT"]
if variant != "stock":
    import af3_cpu_patch
    from af3_cpu_patch import runtime, settings
    from af3_cpu_patch.patches import CLI_PATCHES, PROGRESS_PATCHES
    settings.use(settings.Settings(
        precision=os.environ.get("PRECISION", "bf16"),
        diffusion_precision=os.environ.get("DIFFUSION_PRECISION", "f32"),
        trunk_products=os.environ.get("BF16_PRODUCTS") == "1",
    ))
    without = set(os.environ.get("WITHOUT", "").split(","))
    af3_cpu_patch.install(tuple(p for p in CLI_PATCHES + (PROGRESS_PATCHES if variant == "progress" else ())
                                if p.name not in without))
sys.path.insert(0, os.environ["AF3_ROOT"])
import run_alphafold as ra
if variant != "stock":
    try:
        attention = settings.resolve_attention(os.environ.get("ATTENTION", "xla"), runtime.attention_choices())
        settings.use(__import__("dataclasses").replace(settings.current(), attention=attention))
    except runtime.UsageProblem as exc:
        print(json.dumps({"error": f"UsageProblem: {exc}"}))
        raise SystemExit(0)
from absl import flags
flags.FLAGS(["run_alphafold.py"])
import jax
from alphafold3.common import folding_input
from alphafold3.constants import chemical_components
from alphafold3.data import featurisation
fold_input = folding_input.Input.from_json(open(os.environ["INPUT"]).read())
example = featurisation.featurise_input(
    fold_input=fold_input, buckets=[int(os.environ.get("BUCKET", "32"))], ccd=chemical_components.Ccd(), verbose=False)[0]
config = ra.make_model_config(flash_attention_implementation="xla", num_diffusion_samples=1,
                              num_recycles=int(os.environ.get("RECYCLES", "1")),
                              return_embeddings=os.environ.get("EMBEDDINGS") == "1")
if "STEPS" in os.environ:
    config.heads.diffusion.eval.steps = int(os.environ["STEPS"])
runner = ra.ModelRunner(config=config, device=jax.devices("cpu")[0], model_dir=pathlib.Path(os.environ["MODEL_DIR"]))
try:
    result = runner.run_inference(example, jax.random.PRNGKey(1))
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    raise SystemExit(0)
arrays = {"positions": result["diffusion_samples"]["atom_positions"], "pae": result["full_pae"],
          "plddt": result["predicted_lddt"], "msa_rows": np.array(example["msa"].shape[0])}
for key in ("single_embeddings", "pair_embeddings"):
    if key in result:
        arrays[key] = result[key]
np.savez(os.environ["OUT"], **arrays)
report = {r.patch: str(r.status) for r in sys.modules["af3_cpu_patch"].report()} if variant != "stock" else {}
print(json.dumps({"error": None, "report": report}))
"""


def forward(af3, model_dir, input_json, out: pathlib.Path, variant: str, with_report: bool = False, **settings):
    """Run :data:`FORWARD`; (error or None, dict of arrays or None), plus the patches' statuses if ``with_report``."""
    import numpy as np

    from tests.helpers import run_python

    env = {"VARIANT": variant, "AF3_ROOT": str(af3.root), "INPUT": str(input_json), "MODEL_DIR": str(model_dir), "OUT": str(out),
           "JAX_COMPILATION_CACHE_DIR": str(compilation_cache() / "forward")}
    env.update({k.upper(): str(v) for k, v in settings.items()})
    result = run_python(FORWARD, pythonpath=af3.path, python=af3.python, timeout=3600, env=env)
    arrays = dict(np.load(out)) if result["error"] is None else None
    return (result["error"], arrays, result.get("report")) if with_report else (result["error"], arrays)
