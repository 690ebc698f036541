"""The lazy CCD against a real AF3 (skipped without one).

Every component read through the index equals AF3's own, in the same order;
a prediction with a ligand, an ion and a modified residue is bit-identical
with and without it; and ``af3-cpu predict`` finishes such an input (AF3
leaves an ion's intra-chain PAE summary NaN by design).
"""

from __future__ import annotations

import copy
import json
import subprocess

import numpy as np
import pytest

from tests import real_af3
from tests.helpers import run_python

COMPARE = """
import json, sys
import af3_cpu_patch
from af3_cpu_patch.patches import lazy_ccd
from af3_cpu_patch.patches import CLI_PATCHES
af3_cpu_patch.install(CLI_PATCHES)
from alphafold3.constants import chemical_components as cc
lazy = cc.Ccd()._dict
report = {r.patch: str(r.status) for r in af3_cpu_patch.report() if "ccd" in r.patch}
af3_cpu_patch.uninstall()
stock = cc.Ccd()._dict
keys = list(lazy)
different = []
for start in range(0, len(keys), 5000):  # a fresh reader per chunk: never two whole CCDs in memory
    fresh = lazy_ccd.LazyCcd(lazy._index)
    different += [k for k in keys[start:start + 5000] if fresh[k] != stock[k]]
print(json.dumps({"report": report, "lazy": type(lazy).__name__, "stock": type(stock).__name__,
                  "count": len(keys), "same_order": keys == list(stock), "different": different[:10]}))
"""


def test_every_component_equals_af3s_own(af3, tmp_path):
    result = run_python(COMPARE, pythonpath=af3.path, python=af3.python, env={"XDG_CACHE_HOME": str(tmp_path)}, timeout=1800)
    patch = "lazy-ccd" if af3.info.version not in ("3.0.0", "3.0.1") else "lazy-ccd-per-instance"
    assert result["report"][patch] == "applied", result["report"]
    assert (result["lazy"], result["stock"]) == ("LazyCcd", "dict")
    assert result["count"] > 40000 and result["same_order"]
    assert result["different"] == []


def ion_complex(name: str) -> dict:
    fold_input = copy.deepcopy(real_af3.protein_of_length(24, name))
    fold_input["sequences"][0]["protein"]["modifications"] = [{"ptmType": "SEP", "ptmPosition": 13}]
    fold_input["sequences"] += [{"ligand": {"id": "B", "ccdCodes": ["ATP"]}}, {"ligand": {"id": "C", "ccdCodes": ["MG"]}}]
    return fold_input


def test_forward_pass_is_bit_identical_with_the_lazy_ccd(af3, model_dir, tmp_path):
    input_json = tmp_path / "in.json"
    input_json.write_text(json.dumps(ion_complex("ion_complex")))
    runs = {}
    for name, without in (("lazy", ""), ("whole", "lazy-ccd,lazy-ccd-per-instance")):
        error, arrays, report = real_af3.forward(
            af3, model_dir, input_json, tmp_path / f"{name}.npz", "patched", with_report=True,
            bucket=64, steps=1, without=without, xdg_cache_home=tmp_path / "cache",  # the CCD feeds featurisation: one step shows it
        )
        assert error is None, error
        runs[name] = (arrays, report)
    assert "applied" in {runs["lazy"][1].get("lazy-ccd"), runs["lazy"][1].get("lazy-ccd-per-instance")}
    assert "lazy-ccd" not in runs["whole"][1]
    for key in ("positions", "pae", "plddt"):
        assert runs["lazy"][0][key].tobytes() == runs["whole"][0][key].tobytes(), key


def test_predict_finishes_a_complex_with_a_metal_ion(af3, model_dir, tmp_path):
    input_json = tmp_path / "ion.json"
    input_json.write_text(json.dumps(ion_complex("ion_complex")))
    proc = subprocess.run(
        af3.cli("predict", input_json, "--model-dir", model_dir, "--output-dir", tmp_path / "out", "--no-run-data-pipeline",
                "--num-recycles", "1", "--num-diffusion-samples", "1", "--af3-dir", af3.root, "--quiet",
                "--cache-dir", real_af3.compilation_cache()),
        capture_output=True, text=True, env=af3.env(XDG_CACHE_HOME=tmp_path / "cache"), timeout=3600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = tmp_path / "out" / "ion_complex"
    summary = json.loads((job / "ion_complex_summary_confidences.json").read_text())
    assert len(summary["chain_ptm"]) == 3 and np.isfinite(summary["ptm"])
    assert (job / "ion_complex_model.cif").is_file()
    if not list((tmp_path / "cache" / "af3-cpu" / "ccd").glob("*.sqlite")):
        pytest.fail("predict did not read the CCD through its index")
