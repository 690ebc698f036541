"""Stock AF3 on CPU vs ``af3-cpu predict``, side by side in one run.

For each input: (a) the stock path -- AF3's own ``run_alphafold.py`` with only
what it needs to start on a CPU at all (v3.0.4: ``--jax_backend=cpu
--flash_attention_implementation=xla``; earlier versions: the same attention
flag plus the plugin's CPU-device patch and nothing else) -- and (b)
``af3-cpu predict`` with its defaults; same weights, same seed.  Reported per
input: tokens, wall time split into compile and the rest, peak RSS, CPU
utilisation, and the stock/af3-cpu ratios.  Writes ``results.json`` and
``results.md``.

    python benchmarks/bench.py --af3-dir ~/alphafold3 --model-dir ~/models --quick

Use the interpreter that has AF3's dependencies (and af3-cpu-patch) installed.
Random weights (``af3-cpu random-weights DIR``) time the same as real ones.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from af3_cpu_patch.host import cpu_info  # noqa: E402

# Deterministic, varied protein sequences (no MSA: the benchmark times the model).
_RESIDUES = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQTLGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPFLPDQIHFVHSQELLSRYPDLDAKGRERAIAKDLGAVFLVGIGGKLSDGHRHDVRAPDYDDWSTPSELGHAGLNGDILVWNPVLEDAFELSSMGIRVDADTLKHQLALTGDEDRLELEWHQALLRGEMPQTIGGGIGQSRLTMLLLQLPHIGQVQAGVWPAAVRESVPALL"

SIZES = (16, 40, 64, 128, 256)
# Quick: stock's cost does not shrink with the input (it pads to 256 tokens), so
# the quick workload is cut the same way on both paths: one trunk pass, one
# sample, 20 of the 200 diffusion steps.
QUICK = {"sizes": (16,), "ligand": False, "num_recycles": 0, "num_diffusion_samples": 1, "diffusion_steps": 20}


def protein_input(n: int, ligand: bool = False) -> dict:
    sequences = [
        {"protein": {"id": "A", "sequence": _RESIDUES[:n], "unpairedMsa": "", "pairedMsa": "", "templates": []}}
    ]
    name = f"protein_{n}"
    if ligand:
        sequences.append({"ligand": {"id": "B", "ccdCodes": ["ATP"]}})
        name += "_atp"
    return {"name": name, "modelSeeds": [1], "sequences": sequences, "dialect": "alphafold3", "version": 1}


# With JAX_LOG_COMPILES=1 jax logs tracing, lowering and XLA compilation of each jitted function.
COMPILE_LINE = re.compile(
    r"Finished (?:tracing|jaxpr to MLIR module conversion|XLA compilation of) (\S+).*? in ([0-9.]+) sec"
)
INFERENCE_LINE = re.compile(r"Running model inference with seed \d+ took ([0-9.]+) seconds")

# Both paths start through this launcher, so that a setting AF3 has no flag for
# is applied to both alike: argv = [overrides JSON, "cpu-device" or "",
# "path:FILE" | "module:NAME", args...].  The overrides ({"num_recycles": 0,
# "heads.diffusion.eval.steps": 20}) are set on every AF3 model config as the
# model is built (``--quick``: run_alphafold.py rejects --num_recycles=0 and
# has no diffusion-steps flag); "cpu-device" installs the plugin's device patch
# and nothing else, which stock v3.0.0-v3.0.3 need to start on a CPU at all.
LAUNCHER = """
import json, runpy, sys
overrides, device, target = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
if overrides:
    import wrapt
    def _init(wrapped, instance, args, kwargs):
        config = kwargs.get("config", args[0] if args else None)
        for path, value in overrides.items():
            *parents, leaf = path.split(".")
            owner = config
            for part in parents:
                owner = getattr(owner, part)
            setattr(owner, leaf, value)
        return wrapped(*args, **kwargs)
    @wrapt.when_imported("alphafold3.model.model")
    def _hook(module):
        wrapt.wrap_function_wrapper(module, "Model.__init__", _init)
if device:
    import af3_cpu_patch
    from af3_cpu_patch.patches import run_alphafold_cpu_device
    af3_cpu_patch.uninstall()
    af3_cpu_patch.install(run_alphafold_cpu_device.PATCHES)
kind, _, name = target.partition(":")
sys.argv = [name, *sys.argv[4:]]
if kind == "path":
    runpy.run_path(name, run_name="__main__")
else:
    runpy.run_module(name, run_name="__main__", alter_sys=True)
"""


def predict_args(
    json_path: pathlib.Path, model_dir: pathlib.Path, out_dir: pathlib.Path, af3_dir: pathlib.Path
) -> list[str]:
    """``af3-cpu`` arguments for one input, without the data pipeline."""
    return ["predict", str(json_path), "--model-dir", str(model_dir), "--no-run-data-pipeline",
            "--output-dir", str(out_dir), "--af3-dir", str(af3_dir)]  # fmt: skip


def is_model_function(name: str) -> bool:
    """Whether a jitted function's name in JAX's logs is AF3's model (``apply_fn``; ``forward`` in older versions)."""
    return "apply" in name or "forward" in name


