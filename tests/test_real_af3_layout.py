"""The CPU row blocks, the diffusion-attention layout and the atom-slots patches on a real AF3: bit-identical.

AF3's own modules with random weights, f32, at 128 and 256 tokens (where the
CPU row blocks differ from AF3's): a pairformer block (triangle attention with
AF3's "xla" and, where offered, tokamax's "xla_chunked" attention; pair
transition) with AF3's row blocks vs the CPU ones, and the diffusion
transformer's self- and cross-attention without vs with the plugin.  Each
variant runs in its own interpreter.  And a whole forward pass (protein with
ATP, 1 recycle, 20 diffusion steps) with the flat atom list padded to the
input's atoms vs AF3's 24 slots per token.  Skipped without a real AF3.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from af3_cpu_patch.patches import attention_layout
from tests import real_af3
from tests.helpers import run_python

PATCH_NAMES = {p.function: p.name for p in attention_layout.PATCHES}

MODULE = """
import json, os, sys
if os.environ.get("WITH_PLUGIN") == "1":
    import af3_cpu_patch
import jax, jax.numpy as jnp, numpy as np, haiku as hk
from alphafold3.model import model_config
try:
    from alphafold3.model.network import diffusion_transformer as dt, modules
except ImportError:  # v3.0.0
    from alphafold3.model.diffusion import diffusion_transformer as dt, modules
from af3_cpu_patch.patches import precision_policy

what, n = os.environ["WHAT"], int(os.environ["TOKENS"])
gc = model_config.GlobalConfig()
gc.bfloat16 = "none"
gc.flash_attention_implementation = os.environ.get("ATTENTION", "xla")
if gc.flash_attention_implementation == "xla_chunked" and not hasattr(modules, "tokamax"):
    print(json.dumps({"skip": "this AF3 has no tokamax attention (v3.0.2 or later)"}))
    raise SystemExit(0)
if os.environ.get("ROW_BLOCKS") == "cpu":
    precision_policy.use_cpu_row_blocks(gc)
k = jax.random.split(jax.random.PRNGKey(3), 6)
if what == "pairformer":
    seq_mask = (jnp.arange(n) < n - 5).astype(jnp.float32)
    args = (jax.random.normal(k[0], (n, n, 128)), seq_mask[:, None] * seq_mask[None])
    config = modules.PairFormerIteration.Config(num_layer=1)
    forward = lambda act, mask: modules.PairFormerIteration(config, gc, name="p")(act, mask)
elif what == "self_attention":  # 5 samples, like AF3's vmapped diffusion head
    mask = jnp.ones((n,))
    args = (jax.random.normal(k[0], (5, n, 768)), jax.random.normal(k[1], (5, n, 384)), jax.random.normal(k[2], (16, n, n)))
    config = dt.SelfAttentionConfig()
    forward = lambda x, cond, logits: hk.vmap(
        lambda x, cond: dt.self_attention(x, mask, logits, config, gc, cond, name="a"), split_rng=False)(x, cond)
else:  # cross_attention: atom subsets of 32 queries and 128 keys
    subsets = n // 4
    mask_q, mask_k = jnp.ones((subsets, 32)), jnp.ones((subsets, 128))
    args = (jax.random.normal(k[0], (5, subsets, 32, 128)), jax.random.normal(k[1], (5, subsets, 128, 128)),
            jax.random.normal(k[2], (subsets, 4, 32, 128)))
    config = dt.CrossAttentionConfig()
    forward = lambda xq, xk, logits: hk.vmap(
        lambda xq, xk: dt.cross_attention(xq, xk, mask_q, mask_k, config, gc, logits, name="c"), split_rng=False)(xq, xk)
fn = hk.transform(forward)
params = fn.init(k[4], *args)
params = jax.tree.map(lambda p: 0.1 * jax.random.normal(k[5], p.shape, p.dtype), params)  # init zeroes some layers
np.save(os.environ["OUT"], np.asarray(jax.jit(fn.apply)(params, None, *args)))
report = {r.patch: str(r.status) for r in sys.modules["af3_cpu_patch"].report()} if "af3_cpu_patch" in sys.modules else {}
print(json.dumps({"report": report}))
"""


def _run(af3, tmp_path, tag, **settings):
    out = tmp_path / f"{tag}.npy"
    env = {k.upper(): str(v) for k, v in settings.items()} | {"OUT": str(out)}
    result = run_python(MODULE, pythonpath=af3.path, python=af3.python, env=env, timeout=1200)
    if "skip" in result:
        pytest.skip(result["skip"])
    return result["report"], np.load(out)


@pytest.mark.parametrize("tokens", [128, 256])
@pytest.mark.parametrize("attention", ["xla", "xla_chunked"])
def test_cpu_row_blocks_are_bit_identical(af3, tmp_path, tokens, attention):
    settings = {"what": "pairformer", "tokens": tokens, "attention": attention}
    _, stock = _run(af3, tmp_path, "af3-blocks", row_blocks="af3", **settings)
    _, cpu = _run(af3, tmp_path, "cpu-blocks", row_blocks="cpu", **settings)
    assert np.isfinite(stock).all()
    assert np.array_equal(cpu, stock), f"max difference {np.abs(cpu - stock).max()}"


@pytest.mark.parametrize("function", ["self_attention", "cross_attention"])
def test_diffusion_attention_layout_is_bit_identical(af3, tmp_path, function):
    _, stock = _run(af3, tmp_path, "stock", what=function, tokens=256, with_plugin=0)
    report, patched = _run(af3, tmp_path, "patched", what=function, tokens=256, with_plugin=1)
    expected = "not needed" if attention_layout.not_bit_identical_here() else "applied"
    assert report[PATCH_NAMES[function]] == expected, json.dumps(report)
    assert np.isfinite(stock).all()
    assert np.array_equal(patched, stock), f"max difference {np.abs(patched - stock).max()}"


def test_atom_slots_are_bit_identical(af3, model_dir, tmp_path):
    # 9 residues and ATP's 31 atom tokens: bucket 40.  A few diffusion steps show any difference the slots make
    # (every step runs the atom transformers), as the trunk's atom encoder does.
    fold_input = real_af3.protein_of_length(9, name="protein_atp")
    fold_input["sequences"].append({"ligand": {"id": "B", "ccdCodes": ["ATP"]}})
    path = tmp_path / "protein_atp.json"
    path.write_text(json.dumps(fold_input))
    results, reports = {}, {}
    for tag, without in (("af3-slots", "atom-slots"), ("input-slots", "")):
        error, results[tag], reports[tag] = real_af3.forward(
            af3, model_dir, path, tmp_path / f"{tag}.npz", "patched", with_report=True, bucket=40, steps=5, without=without)
        assert error is None, error
    assert "atom-slots" not in reports["af3-slots"]
    assert reports["input-slots"]["atom-slots"] == "applied"
    for key in ("positions", "pae", "plddt"):
        stock, ours = results["af3-slots"][key], results["input-slots"][key]
        assert np.isfinite(stock).all(), key
        assert np.array_equal(ours, stock), f"{key}: max difference {np.abs(ours - stock).max()}"
