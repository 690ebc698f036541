"""``af3-cpu batch`` against a real DeepMind AF3 with random weights (skipped without one).

Three small proteins of one bucket on a local Dask cluster (one worker, so
one model load and one compiled program serve all three), one recycle and one
sample each; then the same batch again, which must find everything done and
do no work.  The test bed's compilation cache keeps a warm run short.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess

import numpy as np
import pytest

from tests import real_af3
from tests.test_real_af3_predict import mmcif_coordinates

pytestmark = pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="needs the [dask] extra (distributed)")


def test_batch_of_three_on_a_local_cluster_then_nothing_to_do(af3, model_dir, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for index, length in enumerate((10, 12, 14)):  # one bucket (16): the model compiles once
        fold_input = real_af3.protein_of_length(length, f"protein_{index}")
        (inputs / f"protein_{index}.json").write_text(json.dumps(fold_input))
    out = tmp_path / "out"
    command = af3.cli("batch", inputs, "--output-dir", out, "--model-dir", model_dir, "--af3-dir", af3.root,
                      "--no-run-data-pipeline", "--workers", "1", "--num-recycles", "1", "--num-diffusion-samples", "1",
                      "--cache-dir", real_af3.compilation_cache())
    proc = subprocess.run(command, capture_output=True, text=True, env=af3.env(), timeout=5400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    markers = []
    for index in range(3):
        job = out / f"protein_{index}"
        coords = mmcif_coordinates(job / f"protein_{index}_model.cif")
        assert coords.shape[0] > 50 and np.isfinite(coords).all()
        markers.append(json.loads((job / "seed-1" / "af3_cpu_task.json").read_text()))
        assert (job / f"protein_{index}_ranking_scores.csv").is_file()
    assert {m["models_built_in_process"] for m in markers} == {1}, "the worker built its model more than once"
    assert len({m["pid"] for m in markers}) == 1

    again = subprocess.run(command, capture_output=True, text=True, env=af3.env(), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((out / "batch_summary.json").read_text())
    assert summary["counts"]["skipped_done_before"] == 3 and summary["counts"]["done"] == 0
    assert "nothing left to do" in summary["engine"]
