"""``ticks``: ticks from jitted loops reach the host, and leave the program cacheable."""

from __future__ import annotations

from tests.helpers import run_python

# A jitted, vmapped loop of 7 iterations that ticks once per iteration, run in
# a fresh process with a persistent compilation cache; reports the ticks, the
# mode and which jitted programs the cache holds.
TICK_SNIPPET = """
import json, os, sys
import jax, jax.numpy as jnp
jax.config.update("jax_compilation_cache_dir", sys.argv[1])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
from af3_cpu_patch.host import ticks
if sys.argv[2] == "fallback":
    ticks._state["cacheable"] = False
else:
    ticks.prepare()
heard = []

def body(i, x):
    ticks.tick("test_loop", lambda: heard.append(1))
    return jnp.sin(x) * 1.5 + 0.25

@jax.jit
def looped(x):
    return jax.lax.fori_loop(0, 7, body, x)

x = jnp.linspace(0.0, 1.0, 32).reshape(2, 16)
with_ticks = jax.vmap(looped)(x)
jax.block_until_ready(with_ticks)
plain = jax.vmap(lambda v: jax.lax.fori_loop(0, 7, lambda i, y: jnp.sin(y) * 1.5 + 0.25, v))(x)
print(json.dumps({
    "ticks": len(heard),
    "cacheable": ticks.cacheable(),
    "same_bits": bool((with_ticks == plain).all()),
    "cached": sorted(n.split("-")[0] for n in os.listdir(sys.argv[1])),
}))
"""


def _run(tmp_path, mode):
    cache = tmp_path / "cache"
    cache.mkdir(exist_ok=True)
    code = f"import sys; sys.argv = ['x', {str(cache)!r}, {mode!r}]\n" + TICK_SNIPPET
    return run_python(code)


def test_ffi_ticks_reach_the_host_once_per_iteration_and_are_cached(tmp_path):
    first = _run(tmp_path, "ffi")
    assert first["cacheable"] is True, "FFI ticks did not pass their self-test on this jax"
    assert first["ticks"] == 7  # once per loop iteration, not per vmapped row
    assert first["same_bits"]
    assert "jit_looped" in first["cached"]
    second = _run(tmp_path, "ffi")  # a new process: the program comes from the cache and still ticks
    assert second["ticks"] == 7 and second["cached"] == first["cached"]


def test_fallback_ticks_work_but_are_not_cached(tmp_path):
    result = _run(tmp_path, "fallback")
    assert result["cacheable"] is False
    assert result["ticks"] == 7 and result["same_bits"]
    assert "jit_looped" not in result["cached"]  # what the FFI ticks avoid: JAX caches no host callbacks