def run_env(af3_dir: pathlib.Path) -> dict:
    """The environment of both paths: CPU JAX logging its compiles, no plugin autoload, the checkout importable."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_LOG_COMPILES": "1"}
    env.pop("AF3_CPU_PATCH", None)
    if (af3_dir / "src" / "alphafold3").is_dir():  # a checkout whose package is not pip-installed
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(af3_dir / "src"), env.get("PYTHONPATH")]))
    return env


def run_measured(cmd: list[str], env: dict, log: pathlib.Path) -> dict:
    """Run ``cmd``; wall time, peak RSS and CPU time of that process tree."""
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    text = log.read_text(errors="replace")
    compile_s = sum(float(m.group(2)) for m in COMPILE_LINE.finditer(text) if is_model_function(m.group(1)))
    inference = [float(m.group(1)) for m in INFERENCE_LINE.finditer(text)]
    return {
        "ok": os.waitstatus_to_exitcode(status) == 0,
        "wall_s": round(wall, 1),
        "compile_s": round(compile_s, 1),
        "inference_s": round(sum(inference) - compile_s, 1) if inference else None,
        "peak_rss_gb": round(usage.ru_maxrss / 2**20, 2),
        "cpu_util": round((usage.ru_utime + usage.ru_stime) / wall, 2) if wall else None,
        "log": str(log),
    }


# af3-cpu reads AF3's CCD through an index it builds once per AF3 install
# (af3_cpu_patch/patches/lazy_ccd.py), as AF3's own build_data makes the CCD pickle once.
# It is built before the timed runs; benchmarks/ccd_load.py measures a first run too.
CCD_INDEX = """
import json, time
from alphafold3.constants import chemical_components
from af3_cpu_patch.host import cache_dirs
from af3_cpu_patch.patches import lazy_ccd
path = cache_dirs.ccd_index_path(chemical_components._CCD_PICKLE_FILE)
start, existed = time.monotonic(), path.is_file()
lazy_ccd.ensure_index(chemical_components._CCD_PICKLE_FILE)
print(json.dumps({"existed": existed, "build_s": round(time.monotonic() - start, 1)}))
"""


def prepare_ccd_index(env: dict) -> dict:
    """Build af3-cpu's CCD index if it is not there yet: whether it existed, and the seconds it took."""
    proc = subprocess.run([sys.executable, "-c", CCD_INDEX], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"could not build af3-cpu's CCD index: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def has_native_cpu_backend(af3_dir: pathlib.Path) -> bool:
    return "'jax_backend'" in (af3_dir / "run_alphafold.py").read_text()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--af3-dir", type=pathlib.Path, required=True)
    parser.add_argument("--model-dir", type=pathlib.Path, required=True)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results"))
    parser.add_argument(
        "--quick",
        action="store_true",
        help="16 residues, no recycles, 1 sample, 20 diffusion steps: under 10 minutes on 2 cores",
    )
    parser.add_argument("--sizes", type=lambda s: tuple(int(x) for x in s.split(",")), default=None)
    parser.add_argument("--num-recycles", type=int, default=None)
    parser.add_argument("--num-diffusion-samples", type=int, default=None)
    parser.add_argument("--diffusion-steps", type=int, default=None, help="diffusion steps on both paths (AF3: 200)")
    parser.add_argument("--no-ligand", action="store_true")
    parser.add_argument("--ligand-only", action="store_true", help="only the 40-residue protein with ATP")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep inputs already measured in --out with the same settings (a full run can be split up)",
    )
    parser.add_argument("--af3-cpu-args", default="", help="extra af3-cpu predict options, e.g. '--precision f32'")
    args = parser.parse_args()

    sizes = args.sizes or (QUICK["sizes"] if args.quick else SIZES)
    recycles = args.num_recycles if args.num_recycles is not None else (QUICK["num_recycles"] if args.quick else None)
    samples = args.num_diffusion_samples or (QUICK["num_diffusion_samples"] if args.quick else None)
    steps = args.diffusion_steps or (QUICK["diffusion_steps"] if args.quick else None)
    if args.ligand_only and (args.quick or args.no_ligand or args.sizes):
        parser.error("--ligand-only runs the protein-ligand input alone: drop --quick, --no-ligand and --sizes")
    inputs = [] if args.ligand_only else [protein_input(n) for n in sizes]
    if not (args.quick or args.no_ligand):
        inputs.append(protein_input(40, ligand=True))

    af3_dir = args.af3_dir.expanduser().resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="af3-cpu-bench-"))
    env = run_env(af3_dir)
    native_cpu = has_native_cpu_backend(af3_dir)
    common, overrides = [], {}
    if steps is not None:
        overrides["heads.diffusion.eval.steps"] = steps
    if recycles == 0:  # run_alphafold.py wants a positive --num_recycles
        overrides["num_recycles"] = 0
    elif recycles is not None:
        common.append(f"--num_recycles={recycles}")
    if samples is not None:
        common.append(f"--num_diffusion_samples={samples}")

    settings = {"af3_dir": str(af3_dir), "recycles": recycles, "samples": samples, "diffusion_steps": steps,
                "af3_cpu_args": args.af3_cpu_args}  # fmt: skip
    ccd_index = prepare_ccd_index(env)
    rows = []
    for fold_input in inputs:
        name = fold_input["name"]
        saved = args.out / "rows" / f"{name}.json"
        if args.resume and saved.is_file():
            row = json.loads(saved.read_text())
            if row.get("settings") == settings and row["stock"]["ok"] and row["af3_cpu"]["ok"]:
                print(f"[{name}] measured before, kept ({saved})", flush=True)
                rows.append(row)
                continue
        json_path = work / f"{name}.json"
        json_path.write_text(json.dumps(fold_input))
        stock_flags = [f"--json_path={json_path}", f"--model_dir={args.model_dir}", "--run_data_pipeline=false",
                       "--flash_attention_implementation=xla", f"--output_dir={work / 'stock' / name}", *common]  # fmt: skip
        launch = [sys.executable, "-c", LAUNCHER, json.dumps(overrides)]
        stock_args = ["--jax_backend=cpu", *stock_flags] if native_cpu else stock_flags
        stock_cmd = [*launch, "" if native_cpu else "cpu-device", f"path:{af3_dir / 'run_alphafold.py'}", *stock_args]
        ours_cmd = [
            *launch,
            "",
            "module:af3_cpu_patch",
            *predict_args(json_path, args.model_dir, work / "ours" / name, af3_dir),
            "--cache-dir",  # an empty compilation cache: a first run, as stock's (benchmarks/compile_cache.py: the second)
            str(work / "cache" / name),
            *args.af3_cpu_args.split(),
            "--",
            *common,
        ]
        print(f"[{name}] stock ...", flush=True)
        stock = run_measured(stock_cmd, env, args.out / f"{name}.stock.log")
        print(f"[{name}] af3-cpu ...", flush=True)
        ours = run_measured(ours_cmd, env, args.out / f"{name}.af3-cpu.log")
        ratio = {
            k: round(stock[k] / ours[k], 2) if stock.get(k) and ours.get(k) else None
            for k in ("wall_s", "compile_s", "inference_s", "peak_rss_gb")
        }
        rows.append(
            {
                "settings": settings,
                "input": name,
                "residues": len(fold_input["sequences"][0]["protein"]["sequence"]),
                "stock": stock,
                "af3_cpu": ours,
                "stock_over_af3_cpu": ratio,
            }
        )
        saved.parent.mkdir(exist_ok=True)
        saved.write_text(json.dumps(rows[-1], indent=1))
        print(json.dumps(rows[-1]), flush=True)

    meta = {"cpu": cpu_info.summary(), "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
            "ccd_index": ccd_index, **settings}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    (args.out / "results.md").write_text(markdown(meta, rows))
    print(markdown(meta, rows))
    return 0 if all(r["stock"]["ok"] and r["af3_cpu"]["ok"] for r in rows) else 1


