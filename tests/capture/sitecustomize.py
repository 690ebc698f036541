"""Test-only hooks for real-AF3 runs in a subprocess (this folder goes first on its ``PYTHONPATH``).

- ``AF3_CPU_CAPTURE=DIR``: save the raw arrays of every inference to DIR, so a
  test can compare a stock ``run_alphafold.py`` run with an ``af3-cpu predict``
  run bit for bit, not only as rounded in AF3's output files.
- ``AF3_CPU_TEST_MODEL='{"heads.diffusion.eval.steps": 20}'``: these fields
  of AF3's model config set after ``make_model_config`` (fewer diffusion steps
  for tests whose claim holds at any step count); stock and patched runs of
  one comparison get the same.

Both act when ``run_alphafold`` is imported (as a module: the tests run the
stock script's ``__main__`` block through ``import run_alphafold``), and
neither changes how AF3 computes.
"""

import os

import wrapt


def _capture(wrapped, instance, args, kwargs):
    import numpy as np

    result = wrapped(*args, **kwargs)
    example = kwargs["featurised_example"] if "featurised_example" in kwargs else args[0]
    folder = os.environ["AF3_CPU_CAPTURE"]
    os.makedirs(folder, exist_ok=True)
    np.savez(
        os.path.join(folder, f"inference-{len(os.listdir(folder))}.npz"),
        positions=np.asarray(result["diffusion_samples"]["atom_positions"]),
        plddt=np.asarray(result["predicted_lddt"]),
        pae=np.asarray(result["full_pae"]),
        atom_mask=np.asarray(example["pred_dense_atom_mask"]).astype(bool),  # the real atoms
    )
    return result


def _model_config(wrapped, instance, args, kwargs):
    import json

    config = wrapped(*args, **kwargs)
    for path, value in json.loads(os.environ["AF3_CPU_TEST_MODEL"]).items():
        *parents, field = path.split(".")
        owner = config
        for parent in parents:
            owner = getattr(owner, parent)
        setattr(owner, field, value)
    return config


@wrapt.when_imported("run_alphafold")
def _hook(module):
    if os.environ.get("AF3_CPU_CAPTURE"):
        wrapt.wrap_function_wrapper(module, "ModelRunner.run_inference", _capture)
    if os.environ.get("AF3_CPU_TEST_MODEL"):
        wrapt.wrap_function_wrapper(module, "make_model_config", _model_config)
