"""Where an ``af3-cpu`` run's inference time goes: per trunk pass and per diffusion step.

AF3's forward pass is one jitted call, so its parts cannot be timed from the
outside.  This script builds the model the way ``af3-cpu predict`` does (CPU
patches, precision and attention policy), featurises one protein at one
bucket, compiles its forward pass ahead of time and times one call of it with
three settings -- (recycles 0, 10 steps), (0, 30), (4, 10) -- so that

    per diffusion step = (t(0, 30) - t(0, 10)) / 20     (all samples at once)
    per trunk pass     = (t(4, 10) - t(0, 10)) / 4

and projects AF3's defaults (11 trunk passes, 200 steps).  ``--settings``
times others: at 256 tokens, where one pass of the defaults' settings takes
minutes, ``--settings 0:1,1:1`` gives the trunk pass alone (about 8 minutes on
2 cores, against about 50 for the defaults' settings).  Constant costs of a
first call (it is the only call timed) cancel in these differences.  Same
weights-don't-matter caveat as ``bench.py``: random weights time like real ones.

    python benchmarks/breakdown.py --af3-dir ~/alphafold3 --model-dir ~/models --residues 64

``XLA_FLAGS`` is passed through, so flag experiments are one environment
variable away.  AF3 v3.0.1 or later; use the interpreter that has AF3's
dependencies installed.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench import print_and_save, protein_input  # noqa: E402

from af3_cpu_patch.af3 import checkout as af3_checkout
from af3_cpu_patch.host import cpu_info
from af3_cpu_patch import runtime, settings

SETTINGS = ((0, 10), (0, 30), (4, 10))  # (recycles, diffusion steps)


def parse_settings(text: str) -> tuple[tuple[int, int], ...]:
    try:
        settings = tuple(tuple(int(n) for n in item.split(":")) for item in text.split(","))
    except ValueError:
        settings = ()
    if len(settings) < 2 or any(len(s) != 2 or min(s) < 0 for s in settings):
        raise argparse.ArgumentTypeError(f"{text!r}: give two or more recycles:steps pairs, e.g. 0:1,1:1")
    return settings


def slope(seconds: dict, axis: int) -> float | None:
    """Seconds per unit of recycles (axis 0) or steps (axis 1), from two settings differing only there."""
    for a in seconds:
        for b in seconds:
            if a[1 - axis] == b[1 - axis] and a[axis] < b[axis]:
                return (seconds[b] - seconds[a]) / (b[axis] - a[axis])
    return None


def protein_batch(run_alphafold, residues: int, bucket: int):
    """AF3's featurised batch of a ``residues``-long test protein at ``bucket`` (with the patches installed now)."""
    import jax
    import jax.numpy as jnp
    from alphafold3.common import folding_input
    from alphafold3.constants import chemical_components
    from alphafold3.data import featurisation

    fold_input = folding_input.Input.from_json(json.dumps(protein_input(residues)))
    example = featurisation.featurise_input(
        fold_input=fold_input, buckets=[bucket], ccd=chemical_components.Ccd(), verbose=False
    )[0]
    return jax.tree.map(jnp.asarray, run_alphafold.utils.remove_invalidly_typed_feats(example))


def protein_forward_inputs(run_alphafold, residues: int, bucket: int, model_dir: pathlib.Path):
    """(params, key, batch) for one forward pass of a ``residues``-long test protein at ``bucket``."""
    import jax

    batch = protein_batch(run_alphafold, residues, bucket)
    params = run_alphafold.params.get_model_haiku_params(model_dir=model_dir)
    return params, jax.random.PRNGKey(1), batch


def compile_forward(run_alphafold, params, key, batch, samples: int, recycles: int, steps: int):
    """AF3's forward pass compiled ahead of time for these settings, and the seconds compiling took."""
    import haiku as hk
    import jax

    config = run_alphafold.make_model_config(
        flash_attention_implementation="xla", num_diffusion_samples=samples, num_recycles=recycles
    )
    config.heads.diffusion.eval.steps = steps

    def forward(batch):
        return run_alphafold.model.Model(config)(batch)

    start = time.perf_counter()
    compiled = jax.jit(hk.transform(forward).apply).lower(params, key, batch).compile()
    return compiled, time.perf_counter() - start


