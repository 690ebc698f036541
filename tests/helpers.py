"""Run snippets in fresh interpreters.

Every test that imports ``alphafold3`` (the stand-in or a real AF3) does it in
a subprocess: the import hooks and jax's jit caches are per process, and two
``alphafold3`` packages cannot share one ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parent.parent
STANDIN_CHECKOUT = ROOT / "tests" / "standin_af3"
STANDIN = STANDIN_CHECKOUT / "src"
STANDIN_HEAD = STANDIN / "alphafold3" / "model" / "network" / "diffusion_head.py"


def standin_checkout_without_output_terms(parent: pathlib.Path) -> pathlib.Path:
    """A copy of the stand-in checkout whose package lacks OUTPUT_TERMS_OF_USE.md (a bare ``src/alphafold3``)."""
    checkout = parent / "checkout"
    shutil.copytree(STANDIN_CHECKOUT, checkout)
    (checkout / "src" / "alphafold3" / "OUTPUT_TERMS_OF_USE.md").unlink()
    return checkout


def run_python(
    code: str, *, pythonpath: list[os.PathLike | str] = (), env: dict | None = None, timeout: float = 600,
    python: str = sys.executable,
):
    """Run ``code`` in ``python``; it prints one JSON object as its last stdout line, which is returned."""
    full_env = {k: v for k, v in os.environ.items() if k != "AF3_CPU_PATCH"}
    full_env["PYTHONPATH"] = os.pathsep.join([str(p) for p in pythonpath] + [str(ROOT)])
    full_env.setdefault("JAX_PLATFORMS", "cpu")
    full_env.update(env or {})
    proc = subprocess.run(
        [python, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    result = json.loads(lines[-1])
    result["_stderr"] = proc.stderr
    return result


def standin_variant(tmp_path: pathlib.Path, old: str, new: str) -> pathlib.Path:
    """A copy of the stand-in package with one expression of its diffusion head changed."""
    import shutil

    dest = tmp_path / "variant"
    shutil.copytree(STANDIN, dest)
    head = dest / "alphafold3" / "model" / "network" / "diffusion_head.py"
    text = head.read_text()
    assert old in text, f"{old!r} not in the stand-in"
    head.write_text(text.replace(old, new))
    return dest


# Runs the stand-in sampler under jit and reports NaNs and the raw result bytes.
SAMPLE_SNIPPET = """
import json, os, hashlib, sys
if os.environ.get("WITH_PLUGIN") == "1":
    import af3_cpu_patch
import jax, jax.numpy as jnp, numpy as np
from alphafold3.model.network import diffusion_head as dh

config = dh.SampleConfig(**json.loads(os.environ.get("SAMPLE_CONFIG", "{}")))
mask = jnp.ones((64, 24))
denoiser = {
    "scale": lambda x, t: x * 0.9,
    "head": dh.DiffusionHead(),
    "nan_atom": lambda x, t: x.at[..., 0, 0, 0].set(jnp.nan) * 0.9,
}[os.environ.get("DENOISER", "scale")]
out = jax.jit(lambda k: dh.sample(denoiser, mask, k, config))(jax.random.PRNGKey(1))
pos = np.asarray(out["atom_positions"])
np.save(os.environ["OUT"], pos)
report = {}
if "af3_cpu_patch" in sys.modules:
    report = {r.patch: str(r.status) for r in af3_cpu_patch.report()}
print(json.dumps({"nan": int(np.isnan(pos).sum()), "size": int(pos.size), "report": report}))
"""


def run_sample(
    tmp_path, *, plugin: bool, pythonpath=(STANDIN,), denoiser="scale", config=None, tag="out",
    snippet=SAMPLE_SNIPPET, env=None, python=sys.executable,
):
    """Run a sampler snippet with or without the plugin; returns its JSON plus the positions."""
    out = tmp_path / f"{tag}.npy"
    env = {
        "WITH_PLUGIN": "1" if plugin else "0",
        "DENOISER": denoiser,
        "SAMPLE_CONFIG": json.dumps(config or {}),
        "OUT": str(out),
        **(env or {}),
    }
    result = run_python(snippet, pythonpath=list(pythonpath), env=env, python=python)
    import numpy as np

    result["positions"] = np.load(out)
    return result
