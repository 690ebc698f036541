"""Patch sets side by side in one process: per diffusion step, per trunk pass and compile time, calls interleaved.

One diffusion step differs by a few percent between patch sets, and this
machine's runs differ by up to 10% from one process to the next (a virtual
machine), so timing each variant in its own ``breakdown.py`` run cannot tell
them apart.  Here every variant is compiled in the same process -- its patches
installed, JAX's caches cleared, the forward pass compiled for two step counts
-- and then the calls of all variants are timed round-robin, so slow phases of
the machine hit every variant alike.  Per variant it reports the compile time
and the best-of-rounds seconds per diffusion step:

    per diffusion step = (t(recycles 0, S1 steps) - t(0, S0 steps)) / (S1 - S0)
    per trunk pass     = (t(recycles R, S0 steps) - t(0, S0 steps)) / R     (with --recycles R)

    python benchmarks/variants.py --af3-dir ~/alphafold3 --model-dir ~/models --residues 64 \\
        --variant stock-loops=diffusion-steps-rolled,diffusion-layers-unrolled --variant defaults=

A variant is ``NAME=PATCH,...``: af3-cpu's CLI patches less those named (names:
docs/patches.md); ``--stock-bf16-products NAME`` also computes that
variant's bf16 products as stock does (docs/benchmarks.md, "Trunk products").  AF3 v3.0.1 or later; use the interpreter that has
AF3's dependencies installed.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench import print_and_save  # noqa: E402
from breakdown import compile_forward, protein_batch  # noqa: E402

from af3_cpu_patch.af3 import checkout as af3_checkout
from af3_cpu_patch import settings
from af3_cpu_patch.host import cpu_info
from af3_cpu_patch import runtime

from af3_cpu_patch.engine import hooks  # noqa: E402


def parse_variant(text: str) -> tuple[str, frozenset[str]]:
    name, sep, left_out = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r}: give NAME=PATCH,... (patches to leave out; may be empty)")
    return name, frozenset(filter(None, left_out.split(",")))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--af3-dir", type=pathlib.Path, required=True)
    parser.add_argument("--model-dir", type=pathlib.Path, required=True)
    parser.add_argument("--residues", type=int, default=64)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--steps", type=int, nargs=2, default=(10, 50), metavar=("S0", "S1"))
    parser.add_argument("--recycles", type=int, default=0, metavar="R", help="also time R recycles (per trunk pass)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--diffusion-precision", choices=settings.PRECISION_CHOICES, default="auto")
    parser.add_argument("--variant", type=parse_variant, action="append", required=True, metavar="NAME=PATCH,...")
    parser.add_argument(
        "--stock-bf16-products", action="append", default=[], metavar="NAME",
        help="variant NAME computes bf16 products as stock does (bf16_products off; see af3_cpu_patch/patches/trunk_products.py)",
    )
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the result as JSON here")
    args = parser.parse_args()

    from af3_cpu_patch.host import memory_forecast
    from af3_cpu_patch.patches import CLI_PATCHES

    known = {p.name for p in CLI_PATCHES}
    if set(args.stock_bf16_products) - {name for name, _ in args.variant}:
        parser.error("--stock-bf16-products names a variant not given with --variant")
    for name, left_out in args.variant:
        if left_out - known:
            parser.error(f"variant {name}: no patch named {', '.join(sorted(left_out - known))}")
    root = af3_checkout.find_checkout(args.af3_dir).root
    run, run_alphafold = runtime.start_af3(root, CLI_PATCHES, diffusion_precision=args.diffusion_precision)
    bf16_products_setting = run.trunk_products
    if not hasattr(run_alphafold, "model"):
        sys.exit("variants.py needs AF3 v3.0.1 or later (v3.0.0 builds its model differently)")
    sys.argv = sys.argv[:1]  # tokamax parses absl flags from sys.argv
    runtime.parse_flags(sys.argv)

    import jax

    bucket = memory_forecast.bucket_for(args.residues)
    params, key = run_alphafold.params.get_model_haiku_params(model_dir=args.model_dir), jax.random.PRNGKey(1)

    s0, s1 = args.steps
    shapes = [(0, s0), (0, s1)] + ([(args.recycles, s0)] if args.recycles else [])
    compiled, compile_s, applied, batches = {}, {}, {}, {}
    with runtime.quiet_known_noise():
        for name, left_out in args.variant:
            hooks.uninstall()
            hooks.install(tuple(p for p in CLI_PATCHES if p.name not in left_out))
            settings.use(dataclasses.replace(run, trunk_products=bf16_products_setting and name not in args.stock_bf16_products))
            jax.clear_caches()  # nothing traced with the previous variant's patches is reused
            batches[name] = batch = protein_batch(run_alphafold, args.residues, bucket)  # featurised with its patches
            for shape in shapes:
                recycles, steps = shape
                compiled[name, shape], compile_s[name, shape] = compile_forward(
                    run_alphafold, params, key, batch, args.samples, recycles, steps
                )
                jax.block_until_ready(compiled[name, shape](params, key, batch))  # first call: not timed
            applied[name] = sorted(r.patch for r in hooks.report() if str(r.status) == "applied")
        seconds = {k: [] for k in compiled}
        for _ in range(args.rounds):
            for k, fn in compiled.items():
                start = time.perf_counter()
                jax.block_until_ready(fn(params, key, batches[k[0]]))
                seconds[k].append(round(time.perf_counter() - start, 2))

    rows = {}
    for name, left_out in args.variant:
        best = {shape: min(seconds[name, shape]) for shape in shapes}
        step = (best[0, s1] - best[0, s0]) / (s1 - s0)
        label = {shape: f"recycles={shape[0]},steps={shape[1]}" for shape in shapes}
        rows[name] = {
            "left_out": sorted(left_out),
            "bf16_products": bf16_products_setting and name not in args.stock_bf16_products,
            "applied": applied[name],
            "compile_s": {label[shape]: round(compile_s[name, shape], 1) for shape in shapes},
            "timed_s": {label[shape]: seconds[name, shape] for shape in shapes},
            "per_diffusion_step_s": round(step, 3),
        }
        line = f"{name}: {step:.3f} s per diffusion step"
        if args.recycles:
            rows[name]["per_trunk_pass_s"] = round((best[args.recycles, s0] - best[0, s0]) / args.recycles, 3)
            line += f", {rows[name]['per_trunk_pass_s']:.3f} s per trunk pass"
        print(f"{line}, compile {compile_s[name, (0, s1)]:.1f} s", flush=True)
    print_and_save(
        {
            "cpu": cpu_info.summary(),
            "threads": run.threads,
            "residues": args.residues,
            "bucket": bucket,
            "samples": args.samples,
            "diffusion_precision": run.diffusion_precision,
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "rounds": args.rounds,
            "recycles": args.recycles,
            "variants": rows,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
