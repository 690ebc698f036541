"""A lower bound on the time of AF3's 200 diffusion steps on this machine.

Why: the ">= 20x faster than stock at <= 64 residues" goal needs the whole
``af3-cpu`` run to take a twentieth of stock's.  Most of a small run is the
diffusion steps, and their time is mostly matrix multiplication by the weights
of the diffusion transformer (24 blocks, 768 channels, once per token of every
sample) and of the atom transformers (3 + 3 blocks, 128 channels, once per atom
slot of every sample).  This script bounds that part from below without
building the model:

- it reads the shapes of those weights from the model file;
- it times XLA:CPU multiplying a ``[rows, in]`` float32 array by each
  ``[in, out]`` weight, alone and compiled, at the rows of one step: every
  sample's tokens (atom slots); the token transformer's weights that read only
  its conditioning once per step (it depends on the noise level, which all
  samples of a step share); the atom transformers' conditioning and the
  pair-bias projections not at all (no step changes them);
- it sums those times over the blocks, and also divides the products' total
  floating-point work by XLA's speed on one large square product (the most this
  CPU gives; fusing products could approach it, not beat it).

The second number is a floor: no program that does these products can take
less. Attention (whose keys AF3 also projects once per window), layer norms
and the trunk all come on top.

    python benchmarks/diffusion_floor.py --af3-dir ~/alphafold3 --model-dir ~/models --buckets 32,64

Random weights time like real ones (only the shapes matter).  AF3 v3.0.1 or
later; use the interpreter that has AF3's dependencies installed.  Run it on an
idle machine: it measures the CPU's speed.
"""

from __future__ import annotations

import argparse
import functools
import math
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench import print_and_save  # noqa: E402

from af3_cpu_patch.af3 import checkout as af3_checkout
from af3_cpu_patch.host import cpu_info
from af3_cpu_patch import runtime  # noqa: E402

# Where the diffusion head's two kinds of transformer keep their weights in the model file.
TOKEN_SCOPE = "diffusion_head/transformer/"
ATOM_SCOPE = "diffusion_head/diffusion_atom_transformer_"
STEPS = 200  # AF3's default diffusion steps


def atom_slots_per_token(pipeline) -> int:
    """Atom slots AF3 pads per token (``average_num_atoms_per_token``, 24 in v3.0.x)."""
    return pipeline.WholePdbPipeline.Config().average_num_atoms_per_token


def diffusion_weights(af3_params, model_dir: pathlib.Path) -> list[dict]:
    """One entry per weight matrix of the diffusion transformers: name, level, blocks, in and out size."""
    files, compressed = af3_params.select_model_files(model_dir)
    weights = []
    with af3_params.open_for_reading(files, compressed) as stream:
        for scope, name, array in af3_params.read_records(stream):
            level = "token" if TOKEN_SCOPE in scope else "atom" if ATOM_SCOPE in scope else None
            layer = scope.rsplit("/", 1)[-1]
            if level is None or name != "weights" or "pair_logits" in layer or (level == "atom" and "cond" in layer):
                continue  # these read only conditioning that no step changes: a program could compute them once
            stacked = scope.count("__layer_stack")  # leading block axes: (6, 4, in, out...) or (3, in, out...)
            weights.append({
                "name": layer,
                "level": level,
                "blocks": math.prod(array.shape[:stacked]),
                "in": array.shape[stacked],
                "out": math.prod(array.shape[stacked + 1:]),
                "per_sample": "cond" not in layer,
            })
    if not {w["level"] for w in weights} == {"token", "atom"}:
        sys.exit(f"no diffusion transformer weights found in {model_dir}")
    return weights


@functools.cache  # weights of one shape (q, k, v, ...) share one measurement
def matmul_seconds(rows: int, fan_in: int, fan_out: int, repeats: int) -> float:
    """Median seconds of one compiled float32 ``[rows, in] @ [in, out]`` on this machine."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    a = jnp.asarray(rng.standard_normal((rows, fan_in), dtype=np.float32))
    w = jnp.asarray(rng.standard_normal((fan_in, fan_out), dtype=np.float32))
    product = jax.jit(jnp.matmul)
    jax.block_until_ready(product(a, w))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(product(a, w))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_gflop_per_s(repeats: int) -> float:
    """XLA:CPU's float32 speed on one large square product: the best a step's products could run at."""
    size = 2048
    return 2 * size**3 / matmul_seconds(size, size, size, max(3, repeats // 10)) / 1e9


def floor_for(weights: list[dict], bucket: int, samples: int, atom_slots: int, repeats: int, peak: float) -> dict:
    flops = seconds = 0.0
    for weight in weights:
        rows = bucket * (atom_slots if weight["level"] == "atom" else 1) * (samples if weight["per_sample"] else 1)
        seconds += weight["blocks"] * matmul_seconds(rows, weight["in"], weight["out"], repeats)
        flops += weight["blocks"] * 2 * rows * weight["in"] * weight["out"]
    return {
        "bucket": bucket,
        "gflop_per_step": round(flops / 1e9, 1),
        # each product alone at its own shape
        "per_step_s": round(seconds, 3),
        "gflop_per_s": round(flops / seconds / 1e9, 1),
        f"{STEPS}_steps_s": round(STEPS * seconds, 1),
        # every product at the large-product speed: no program doing these products can beat it
        f"{STEPS}_steps_at_peak_s": round(STEPS * flops / 1e9 / peak, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--af3-dir", type=pathlib.Path, required=True)
    parser.add_argument("--model-dir", type=pathlib.Path, required=True)
    parser.add_argument("--buckets", default="32,48,64", help="token buckets to bound (comma-separated)")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per matrix shape (median)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args()

    af3_checkout.find_checkout(args.af3_dir)  # makes the checkout's alphafold3 importable
    threads = runtime.prepare()
    from alphafold3.model import params as af3_params
    from alphafold3.model.pipeline import pipeline

    weights = diffusion_weights(af3_params, args.model_dir.expanduser())
    atom_slots = atom_slots_per_token(pipeline)
    peak = peak_gflop_per_s(args.repeats)
    result = {
        "cpu": cpu_info.summary(),
        "threads": threads,
        "samples": args.samples,
        "atom_slots_per_token": atom_slots,
        "weights": len(weights),
        "peak_gflop_per_s": round(peak, 1),
        "floors": [
            floor_for(weights, int(b), args.samples, atom_slots, args.repeats, peak) for b in args.buckets.split(",")
        ],
    }
    print_and_save(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
