"""Peak RSS of ``af3-cpu predict`` per token bucket, and the fit behind the memory forecast.

Runs ``af3-cpu predict`` (its defaults, forecast check off) on proteins that
nearly fill each bucket, measures the peak RSS of each process, and fits
``peak_gb = a + b*bucket + c*bucket**2`` by least squares.  The result (points
and coefficients) goes to ``--out``; ``af3_cpu_patch/memory_forecast.py``
carries the fitted coefficients.

    python benchmarks/memory.py --af3-dir ~/alphafold3 --model-dir ~/models

Recycles do not change the peak (the loop reuses its buffers), so one is run;
samples do, so AF3's default of five is kept.  Nor do diffusion steps (within
0.1 GB at buckets 32 and 64): ``--diffusion-steps 20`` measures the peak in a
fraction of the time.  af3-cpu's CCD index is built first, so that no run
includes building it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench import LAUNCHER, predict_args, prepare_ccd_index, print_and_save, protein_input, run_measured  # noqa: E402

from af3_cpu_patch.host import cpu_info  # noqa: E402

# Residues that nearly fill buckets 32, 64, 128 and 256.
SIZES = (30, 60, 120, 250)


def fit(points: list[tuple[int, float]], quadratic: float | None = None) -> tuple[float, float, float]:
    """Least-squares a, b, c of a + b*x + c*x**2; with ``quadratic``, c is that and a, b are fitted."""
    import numpy as np

    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    if quadratic is not None:
        a, b = np.linalg.lstsq(np.stack([np.ones_like(x), x], axis=1), y - quadratic * x * x, rcond=None)[0]
        return float(a), float(b), float(quadratic)
    design = np.stack([np.ones_like(x), x, x * x], axis=1)
    a, b, c = np.linalg.lstsq(design, y, rcond=None)[0]
    return float(a), float(b), float(c)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--af3-dir", type=pathlib.Path, required=True)
    parser.add_argument("--model-dir", type=pathlib.Path, required=True)
    parser.add_argument("--sizes", type=lambda s: tuple(int(x) for x in s.split(",")), default=SIZES)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results/memory.json"))
    parser.add_argument("--diffusion-steps", type=int, default=None, help="diffusion steps (AF3: 200)")
    parser.add_argument(
        "--quadratic", type=float, default=None,
        help="keep this bucket**2 coefficient and fit the others (it decides the forecast past the largest bucket run)",
    )
    args = parser.parse_args()

    from af3_cpu_patch.host import memory_forecast

    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="af3-cpu-memory-"))
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    af3_dir = args.af3_dir.expanduser().resolve()
    if (af3_dir / "src" / "alphafold3").is_dir():
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(af3_dir / "src"), env.get("PYTHONPATH")]))
    ccd_index = prepare_ccd_index(env)
    overrides = {"heads.diffusion.eval.steps": args.diffusion_steps} if args.diffusion_steps else {}
    points = []
    for n in args.sizes:
        fold_input = protein_input(n)
        json_path = work / f"{fold_input['name']}.json"
        json_path.write_text(json.dumps(fold_input))
        cmd = [sys.executable, "-c", LAUNCHER, json.dumps(overrides), "", "module:af3_cpu_patch",
               *predict_args(json_path, args.model_dir, work / "out", af3_dir),
               "--quiet", "--max-memory", "none", "--num-recycles", "1"]  # fmt: skip
        result = run_measured(cmd, env, args.out.parent / f"memory-{n}.log")
        bucket = memory_forecast.bucket_for(n)
        print(json.dumps({"residues": n, "bucket": bucket, **result}), flush=True)
        if result["ok"]:
            points.append((bucket, result["peak_rss_gb"]))
    coefficients = fit(points, args.quadratic) if len(points) >= 3 else None
    report = {"cpu": cpu_info.summary(), "cores": len(os.sched_getaffinity(0)), "af3_dir": str(af3_dir),
              "diffusion_steps": args.diffusion_steps, "ccd_index": ccd_index, "quadratic_kept": args.quadratic,
              "points": [{"bucket": b, "peak_rss_gb": g} for b, g in points], "fit_a_b_c": coefficients}  # fmt: skip
    print_and_save(report, args.out)
    return 0 if coefficients else 1


if __name__ == "__main__":
    sys.exit(main())
