"""``diffusion-steps-rolled`` on the stand-in sampler, together with the NaN guard in the same function (real JAX, CPU)."""

from __future__ import annotations

import pytest

from tests.helpers import STANDIN, run_python

SNIPPET = """
import json, os, re
import af3_cpu_patch
from af3_cpu_patch.patches import ALL_PATCHES, CLI_PATCHES
af3_cpu_patch.uninstall()
af3_cpu_patch.install(CLI_PATCHES if os.environ["PATCHES"] == "cli" else ALL_PATCHES)
import jax, jax.numpy as jnp, numpy as np
from alphafold3.model.network import diffusion_head as dh

config = dh.SampleConfig(steps=200)
mask = jnp.ones((16, 4))
run = lambda key: dh.sample(lambda x, t: x * 0.9, mask, key, config)["atom_positions"]
key = jax.random.PRNGKey(1)
pos = np.asarray(jax.jit(run)(key))
print(json.dumps({
    "unroll": sorted(set(re.findall(r"unroll=([0-9]+)", str(jax.make_jaxpr(run)(key))))),
    "finite": bool(np.isfinite(pos).all()),
    "report": {r.patch: str(r.status) for r in af3_cpu_patch.report()},
    "bytes": pos.tobytes().hex(),
}))
"""


@pytest.fixture(scope="module")
def results():
    return {which: run_python(SNIPPET, pythonpath=[STANDIN], env={"PATCHES": which}) for which in ("import", "cli")}


def test_cli_rolls_the_step_loop_and_keeps_the_nan_guard_of_the_same_function(results):
    cli = results["cli"]
    assert cli["report"]["diffusion-steps-rolled"] == "applied"
    assert cli["report"]["denoising-step-sqrt"] == "applied"  # both rewrite sample(): neither drops the other
    assert cli["unroll"] == ["1"]
    assert cli["finite"]


def test_import_users_keep_the_stock_loop(results):
    assert results["import"]["unroll"] == ["4"]
    assert "diffusion-steps-rolled" not in results["import"]["report"]


def test_rolled_loop_gives_the_same_positions_bit_for_bit(results):
    assert results["import"]["finite"]
    assert results["cli"]["bytes"] == results["import"]["bytes"]
