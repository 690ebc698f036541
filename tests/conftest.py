"""Fixtures for the tests that need a real DeepMind AF3 (they skip without one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests import real_af3
from tests.real_af3 import subprocess_env


@pytest.fixture(scope="session")
def af3():
    path, info = real_af3.find_af3()
    root = real_af3.checkout_root(info)
    if root is None:
        pytest.skip(f"run_alphafold.py not found for {info.package_dir}: set AF3_SOURCE to the checkout")
    if info.version == "3.0.0" or not (info.package_dir / "model" / "model.py").is_file():
        pytest.skip("end-to-end tests need AF3 v3.0.1 or later")
    return path, info, root


def _random_weights(af3, tmp_path_factory, *options) -> str:
    path, _, root = af3
    out = tmp_path_factory.mktemp("random_weights") / "w"
    proc = subprocess.run(
        [sys.executable, "-m", "af3_cpu_patch", "random-weights", str(out), "--af3-dir", str(root), *options],
        capture_output=True, text=True, env=subprocess_env(path), timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return str(out)


@pytest.fixture(scope="session")
def model_dir(af3, tmp_path_factory):
    return os.environ.get("AF3_MODEL_DIR") or _random_weights(af3, tmp_path_factory)


@pytest.fixture(scope="session")
def filled_model_dir(af3, tmp_path_factory):
    """Random weights in which every layer counts (AF3 zero-initialises its output projections and gates)."""
    return os.environ.get("AF3_FILLED_MODEL_DIR") or _random_weights(af3, tmp_path_factory, "--fill-zero-init")


@pytest.fixture(scope="session")
def protein_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "small_protein.json"
    path.write_text(json.dumps(real_af3.PROTEIN))
    return path


