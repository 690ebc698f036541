"""Against a real DeepMind AF3 (skipped without one): the stock ``sample()`` under jit.

v3.0.0-v3.0.3 give NaN coordinates on an FMA CPU; with the plugin every
version is finite, and patched output equals upstream v3.0.4's bit for bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests import real_af3
from tests.helpers import run_python, run_sample

REAL_SAMPLE = """
import importlib, json, os, sys, types
if os.environ["WITH_PLUGIN"] == "1":
    import af3_cpu_patch
import haiku as hk, jax, jax.numpy as jnp, numpy as np
dh = importlib.import_module(os.environ["HEAD_MODULE"])
config = dh.SampleConfig(steps=200, num_samples=5)
mask = jnp.ones((32, 24))
batch = types.SimpleNamespace(predicted_structure_info=types.SimpleNamespace(atom_mask=mask))
fn = hk.transform(lambda: dh.sample(lambda x, t: x * 0.9, batch, jax.random.PRNGKey(0), config))
pos = np.asarray(jax.jit(fn.apply)({}, jax.random.PRNGKey(1))["atom_positions"])
np.save(os.environ["OUT"], pos)
report = {}
if "af3_cpu_patch" in sys.modules:
    report = {r.patch: str(r.status) for r in af3_cpu_patch.report()}
print(json.dumps({"nan": int(np.isnan(pos).sum()), "size": int(pos.size), "report": report}))
"""


@pytest.fixture(scope="module")
def af3_env():
    return real_af3.find_af3()


def _sample(tmp_path, af3_env, plugin, tag, pythonpath=None):
    path, info = af3_env
    return run_sample(
        tmp_path, plugin=plugin, pythonpath=pythonpath or path, tag=tag, snippet=REAL_SAMPLE,
        env={"HEAD_MODULE": real_af3.head_module(info)},
    )


def test_stock_sample_nan_only_before_v3_0_4(tmp_path, af3_env):
    _, info = af3_env
    stock = _sample(tmp_path, af3_env, plugin=False, tag="stock")
    if info.version in ("3.0.0", "3.0.1", "3.0.2", "3.0.3"):
        if stock["nan"] == 0:
            pytest.skip("this CPU/XLA build does not fuse the subtraction into an FMA: no NaN to fix here")
        assert stock["nan"] == stock["size"]
    else:
        assert stock["nan"] == 0


def test_patched_sample_is_finite_and_reports(tmp_path, af3_env):
    _, info = af3_env
    patched = _sample(tmp_path, af3_env, plugin=True, tag="patched")
    assert patched["nan"] == 0
    report = patched["report"]
    assert report["denoising-step-sqrt"] == ("already fixed upstream" if info.version == "3.0.4" else "applied")
    assert report["diffusion-scaling-sqrt"] == "applied"
    assert "source did not match" not in report.values()
    assert "target not found" not in report.values()


def test_patched_equals_upstream_v3_0_4_bit_for_bit(tmp_path, af3_env):
    reference = real_af3.reference_source()
    if reference is None:
        pytest.skip("set AF3_REFERENCE_SOURCE to a v3.0.4 checkout to compare with upstream's fix")
    patched = _sample(tmp_path, af3_env, plugin=True, tag="patched")
    upstream = _sample(tmp_path, af3_env, plugin=False, tag="upstream", pythonpath=[reference])
    assert upstream["nan"] == 0
    assert np.array_equal(patched["positions"], upstream["positions"])
    assert patched["positions"].tobytes() == upstream["positions"].tobytes()


def test_noise_embedding_guard_is_bit_neutral(af3_env):
    path, info = af3_env
    if not (info.package_dir / "model/network/noise_level_embeddings.py").is_file():
        pytest.skip(f"AF3 {info.version} has the noise embedding inline in the head")
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
        pythonpath=path,
    )
    assert result["status"] == "applied"
    assert result["same"]
