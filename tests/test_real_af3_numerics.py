"""Every AF3 of the test bed: the stock ``sample()`` under jit.

v3.0.0-v3.0.3 give NaN coordinates on an FMA CPU; with the plugin every
version is finite, and patched output equals upstream v3.0.4's bit for bit.
"""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from tests import real_af3, testbed
from tests.helpers import run_python

# AF3's stock sample() under jit with a scaling denoiser, then (SAMPLES=both) the
# same with the plugin installed over the imported module and jit caches cleared.
# v3.0.0/v3.0.1 import jax_triton at module level, which fails on CPU-only jax:
# their "stock" run has the import placeholder alone, which changes no code.
REAL_SAMPLE = """
import importlib, json, os, sys, types
import af3_cpu_patch
from af3_cpu_patch.patches import jax_triton_placeholder
af3_cpu_patch.uninstall()
af3_cpu_patch.install(jax_triton_placeholder.PATCHES)
import haiku as hk, jax, jax.numpy as jnp, numpy as np
dh = importlib.import_module(os.environ["HEAD_MODULE"])
config = dh.SampleConfig(steps=200, num_samples=1)
mask = jnp.ones((32, 24))
batch = types.SimpleNamespace(predicted_structure_info=types.SimpleNamespace(atom_mask=mask))

def run(name):
    fn = hk.transform(lambda: dh.sample(lambda x, t: x * 0.9, batch, jax.random.PRNGKey(0), config))
    pos = np.asarray(jax.jit(fn.apply)({}, jax.random.PRNGKey(1))["atom_positions"])
    np.save(os.path.join(os.environ["OUT"], name + ".npy"), pos)
    return {"nan": int(np.isnan(pos).sum()), "size": int(pos.size)}

result = {}
if os.environ["SAMPLES"] in ("stock", "both"):
    result["stock"] = run("stock")
if os.environ["SAMPLES"] in ("patched", "both"):
    import warnings
    warnings.simplefilter("ignore")  # patched after import: the jit caches are cleared next
    af3_cpu_patch.install()
    jax.clear_caches()
    result["patched"] = run("patched")
result["report"] = {r.patch: str(r.status) for r in af3_cpu_patch.report()}
print(json.dumps(result))
"""

BEFORE_THE_FIX = ("3.0.0", "3.0.1", "3.0.2", "3.0.3")


def _samples(tmp_path, af3, samples, source=None, python=None):
    """``sample()`` of ``source``'s AF3 (default: ``af3``'s) under jit, in ``python`` (default: ``af3``'s)."""
    source = source or af3
    out = tmp_path / f"{source.name}-{samples}-{pathlib.Path(python or af3.python).parent.parent.name}"
    out.mkdir()
    result = run_python(REAL_SAMPLE, pythonpath=source.path, python=python or af3.python, timeout=900,
                        env={"HEAD_MODULE": real_af3.head_module(source.info), "SAMPLES": samples, "OUT": str(out)})
    for name in ("stock", "patched"):
        if name in result:
            result[name]["positions"] = np.load(out / f"{name}.npy")
    return result


@pytest.mark.parametrize("af3", testbed.VERSIONS, indirect=True)
def test_stock_sample_nan_before_v3_0_4_and_patched_finite(tmp_path, af3):
    result = _samples(tmp_path, af3, "both")
    stock, patched, report = result["stock"], result["patched"], result["report"]
    assert patched["nan"] == 0
    assert report["denoising-step-sqrt"] == ("applied" if af3.name in BEFORE_THE_FIX else "already fixed upstream")
    assert report["diffusion-scaling-sqrt"] == "applied"
    assert not {"source did not match", "target not found", "error"} & set(report.values())
    if af3.name not in BEFORE_THE_FIX:
        assert stock["nan"] == 0
        assert patched["positions"].tobytes() == stock["positions"].tobytes()  # the guards are bit-neutral
    elif stock["nan"] == 0:
        pytest.skip("this CPU/XLA build does not fuse the subtraction into an FMA: no NaN to fix here")
    else:
        assert stock["nan"] == stock["size"]


# v3.0.0/v3.0.1's sources need jax-triton, which v3.0.4's environment does not have.
@pytest.mark.parametrize("af3", ["3.0.2", "3.0.3"], indirect=True)
def test_patched_equals_upstream_v3_0_4_bit_for_bit(tmp_path, af3):
    """The patched sampler of an older release and v3.0.4's own fix, in one interpreter (v3.0.4's jax)."""
    upstream_af3 = real_af3.get("3.0.4")
    patched = _samples(tmp_path, af3, "patched", python=upstream_af3.python)["patched"]
    upstream = _samples(tmp_path, upstream_af3, "stock")["stock"]
    assert upstream["nan"] == 0 and patched["nan"] == 0
    assert patched["positions"].tobytes() == upstream["positions"].tobytes()


@pytest.mark.parametrize("af3", ["3.0.2", "3.0.4"], indirect=True)  # the versions with a separate noise embedding
def test_noise_embedding_guard_is_bit_neutral(af3):
    result = run_python(
        """
        import json
        import jax, jax.numpy as jnp, numpy as np
        from alphafold3.model.network import noise_level_embeddings as nle
        levels = 16.0 * (160.0 ** (1 / 7) + jnp.linspace(0, 1, 201) * (0.0004 ** (1 / 7) - 160.0 ** (1 / 7))) ** 7
        f = lambda: np.asarray(jax.jit(nle.noise_embeddings)(levels / 16.0))
        stock = f()
        import af3_cpu_patch
        jax.clear_caches()
        patched = f()
        print(json.dumps({"same": stock.tobytes() == patched.tobytes(),
                          "status": {r.patch: str(r.status) for r in af3_cpu_patch.report()}["noise-embedding-log"]}))
        """,
        pythonpath=af3.path, python=af3.python,
    )
    assert result["status"] == "applied"
    assert result["same"]
