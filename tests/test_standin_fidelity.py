"""Fidelity of the CPU defaults on the stand-in AF3, through ``af3-cpu predict`` (runs in CI).

The same checks as ``test_real_af3_fidelity`` with the same tolerances: the
real tokens' trunk embeddings at the CPU bucket vs AF3's stock 256 bucket,
and with an f32 vs a bf16 trunk.  The stand-in's trunk pads to the bucket it
is given and computes in the precision its model config says, so this checks
that ``predict``'s bucket and precision settings reach the model, and that
neither moves the embeddings beyond the tolerances.  Its diffusion head ends in
a default-precision ``hm.Linear`` product, so ``--diffusion-precision`` reaches
its coordinates the way it reaches AF3's.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_cli import run_cli, workdir  # noqa: F401 - fixture
from tests.helpers import STANDIN_CHECKOUT
from tests.test_real_af3_fidelity import PADDING_TOLERANCE, PRECISION_TOLERANCE, _relative_rms


def _predict(workdir, tag, *options):  # noqa: F811 - fixture
    """``af3-cpu predict`` of the tiny input, one sample, on the stand-in; (its stdout, its output folder)."""
    out = workdir / tag
    proc = run_cli(["predict", workdir / "in.json", "--model-dir", workdir / "weights", "--output-dir", out,
                    "--no-run-data-pipeline", "--num-diffusion-samples", "1", "--af3-dir", STANDIN_CHECKOUT, *options])
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, out


def _embeddings(workdir, tag, *options):  # noqa: F811 - fixture
    _, out = _predict(workdir, tag, "--quiet", *options, "--", "--save_embeddings=true")
    settings = json.loads((out / "tiny" / "standin_settings.json").read_text())
    arrays = np.load(out / "tiny" / "seed-1_embeddings" / "tiny_seed-1_embeddings.npz")
    return settings, arrays["single_embeddings"], arrays["pair_embeddings"]


@pytest.fixture
def default_run(workdir):  # noqa: F811 - fixture
    return _embeddings(workdir, "default")


def test_cpu_bucket_matches_stock_bucket(workdir, default_run):  # noqa: F811 - fixture
    settings, *small = default_run
    stock_settings, *stock = _embeddings(workdir, "stock", "--buckets", "stock")
    assert settings["buckets"][0] == "16" and stock_settings["buckets"] == ["256"]
    for name, a, b in zip(("single", "pair"), small, stock):
        assert a.shape == b.shape and np.isfinite(a).all()
        assert _relative_rms(a, b) < PADDING_TOLERANCE, name


def test_f32_trunk_matches_bf16_trunk(workdir):  # noqa: F811 - fixture
    bf16_settings, *bf16 = _embeddings(workdir, "bf16", "--precision", "bf16")
    f32_settings, *f32 = _embeddings(workdir, "f32", "--precision", "f32")
    assert (bf16_settings["bfloat16"], f32_settings["bfloat16"]) == ("all", "none")
    for name, a, b in zip(("single", "pair"), f32, bf16):
        assert a.tobytes() != b.tobytes(), f"{name}: the precision setting did not reach the trunk"
        assert _relative_rms(a, b) < PRECISION_TOLERANCE, name


def _positions(workdir, tag, *options):  # noqa: F811 - fixture
    log, out = _predict(workdir, tag, *options)
    return log, np.loadtxt(out / "tiny" / "seed-1_sample-0" / "tiny_model.xyz")


def test_bf16_diffusion_products_stay_close_to_f32(workdir):  # noqa: F811 - fixture
    from af3_cpu_patch.host import cpu_info

    f32_log, f32 = _positions(workdir, "f32", "--diffusion-precision", "f32")
    bf16_log, bf16 = _positions(workdir, "bf16", "--diffusion-precision", "bf16")
    auto_log, auto = _positions(workdir, "auto")
    assert "diffusion products f32" in f32_log and "diffusion products bf16 pass" in bf16_log
    assert np.isfinite(bf16).all() and bf16.tobytes() != f32.tobytes(), "the setting did not reach the product"
    # The stand-in's sampler is not a trained denoiser, so its coordinates have no
    # Angstrom scale: compared relative to their size, at bf16's own resolution.
    error = _relative_rms(bf16, f32)
    print(f"stand-in coordinates, bf16 pass vs f32: relative RMS {error:.2e}")
    assert error < 2.0**-8, error
    assert auto.tobytes() == (bf16 if cpu_info.native_bf16() else f32).tobytes()
