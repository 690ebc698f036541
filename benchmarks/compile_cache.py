"""Compilation of the first and the second ``af3-cpu predict`` run of one input.

Runs ``af3-cpu predict`` twice on the same input with its defaults (progress
on) and one fresh compilation cache, and reports for AF3's model function what
JAX logs: tracing, conversion to MLIR, and XLA compilation (on a cache hit:
loading the compiled program), with the second run's reduction of each.  XLA
compilation is what the cache saves; AF3's Python tracing and the conversion
to MLIR happen in every process.

    python benchmarks/compile_cache.py --af3-dir ~/alphafold3 --model-dir ~/models

The number of recycles does not change what is compiled, so one is run by
default (``--af3-cpu-args`` adds predict options, e.g. '--num-recycles 10').
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench import COMPILE_LINE, is_model_function, predict_args, print_and_save, protein_input, run_env, run_measured  # noqa: E402

from af3_cpu_patch.host import cpu_info  # noqa: E402

STAGES = {"tracing": "tracing_s", "jaxpr to MLIR module conversion": "to_mlir_s", "XLA compilation of": "xla_compile_s"}
CACHE_HIT = re.compile(r"Persistent compilation cache hit for '(\S+)'")


def stages(log: pathlib.Path) -> dict:
    """Seconds per compile stage of AF3's model function (``apply_fn``/``forward``), and its cache hits."""
    text = log.read_text(errors="replace")
    out = dict.fromkeys(STAGES.values(), 0.0)
    for match in COMPILE_LINE.finditer(text):
        if is_model_function(match.group(1)):
            stage = next(v for k, v in STAGES.items() if f"Finished {k}" in match.group(0))
            out[stage] = round(out[stage] + float(match.group(2)), 2)
    out["cache_hits"] = sorted({m.group(1) for m in CACHE_HIT.finditer(text) if is_model_function(m.group(1))})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--af3-dir", type=pathlib.Path, required=True)
    parser.add_argument("--model-dir", type=pathlib.Path, required=True)
    parser.add_argument("--residues", type=int, default=16)
    parser.add_argument("--af3-cpu-args", default="--num-recycles 1", help="extra af3-cpu predict options")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results/compile-cache.json"))
    args = parser.parse_args()

    args.out.parent.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="af3-cpu-compile-cache-"))
    af3_dir = args.af3_dir.expanduser().resolve()
    env = run_env(af3_dir)
    fold_input = protein_input(args.residues)
    json_path = work / f"{fold_input['name']}.json"
    json_path.write_text(json.dumps(fold_input))
    runs = []
    for label in ("first", "second"):
        cmd = [sys.executable, "-m", "af3_cpu_patch",
               *predict_args(json_path, args.model_dir, work / label, af3_dir),
               "--cache-dir", str(work / "cache"), *args.af3_cpu_args.split()]  # fmt: skip
        print(f"[{label} run] ...", flush=True)
        measured = run_measured(cmd, env, args.out.with_suffix(f".{label}.log"))
        runs.append({"run": label, **measured, **stages(pathlib.Path(measured["log"]))})
    first, second = runs
    reduction = {
        key: round(1 - second[key] / first[key], 3) if first[key] else None
        for key in ("tracing_s", "to_mlir_s", "xla_compile_s", "compile_s", "wall_s")
    }
    result = {
        "meta": {"cpu": cpu_info.summary(), "cores": len(os.sched_getaffinity(0)), "residues": args.residues,
                 "af3_dir": str(af3_dir), "af3_cpu_args": args.af3_cpu_args},  # fmt: skip
        "runs": runs,
        "second_run_reduction": reduction,
    }
    print_and_save(result, args.out)
    return 0 if all(r["ok"] for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
