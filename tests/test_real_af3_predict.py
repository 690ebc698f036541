"""``af3-cpu predict`` end to end on the test bed's real AF3s, random weights, no data pipeline.

A small protein, one recycle, one sample, empty MSAs.  On every version:
finite coordinates in AF3's own mmCIF.  On v3.0.4: ``--exact`` is stock
``run_alphafold.py`` bit for bit, and today's defaults stay within the
tolerances below of it; a second run loads the compiled model from the cache.
The raw arrays of each inference are saved by ``tests/capture`` (a
``run_alphafold`` import hook that changes nothing AF3 computes).
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from tests import real_af3
from tests.conftest import record_measurement

BUCKET = "32"
STEPS = real_af3.TEST_STEPS  # stock and --exact runs get the same (AF3_CPU_TEST_MODEL, real_af3.AF3.env)

# Today's defaults vs --exact (= stock), real AF3 v3.0.4, filled random weights,
# the 31-residue test protein at bucket 32, 1 recycle, 1 sample, 20 steps.
# Measured on an AMD EPYC (AVX2, FMA; the trunk runs in f32 there, stock: bf16),
# jax 0.10.2: coordinates RMSD 0.0041 A (261 atoms of the mmCIF), pLDDT max 0.39,
# PAE max 0.022.  The tolerances leave room for other CPUs' rounding.
DEFAULTS_RMSD_A = 0.02
DEFAULTS_PLDDT = 1.5
DEFAULTS_PAE = 0.1


def mmcif_coordinates(path) -> np.ndarray:
    """Cartn_x/y/z of the _atom_site loop of an mmCIF file."""
    columns, rows = [], []
    for line in path.read_text().splitlines():
        if line.startswith("_atom_site."):
            columns.append(line.split(".", 1)[1].strip())
        elif line.startswith(("ATOM", "HETATM")):
            rows.append(line.split())
    ix = [columns.index(c) for c in ("Cartn_x", "Cartn_y", "Cartn_z")]
    return np.array([[float(r[i]) for i in ix] for r in rows])


def _flags(input_json, model_dir, out) -> list[str]:
    return [f"--json_path={input_json}", f"--model_dir={model_dir}", f"--output_dir={out}", "--run_data_pipeline=false",
            "--num_recycles=1", "--num_diffusion_samples=1", f"--buckets={BUCKET}"]


def predict(af3, input_json, model_dir, out, *options, capture=None, env=None, timeout=3600):
    """``af3-cpu predict`` with this AF3 (1 recycle, 1 sample); the finished process."""
    command = af3.cli("predict", input_json, "--model-dir", model_dir, "--output-dir", out, "--no-run-data-pipeline",
                      "--num-recycles", "1", "--num-diffusion-samples", "1", "--af3-dir", af3.root, *options)
    return _run(af3, command, capture, env, timeout)


def stock(af3, input_json, model_dir, out, capture=None):
    """Stock ``run_alphafold.py`` as its ``__main__`` block runs it, with the CPU flags v3.0.4 needs."""
    argv = ["run_alphafold.py", *_flags(input_json, model_dir, out), "--jax_backend=cpu",
            "--flash_attention_implementation=xla", f"--jax_compilation_cache_dir={real_af3.compilation_cache()}"]
    code = (f"import sys; sys.argv = {argv!r}; sys.path.insert(0, {str(af3.root)!r}); import run_alphafold; "
            "from absl import app, flags; flags.mark_flags_as_required(['output_dir']); app.run(run_alphafold.main)")
    env = {"PYTHONPATH": f"{real_af3.CAPTURE}:{af3.root / 'src'}"}  # AF3 and the test hooks, no plugin
    return _run(af3, [af3.python, "-c", code], capture, env, 3600)


def _run(af3, command, capture, env, timeout):
    full_env = af3.env(**(env or {}))
    if capture is not None:
        full_env["AF3_CPU_CAPTURE"] = str(capture)
    proc = subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def captured(folder) -> dict:
    files = sorted(folder.glob("inference-*.npz"))
    assert len(files) == 1, files
    return dict(np.load(files[0]))


# The one line of AF3's mmCIF that differs between two runs of the same model: when it was written.
WRITTEN_AT = re.compile(rb"(_ma_model_list.model_group_name .*) @ [0-9: -]+\)")


def job_outputs(out, name="small_protein") -> dict:
    """What AF3 wrote that carries numbers: the top model's mmCIF (less its time stamp), confidences, ranking."""
    job = out / name
    files = {f: (job / f).read_bytes() for f in (f"{name}_model.cif", f"{name}_confidences.json",
                                                 f"{name}_summary_confidences.json", f"{name}_ranking_scores.csv")}
    files[f"{name}_model.cif"], stamps = WRITTEN_AT.subn(rb"\1)", files[f"{name}_model.cif"])
    assert stamps == 1
    return files


