"""Write randomly initialised AF3 weights of the real shapes -- NOT FOR PREDICTIONS.

AF3's weights are gated.  The compute of a forward pass does not depend on
weight values, so random weights let a user check an install end to end, and
let tests and benchmarks run the full model.  The shapes come from AF3's own
model initialised on a tiny input, and the file is written with AF3's own
params record encoder, so ``run_alphafold.py`` loads it like the real one.
"""

from __future__ import annotations

import pathlib

import numpy as np

import af3_cpu_patch
from af3_cpu_patch import runtime
from af3_cpu_patch.af3 import checkout as af3_checkout
from af3_cpu_patch.errors import UsageProblem

IDENTIFIER = b"af3-cpu-patch random weights: NOT FOR PREDICTIONS"
FILENAME = "af3.bin"
NOTICE = "RANDOM_WEIGHTS_NOT_FOR_PREDICTIONS.txt"

TINY_INPUT = {
    "name": "random_weights_shapes",
    "modelSeeds": [1],
    "sequences": [
        {"protein": {"id": "A", "sequence": "GSHMKLV", "unpairedMsa": "", "pairedMsa": "", "templates": []}}
    ],
    "dialect": "alphafold3",
    "version": 1,
}


def init_params(run_alphafold, seed: int):
    """AF3's own model, initialised by haiku on a tiny featurised input."""
    import json

    import haiku as hk
    import jax
    from alphafold3.common import folding_input
    from alphafold3.constants import chemical_components
    from alphafold3.data import featurisation

    fold_input = folding_input.Input.from_json(json.dumps(TINY_INPUT))
    batch = featurisation.featurise_input(
        fold_input=fold_input, buckets=None, ccd=chemical_components.Ccd(), verbose=False
    )[0]
    model_module = getattr(run_alphafold, "model", None)
    if model_module is None or not hasattr(model_module, "Model"):
        raise UsageProblem("random-weights supports AF3 v3.0.1 and later (this run_alphafold.py has no model.Model)")
    config = run_alphafold.make_model_config(flash_attention_implementation="xla")
    forward = hk.transform(lambda b: model_module.Model(config)(b))
    from alphafold3.model.components import utils

    batch = jax.tree_util.tree_map(np.asarray, utils.remove_invalidly_typed_feats(batch))  # as ModelRunner.run_inference
    return jax.jit(forward.init)(jax.random.PRNGKey(seed), batch)


# Scale of the values given to zero-initialised weights (times 1/sqrt(fan-in)).
FILL_SCALE = 0.1


def fill_zero_init(haiku_params, seed: int):
    """Give every all-zero weight matrix random values (normal, ``FILL_SCALE / sqrt(fan-in)``).

    Why: AF3 initialises its output projections and adaptive gates to zero, so
    with AF3's own initialisation most of the diffusion transformer adds
    exactly nothing to its input, and a change of how its products are
    computed cannot show in the output.  Filled weights make every layer count,
    for comparisons of precision; speed does not depend on the values.
    """
    rng = np.random.default_rng(seed)
    filled = {}
    for scope, arrays in haiku_params.items():
        filled[scope] = {}
        for name, value in arrays.items():
            value = np.asarray(value)
            if name == "weights" and value.ndim >= 2 and not value.any():
                fan_in = value.shape[-2]
                value = (rng.standard_normal(value.shape) * (FILL_SCALE / np.sqrt(fan_in))).astype(value.dtype)
            filled[scope][name] = value
    return filled


def write(out_dir: pathlib.Path, *, seed: int = 0, af3_dir: str | None = None, fill_zero: bool = False) -> pathlib.Path:
    checkout = af3_checkout.find_checkout(af3_dir)
    out_dir = out_dir.expanduser().resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UsageProblem(f"{out_dir} is not empty: give a new or empty directory for the random weights")
    runtime.prepare()

    af3_cpu_patch.install()
    run_alphafold = runtime.import_run_alphafold(checkout.root)
    runtime.parse_flags([str(checkout.run_alphafold)])
    from alphafold3.model import params as af3_params

    with runtime.quiet_known_noise():
        haiku_params = init_params(run_alphafold, seed)
    if fill_zero:
        haiku_params = fill_zero_init(haiku_params, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = out_dir / (FILENAME + ".partial")
    with open(partial, "wb") as stream:
        for scope in sorted(haiku_params):
            for name in sorted(haiku_params[scope]):
                stream.write(af3_params.encode_record(scope, name, np.asarray(haiku_params[scope][name])))
        stream.write(af3_params.encode_record("__meta__", "__identifier__", np.frombuffer(IDENTIFIER, dtype=np.uint8)))
    partial.rename(out_dir / FILENAME)
    (out_dir / NOTICE).write_text(
        "These are randomly initialised AlphaFold 3 weights with the real shapes, written by\n"
        f"af3-cpu random-weights (seed {seed}{', zero-initialised layers filled' if fill_zero else ''}) for checking\n"
        "an install, for benchmarks and for comparisons of precision.\n"
        "Structures predicted with them are meaningless. NOT FOR PREDICTIONS.\n"
    )
    return out_dir / FILENAME
