"""What reading AF3's CCD through the lazy index saves: ``af3-cpu predict`` three ways.

1. ``whole``: the index cannot be written (``XDG_CACHE_HOME`` is a file), so
   AF3 unpickles its whole CCD, as stock AF3 does;
2. ``first``: an empty cache: this run builds the index (once per AF3 install);
3. ``indexed``: the index from run 2 is there.

Same input, settings and empty compilation cache in all three, one after the
other; wall time and peak RSS of each, and whole / indexed ratios.

    python benchmarks/ccd_load.py --af3-dir ~/alphafold3 --model-dir ~/models

The default input is a 16-residue protein with 1 recycle, 1 sample and 20
diffusion steps (a few minutes in all), so start-up is a visible share of
each run; ``--residues``, ``--num-diffusion-samples`` and ``--diffusion-steps``
change that.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bench import LAUNCHER, predict_args, print_and_save, protein_input, run_env, run_measured  # noqa: E402

from af3_cpu_patch.host import cpu_info  # noqa: E402

WAYS = ("whole", "first", "indexed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--af3-dir", type=pathlib.Path, required=True)
    parser.add_argument("--model-dir", type=pathlib.Path, required=True)
    parser.add_argument("--residues", type=int, default=16)
    parser.add_argument("--num-diffusion-samples", type=int, default=1)
    parser.add_argument("--diffusion-steps", type=int, default=20)
    parser.add_argument("--out", type=pathlib.Path, default=None, help="write the JSON result here too")
    args = parser.parse_args()

    af3_dir = args.af3_dir.expanduser().resolve()
    work = pathlib.Path(tempfile.mkdtemp(prefix="af3-cpu-ccd-"))
    fold_input = protein_input(args.residues)
    json_path = work / "input.json"
    json_path.write_text(json.dumps(fold_input))
    blocked = work / "not-a-directory"
    blocked.write_text("")
    caches = {"whole": blocked, "first": work / "xdg", "indexed": work / "xdg"}
    overrides = json.dumps({"heads.diffusion.eval.steps": args.diffusion_steps})
    runs = {}
    for way in WAYS:
        cmd = [sys.executable, "-c", LAUNCHER, overrides, "", "module:af3_cpu_patch",
               *predict_args(json_path, args.model_dir, work / way, af3_dir), "--no-cache", "--quiet",
               "--num-recycles", "1", "--num-diffusion-samples", str(args.num_diffusion_samples)]  # fmt: skip
        env = {**run_env(af3_dir), "XDG_CACHE_HOME": str(caches[way])}
        print(f"[{way}] ...", flush=True)
        runs[way] = run_measured(cmd, env, work / f"{way}.log")
        log = pathlib.Path(runs[way]["log"]).read_text(errors="replace")
        runs[way]["loaded_whole_ccd"] = "AF3 loads its whole CCD instead" in log
        print(json.dumps(runs[way]), flush=True)
    whole, indexed = runs["whole"], runs["indexed"]
    result = {
        "meta": {"cpu": cpu_info.summary(), "af3_dir": str(af3_dir), "residues": args.residues,
                 "samples": args.num_diffusion_samples, "diffusion_steps": args.diffusion_steps},  # fmt: skip
        "runs": runs,
        "whole_over_indexed": {k: round(whole[k] / indexed[k], 2) for k in ("wall_s", "peak_rss_gb")},
        "whole_minus_indexed": {k: round(whole[k] - indexed[k], 2) for k in ("wall_s", "peak_rss_gb")},
    }
    print_and_save(result, args.out)
    ok = all(r["ok"] for r in runs.values()) and whole["loaded_whole_ccd"] and not indexed["loaded_whole_ccd"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