def print_and_save(result: dict, out: pathlib.Path | None) -> None:
    """Print a script's JSON result and, with ``--out``, write it there too."""
    text = json.dumps(result, indent=1)
    print(text)
    if out:
        out.write_text(text)


def markdown(meta: dict, rows: list[dict]) -> str:
    def setting(key):
        return "AF3 default" if meta.get(key) is None else meta[key]

    head = (
        f"Measured on {meta['cpu']}, {meta['cores']} cores; recycles {setting('recycles')}, "
        f"samples {setting('samples')}, diffusion steps {setting('diffusion_steps')}; "
        f"af3-cpu options: `{meta['af3_cpu_args'] or 'defaults'}`.\n\n"
    )
    lines = [
        "| input | residues | stock wall s (compile) | af3-cpu wall s (compile) | wall ratio | stock peak RSS GB | af3-cpu peak RSS GB | CPU util stock / af3-cpu |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, o = r["stock"], r["af3_cpu"]
        lines.append(
            f"| {r['input']} | {r['residues']} | {s['wall_s']} ({s['compile_s']}) | {o['wall_s']} ({o['compile_s']}) | "
            f"{r['stock_over_af3_cpu']['wall_s']}x | {s['peak_rss_gb']} | {o['peak_rss_gb']} | {s['cpu_util']} / {o['cpu_util']} |"
        )
    return head + "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
