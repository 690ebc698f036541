"""The diffusion-attention layout patches: applied on import, and bit-identical (real JAX, jit, vmap).

Shapes are AF3's at 256 tokens: 5 samples x 16 heads x 256 tokens x 48 channels
for the token self-attention, 5 samples x 64 subsets x (32 query, 128 key)
atoms x 4 heads x 32 channels for the atom cross-attention.  The stock and the
patched code run in separate fresh interpreters (stock: no plugin).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from af3_cpu_patch.patches import attention_layout
from tests.helpers import STANDIN, run_python

PATCH_NAMES = {p.function: p.name for p in attention_layout.PATCHES}

LAYOUT = """
import json, os, sys
if os.environ.get("WITH_PLUGIN") == "1":
    import af3_cpu_patch
if os.environ.get("WITH_PLUGIN") == "cli":  # af3-cpu's set with the bf16 pass
    from af3_cpu_patch import settings
    settings.use(settings.Settings(diffusion_precision="bf16"))
    import af3_cpu_patch
    from af3_cpu_patch.patches import CLI_PATCHES
    af3_cpu_patch.uninstall()
    af3_cpu_patch.install(CLI_PATCHES)
import jax, jax.numpy as jnp, numpy as np
from alphafold3.model.network import diffusion_transformer as dt

function = getattr(dt, os.environ["FUNCTION"])
queries, keys, heads, channels, lead = json.loads(os.environ["SHAPE"])
kq, kk, kv, kb = jax.random.split(jax.random.PRNGKey(7), 4)
q = jax.random.normal(kq, (*lead, queries, heads, channels))
k = jax.random.normal(kk, (*lead, keys, heads, channels))
v = jax.random.normal(kv, (*lead, keys, heads, channels))
bias = jax.random.normal(kb, (heads, queries, keys))  # shared by the samples, like AF3's pair logits
per_sample = jax.vmap(lambda q, k, v: function(q, k, v, bias))
out = np.asarray(jax.jit(per_sample)(q, k, v))
np.save(os.environ["OUT"], out)
report = {r.patch: str(r.status) for r in af3_cpu_patch.report()} if "af3_cpu_patch" in sys.modules else {}
print(json.dumps({"report": report}))
"""

SHAPES = {
    "self_attention": (256, 256, 16, 48, [5]),
    "cross_attention": (32, 128, 4, 32, [5, 64]),
}


def _run(tmp_path, function, plugin):
    out = tmp_path / f"{function}-{plugin}.npy"
    env = {"WITH_PLUGIN": {False: "0", True: "1"}.get(plugin, plugin), "FUNCTION": function, "SHAPE": json.dumps(SHAPES[function]),
           "OUT": str(out)}
    result = run_python(LAYOUT, pythonpath=[STANDIN], env=env)
    return result["report"], np.load(out)


@pytest.mark.parametrize("function", sorted(SHAPES))
def test_layout_patch_is_applied_and_bit_identical(tmp_path, function):
    _, stock = _run(tmp_path, function, plugin=False)
    report, patched = _run(tmp_path, function, plugin=True)
    expected = "not needed" if attention_layout.not_bit_identical_here() else "applied"
    assert report[PATCH_NAMES[function]] == expected
    assert np.isfinite(stock).all()
    assert patched.shape == stock.shape
    assert np.array_equal(patched, stock), f"max difference {np.abs(patched - stock).max()}"


@pytest.mark.parametrize("function", sorted(SHAPES))
def test_cli_with_the_bf16_pass_rewrites_logits_and_weighted_sum_together(tmp_path, function):
    # Two patches rewrite one function; both must be in it, on any CPU.
    _, stock = _run(tmp_path, function, plugin=False)
    report, patched = _run(tmp_path, function, plugin="cli")
    logits_patch = next(p.name for p in attention_layout.LOGITS_PATCHES if p.function == function)
    assert report[PATCH_NAMES[function]] == "applied"
    assert report[logits_patch] == "applied"
    # The same products summed in XLA:CPU's batched kernel: equal up to float32 rounding.
    assert np.abs(patched - stock).max() < 1e-5 * np.abs(stock).max()