def time_forward(run_alphafold, params, key, batch, samples: int, recycles: int, steps: int) -> tuple[float, float]:
    """Seconds to compile the forward pass, and seconds of one call of the compiled pass."""
    import jax

    compiled, compiling = compile_forward(run_alphafold, params, key, batch, samples, recycles, steps)
    start = time.perf_counter()
    jax.block_until_ready(compiled(params, key, batch))
    return compiling, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--af3-dir", type=pathlib.Path, required=True)
    parser.add_argument("--model-dir", type=pathlib.Path, required=True)
    parser.add_argument("--residues", type=int, default=64)
    parser.add_argument("--bucket", type=int, default=None, help="default: the af3-cpu bucket for the input")
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--precision", choices=settings.PRECISION_CHOICES, default="auto")
    parser.add_argument("--attention", choices=settings.ATTENTION_CHOICES, default="auto")
    parser.add_argument("--diffusion-precision", choices=settings.PRECISION_CHOICES, default="auto")
    parser.add_argument("--settings", type=parse_settings, default=SETTINGS, metavar="R:S,...",
                        help="recycles:steps pairs to time (default 0:10,0:30,4:10)")
    parser.add_argument("--leave-out", default="", metavar="PATCH,...",
                        help="af3-cpu patches to leave out, e.g. atom-slots (names: docs/patches.md)")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args()

    from af3_cpu_patch.host import memory_forecast
    from af3_cpu_patch.patches import CLI_PATCHES

    root = af3_checkout.find_checkout(args.af3_dir).root  # also makes its alphafold3 importable
    left_out = set(filter(None, args.leave_out.split(",")))
    unknown = left_out - {p.name for p in CLI_PATCHES}
    if unknown:
        parser.error(f"--leave-out: no patch named {', '.join(sorted(unknown))}")
    patches = tuple(p for p in CLI_PATCHES if p.name not in left_out)
    run, run_alphafold = runtime.start_af3(
        root, patches, precision=args.precision, attention=args.attention, diffusion_precision=args.diffusion_precision
    )
    if not hasattr(run_alphafold, "model"):
        sys.exit("breakdown.py needs AF3 v3.0.1 or later (v3.0.0 builds its model differently)")
    # tokamax parses absl flags from sys.argv, and ours are not AF3's.
    sys.argv = sys.argv[:1]
    runtime.parse_flags(sys.argv)
    bucket = args.bucket or memory_forecast.bucket_for(args.residues)

    params, key, batch = protein_forward_inputs(run_alphafold, args.residues, bucket, args.model_dir)

    seconds, compiling = {}, {}
    with runtime.quiet_known_noise():
        for recycles, steps in args.settings:
            compiling[(recycles, steps)], seconds[(recycles, steps)] = time_forward(
                run_alphafold, params, key, batch, args.samples, recycles, steps
            )
            print(f"recycles {recycles}, steps {steps}: {seconds[(recycles, steps)]:.2f} s "
                  f"(compiled in {compiling[(recycles, steps)]:.1f} s)", flush=True)

    trunk, step = slope(seconds, 0), slope(seconds, 1)
    result = {
        "cpu": cpu_info.summary(),
        "threads": run.threads,
        "residues": args.residues,
        "bucket": bucket,
        "samples": args.samples,
        "precision": run.precision,
        "attention": run.attention,
        "diffusion_precision": run.diffusion_precision,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "left_out": sorted(left_out),
        "timed_s": {f"recycles={r},steps={s}": round(t, 2) for (r, s), t in seconds.items()},
        "compile_s": {f"recycles={r},steps={s}": round(t, 1) for (r, s), t in compiling.items()},
        "per_diffusion_step_s": None if step is None else round(step, 3),
        "per_trunk_pass_s": None if trunk is None else round(trunk, 3),
    }
    if trunk is not None and step is not None:
        (recycles, steps), first = next(iter(seconds.items()))
        rest = first - (recycles + 1) * trunk - steps * step
        result["rest_s"] = round(rest, 2)
        result["projected_default_s"] = {
            "trunk (11 passes)": round(11 * trunk, 1),
            "diffusion (200 steps)": round(200 * step, 1),
            "rest": round(rest, 1),
            "total": round(11 * trunk + 200 * step + rest, 1),
        }
    print_and_save(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