# v3.0.0 cannot featurise any input with the test bed's CCD (made from biotite's, without the SMILES
# descriptors v3.0.0 reads unconditionally): it is imported, patched and traced by the other tests.
@pytest.mark.parametrize("af3", ["3.0.1", "3.0.3", "main"], indirect=True)  # v3.0.4: the --exact test
def test_predict_writes_a_finite_structure(af3, model_dir, protein_json, tmp_path):
    out = tmp_path / "out"
    proc = predict(af3, protein_json, model_dir, out, "--buckets", BUCKET, "--cache-dir", real_af3.compilation_cache())
    job = out / "small_protein"
    coords = mmcif_coordinates(job / "small_protein_model.cif")
    assert coords.shape[0] > 200 and np.isfinite(coords).all()
    assert any((job / f).is_file() for f in ("small_protein_ranking_scores.csv", "ranking_scores.csv"))  # v3.0.1: no prefix
    assert f"recycle 2/2 | diffusion {STEPS}/{STEPS}" in proc.stderr, proc.stderr[-2000:]  # live progress
    assert af3.info.label in proc.stdout, proc.stdout  # as users should read it ("3.0.4 + later commits" on main)
    assert not list(tmp_path.glob(".out.af3-cpu-partial-*"))


def test_exact_is_stock_bit_for_bit_and_defaults_are_close(af3, filled_model_dir, protein_json, tmp_path):
    runs = {}
    stock(af3, protein_json, filled_model_dir, tmp_path / "stock", capture=tmp_path / "capture-stock")
    runs["stock"] = captured(tmp_path / "capture-stock")
    for name, options in (("exact", ("--exact",)), ("defaults", ())):
        predict(af3, protein_json, filled_model_dir, tmp_path / name, "--buckets", BUCKET, "--cache-dir",
                real_af3.compilation_cache(), *options, capture=tmp_path / f"capture-{name}")
        runs[name] = captured(tmp_path / f"capture-{name}")
    assert np.isfinite(runs["stock"]["positions"]).all()
    for key in ("positions", "plddt", "pae"):
        assert runs["exact"][key].tobytes() == runs["stock"][key].tobytes(), key
    assert job_outputs(tmp_path / "exact") == job_outputs(tmp_path / "stock")

    ours, exact = runs["defaults"], runs["exact"]
    mask = exact["atom_mask"][None]  # the real atoms, in every sample
    assert mask.sum() > 200
    rmsd = float(np.sqrt(np.mean(np.sum((ours["positions"][mask] - exact["positions"][mask]) ** 2, axis=-1))))
    plddt = float(np.nanmax(np.abs(ours["plddt"] - exact["plddt"])))
    pae = float(np.nanmax(np.abs(ours["pae"] - exact["pae"])))
    record_measurement("defaults vs --exact (v3.0.4, filled weights, 31 residues, bucket 32)",
                       f"coordinates RMSD {rmsd:.5f} A, pLDDT max {plddt:.4f}, PAE max {pae:.4f}")
    assert rmsd < DEFAULTS_RMSD_A and plddt < DEFAULTS_PLDDT and pae < DEFAULTS_PAE


def test_second_run_loads_the_compiled_model(af3, model_dir, protein_json, tmp_path):
    hits = {}
    for run in ("first", "second"):
        proc = predict(af3, protein_json, model_dir, tmp_path / run, "--buckets", BUCKET, "--quiet",
                       "--cache-dir", tmp_path / "cache", env={"JAX_LOG_COMPILES": "1"})
        found = re.findall(r"Persistent compilation cache hit for '(\S+)'", proc.stderr)
        hits[run] = [h for h in found if "apply" in h or "forward" in h]
    assert hits["first"] == [], "the first run had nothing to load"
    assert hits["second"], "the second run compiled AF3's model again instead of loading it from the cache"
    assert job_outputs(tmp_path / "first") == job_outputs(tmp_path / "second")
